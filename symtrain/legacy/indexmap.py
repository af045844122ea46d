"""Graph analysis for legacy functions: find the row slices of streamed shared variables and map them.

A Theano-style script selects its minibatch with ``buf[index*bs:(index+1)*bs]``. To stream, symtrain must
know, for every call, which rows of each streamed variable that call reads. This module finds every
``Subtensor`` whose first (row) index applies to a *row-wise* expression of streamed variables (the
variable itself, ``T.cast(var, 'int32')``, ``var * scale`` ... elementwise ops keep rows in place), proves
that its bounds are affine functions ``a*i + b`` of one scalar integer input ``i`` (or constants), and
rebuilds the slice over local bounds that the caller feeds as hidden inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from symtrain.backend import (
    Constant,
    DimShuffle,
    Elemwise,
    ScalarFromTensor,
    Subtensor,
    TensorFromScalar,
    ancestors,
    get_idx_list,
    ps,
    pt,
)
from symtrain.errors import ConfigError

_IDENTITY_OPS = (ps.Identity, ps.Cast)


@dataclass(frozen=True)
class Affine:
    """``a * value_of(input) + b`` with integer ``a`` and ``b``; ``input is None`` for a constant."""

    input: object | None
    a: int
    b: int

    def at(self, value: int) -> int:
        return self.a * value + self.b if self.input is not None else self.b


@dataclass(eq=False)
class RowSlice:
    """One row selection of a row-wise expression of streamed variables.

    ``kind`` is "slice" (``base[start:stop, ...]``) or "index" (``base[i, ...]``, one row);
    ``start``/``stop`` are Affine bounds (None for an omitted bound); ``rest`` the untouched other indices.
    """

    out: object
    base: object
    streamed: tuple
    kind: str
    start: Affine | None
    stop: Affine | None
    rest: tuple
    text: str

    def rows(self, args: dict, n_rows: int) -> tuple[int, int]:
        """The half-open range of global rows this selection reads for a call with input values ``args``."""
        if self.kind == "index":
            i = _value(self.start, args)
            j = i + n_rows if i < 0 else i
            if not 0 <= j < n_rows:
                raise IndexError(f"{self.text}: row {i} is out of bounds for a streamed variable of {n_rows} "
                                 "rows")
            return j, j + 1
        start = None if self.start is None else _value(self.start, args)
        stop = None if self.stop is None else _value(self.stop, args)
        s, e, _ = slice(start, stop).indices(n_rows)
        return s, max(s, e)


def _value(aff: Affine, args: dict) -> int:
    return aff.at(args[aff.input]) if aff.input is not None else aff.b


class NotAffine(Exception):
    """Internal: a bound that is not ``a*i + b`` (turned into a ConfigError naming the slice)."""


def _const_int(var) -> int | None:
    if isinstance(var, Constant):
        data = np.asarray(var.data)
        if data.ndim == 0 and data.dtype.kind in "iub":
            return int(data)
        if data.ndim == 0:
            raise NotAffine(f"the constant {data!r} is not an integer")
    return None


def affine_of(var, inputs: Sequence) -> Affine:
    """Prove ``var`` is ``a*i + b`` for one scalar integer ``i`` among ``inputs``; raise NotAffine if not."""
    if var is None:
        return None
    c = _const_int(var)
    if c is not None:
        return Affine(None, 0, c)
    if any(var is i for i in inputs):
        if getattr(var.type, "ndim", 0) != 0 or np.dtype(var.type.dtype).kind not in "iu":
            raise NotAffine(f"the input {var} is not a scalar integer")
        return Affine(var, 1, 0)
    node = var.owner
    if node is None:
        raise NotAffine(f"it depends on {var} ({type(var).__name__}), which is not an input of the function")
    op = node.op
    scalar_view = isinstance(op, DimShuffle) and var.type.ndim == 0  # a 0-d tensor as a scalar, or back
    if isinstance(op, ScalarFromTensor | TensorFromScalar) or scalar_view:
        return affine_of(node.inputs[0], inputs)
    scalar_op = op.scalar_op if isinstance(op, Elemwise) else op if isinstance(op, ps.ScalarOp) else None
    if scalar_op is None:
        raise NotAffine(f"it uses {op}, which is not + - * or an integer cast")
    args = [affine_of(i, inputs) for i in node.inputs]
    if isinstance(scalar_op, _IDENTITY_OPS):
        if np.dtype(var.type.dtype).kind not in "iu":
            raise NotAffine(f"it casts to {var.type.dtype}")
        return args[0]
    if isinstance(scalar_op, ps.Neg):
        return _combine([args[0]], -1)
    if isinstance(scalar_op, ps.Add):
        return _combine(args, 1)
    if isinstance(scalar_op, ps.Sub):
        return _combine([args[0], _scale(args[1], -1)], 1)
    if isinstance(scalar_op, ps.Mul):
        out = args[0]
        for arg in args[1:]:
            if out.input is None:
                out = _scale(arg, out.b)
            elif arg.input is None:
                out = _scale(out, arg.b)
            else:
                raise NotAffine("it multiplies the index by itself (not affine)")
        return out
    raise NotAffine(f"it uses {type(scalar_op).__name__}, which is not + - * or an integer cast")


def _scale(aff: Affine, k: int) -> Affine:
    return Affine(aff.input, aff.a * k, aff.b * k)


def _combine(args: list[Affine], sign: int) -> Affine:
    inputs = {id(a.input): a.input for a in args if a.input is not None}
    if len(inputs) > 1:
        raise NotAffine("it combines two different inputs")
    return Affine(next(iter(inputs.values()), None), sign * sum(a.a for a in args),
                  sign * sum(a.b for a in args))


def rowwise_streamed(var, is_streamed: Callable) -> tuple | None:
    """The streamed variables of ``var`` if ``var`` keeps their rows on axis 0 (elementwise ops, casts,
    dimshuffles keeping axis 0 first); None if it is not such an expression."""
    if is_streamed(var):
        return (var,)
    node = var.owner
    if node is None:
        return None
    op = node.op
    if isinstance(op, DimShuffle):
        order = tuple(op.new_order)
        if order and order[0] == 0:
            return rowwise_streamed(node.inputs[0], is_streamed)
        return None
    if isinstance(op, Elemwise):
        found: list = []
        for inp in node.inputs:
            sub = rowwise_streamed(inp, is_streamed)
            if sub is not None:
                found.extend(s for s in sub if all(s is not f for f in found))
            elif _has_streamed(inp, is_streamed):
                return None
        return tuple(found) or None
    return None


def _has_streamed(var, is_streamed: Callable) -> bool:
    return any(is_streamed(v) for v in ancestors([var]))


def _describe(base, streamed) -> str:
    names = ", ".join(str(v.name or "<unnamed streamed variable>") for v in streamed)
    return f"slice of {base if base.owner is not None else names}"


def find_row_slices(roots: Iterable, inputs: Sequence, is_streamed: Callable) -> tuple[list[RowSlice], list]:
    """Every row selection of streamed variables under ``roots``, and the streamed variables used whole.

    Raises ConfigError naming the slice when a bound is not affine in one scalar input, the step is not 1,
    or the row index is not a slice or a scalar.
    """
    slices: list[RowSlice] = []
    whole: list = []
    seen: set[int] = set()
    stack = [r for r in roots if r is not None]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if is_streamed(v):
            if all(v is not w for w in whole):
                whole.append(v)
            continue
        node = v.owner
        if node is None:
            continue
        if isinstance(node.op, Subtensor):
            streamed = rowwise_streamed(node.inputs[0], is_streamed)
            if streamed is not None:
                slices.append(_row_slice(v, node, streamed, inputs))
                stack.extend(node.inputs[1:])
                continue
        stack.extend(node.inputs)
    return slices, whole


def _row_slice(out, node, streamed, inputs) -> RowSlice:
    base = node.inputs[0]
    indices = tuple(get_idx_list(node.inputs, node.op.idx_list))
    first, rest = indices[0], indices[1:]
    text = _describe(base, streamed)
    try:
        if isinstance(first, slice):
            step = first.step
            if step is not None and _const_int(step) != 1:
                raise NotAffine("its step is not 1 (only contiguous row slices stream)")
            return RowSlice(out, base, streamed, "slice", affine_of(first.start, inputs),
                            affine_of(first.stop, inputs), rest, text)
        if getattr(first, "ndim", None) == 0 or isinstance(first, int | np.integer):
            idx = Affine(None, 0, int(first)) if isinstance(first,
                                                            int | np.integer) else affine_of(first, inputs)
            return RowSlice(out, base, streamed, "index", idx, None, rest, text)
        raise NotAffine("its row index is not a slice or a scalar")
    except NotAffine as exc:
        raise ConfigError(
            f"symtrain.function: cannot map the {text} to chunks: {exc}. Streamed variables can only be "
            "selected by rows with bounds a*index + b of one scalar integer input, e.g. "
            "buf[index * batch_size:(index + 1) * batch_size]") from None


def rebuild(sl: RowSlice, start, stop):
    """The same selection over local bounds: ``base[start:stop, *rest]`` (or ``base[start, *rest]``)."""
    first = start if sl.kind == "index" else slice(start, stop)
    return sl.base[(first, *sl.rest)]


def local_bound(name: str):
    """A hidden int64 scalar input for a local bound."""
    return pt.lscalar(name)
