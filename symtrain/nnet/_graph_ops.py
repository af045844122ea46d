"""What the nnet Ops need from the graph library, taken through ``symtrain.backend`` for either backend."""

from __future__ import annotations

from symtrain.backend import Apply as Apply  # re-exported for the Op modules
from symtrain.backend import Constant, Op, config, pt, upcast
from symtrain.backend import DisconnectedType as DisconnectedType  # re-exported for the Op modules


class DiffOp(Op):
    """An Op whose gradient is ``vjp``: PyTensor 3 calls ``pullback``, Aesara calls ``grad``."""

    def vjp(self, inputs, outputs, cotangents):  # pragma: no cover - every subclass defines it
        raise NotImplementedError(type(self).__name__)

    def pullback(self, inputs, outputs, cotangents):
        return self.vjp(inputs, outputs, cotangents)

    def grad(self, inputs, output_grads):
        return self.vjp(inputs, None, output_grads)


def tensor_type(dtype: str, shape: tuple[int | None, ...]):
    """A tensor type with the given static shape (None where unknown)."""
    return pt.TensorType(dtype, shape=tuple(None if s is None else int(s) for s in shape))


def static(var) -> tuple[int | None, ...]:
    """The static shape of a tensor variable (None where unknown)."""
    return tuple(None if s is None else int(s) for s in var.type.shape)


def constant_pair(var) -> tuple[int | None, int | None]:
    """The two entries of a length-2 int vector when it is a constant, else (None, None)."""
    if isinstance(var, Constant):
        a, b = (int(v) for v in var.data)
        return a, b
    return None, None


def as_pair_vector(value):
    """A length-2 int64 vector variable from a Python pair, a list of scalars or a vector."""
    if isinstance(value, tuple | list) and all(isinstance(v, int) for v in value):
        return pt.as_tensor_variable(list(value), dtype="int64")
    if isinstance(value, tuple | list):
        return pt.cast(pt.stack([pt.as_tensor_variable(v) for v in value]), "int64")
    return pt.cast(pt.as_tensor_variable(value), "int64")


def like(var, ref):
    """``var`` with ``ref``'s static shape asserted where ``var``'s type does not know it (grad types)."""
    if static(var) == static(ref) or all(s is None for s in static(ref)):
        return var
    return pt.specify_shape(var, static(ref))


def common_float(*vars_) -> str:
    """The dtype the Ops compute in: the inputs' upcast, floatX for integer inputs."""
    dtype = upcast(*[v.dtype for v in vars_])
    return dtype if dtype.startswith("float") else upcast(dtype, config.floatX)
