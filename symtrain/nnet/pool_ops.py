"""``Pool`` and its gradient Ops over the last two axes of a 4-d tensor, Theano's semantics.

``Pool`` (max, sum, average_inc_pad, average_exc_pad), ``MaxPoolGrad`` (x, maxout, gz),
``AveragePoolGrad`` (x, gz; sum and both averages) and ``MaxPoolGradGrad`` (x, maxout, ggx), the
transpose of ``MaxPoolGrad`` in its last argument. Each gradient Op's gradient is expressed with the
others, so second derivatives work. ``perform`` is NumPy (strided views of a canvas that holds every
window); ``symtrain.nnet.numba_kernels`` registers loop kernels for PyTensor's Numba backend.

Windows follow Theano: a window starting at ``i * stride`` on the padded axis ends at
``min(start + ws, size + 2 * pad)``; padding never wins a max, 'average_inc_pad' divides by that
clipped window size, 'average_exc_pad' by the number of real input elements in it. Ties of a max all
receive the gradient, as in Theano's ``MaxPoolGrad``.
"""

from __future__ import annotations

import numpy as np

from symtrain.backend import pt
from symtrain.nnet._graph_ops import Apply, DiffOp, common_float, like, static, tensor_type

__all__ = ["Pool", "MaxPoolGrad", "AveragePoolGrad", "MaxPoolGradGrad", "pool_len", "POOL_MODES"]

POOL_MODES = ("max", "sum", "average_inc_pad", "average_exc_pad")


def pool_len(size, ws: int, stride: int, pad: int, ignore_border: bool):
    """Theano's ``Pool.out_shape`` for one axis (``size`` may be symbolic)."""
    size = size + 2 * pad
    symbolic = not isinstance(size, int | np.integer)
    if ignore_border:
        out = (size - ws) // stride + 1
        return pt.maximum(out, 0) if symbolic else max(int(out), 0)
    if stride >= ws:
        return (size - 1) // stride + 1
    out = (size - 1 - ws + stride) // stride
    return (pt.maximum(out, 0) if symbolic else max(int(out), 0)) + 1


def window_counts(n_out: int, size: int, ws: int, stride: int, pad: int, include_pad: bool) -> np.ndarray:
    """How many elements each window averages over along one axis (windows clipped at the edge)."""
    starts = np.arange(n_out) * stride
    ends = np.minimum(starts + ws, size + 2 * pad)
    if not include_pad:
        starts, ends = np.maximum(starts, pad), np.minimum(ends, size + pad)
    return ends - starts


class _PoolBase(DiffOp):
    """Props, shapes and the NumPy window machinery common to the pooling Ops."""

    __props__ = ("ws", "stride", "pad", "ignore_border", "mode")

    def __init__(self, ws=(2, 2), stride=None, pad=(0, 0), ignore_border: bool = False, mode: str = "max"):
        if mode not in POOL_MODES:
            raise ValueError(f"{type(self).__name__}: mode must be one of {POOL_MODES}, got {mode!r}")
        self.ws = (int(ws[0]), int(ws[1]))
        self.stride = self.ws if stride is None else (int(stride[0]), int(stride[1]))
        self.pad = (int(pad[0]), int(pad[1]))
        self.ignore_border = bool(ignore_border)
        self.mode = mode

    def _out(self, rows, cols):
        """Output (rows, cols) for sizes that may be symbolic or None."""
        return tuple(
            None
            if size is None
            else pool_len(size, self.ws[i], self.stride[i], self.pad[i], self.ignore_border)
            for i, size in enumerate((rows, cols))
        )

    def _pool_type(self, x, dtype: str):
        b, c, r, k = static(x)
        return tensor_type(dtype, (b, c, *self._out(r, k)))

    def _twin(self, cls, mode: str | None = None):
        return cls(self.ws, self.stride, self.pad, self.ignore_border, mode or self.mode)

    # ----- NumPy implementation: a canvas holding every window, one strided view per window offset
    def _canvas(self, x, fill):
        rows, cols = x.shape[-2:]
        out = self._out(rows, cols)
        size = [
            max((out[i] - 1) * self.stride[i] + self.ws[i], x.shape[2 + i] + 2 * self.pad[i])
            for i in range(2)
        ]
        canvas = np.full(x.shape[:2] + tuple(size), fill, dtype=x.dtype)
        canvas[self._inner(rows, cols)] = x
        return canvas, out

    def _inner(self, rows: int, cols: int):
        p = self.pad
        return (slice(None), slice(None), slice(p[0], p[0] + rows), slice(p[1], p[1] + cols))

    def _views(self, out):
        (sr, sc), (orow, ocol) = self.stride, out
        for a in range(self.ws[0]):
            for b in range(self.ws[1]):
                yield (
                    slice(None),
                    slice(None),
                    slice(a, a + (orow - 1) * sr + 1, sr),
                    slice(b, b + (ocol - 1) * sc + 1, sc),
                )

    def _divisor(self, rows: int, cols: int, out, dtype) -> np.ndarray:
        include = self.mode == "average_inc_pad"
        r = window_counts(out[0], rows, self.ws[0], self.stride[0], self.pad[0], include)
        c = window_counts(out[1], cols, self.ws[1], self.stride[1], self.pad[1], include)
        return (r[:, None] * c[None, :]).astype(dtype)


def _input(x, name: str):
    x = pt.as_tensor_variable(x)
    if x.ndim != 4:
        raise TypeError(f"{name}: the input must be 4-d (pool_2d reshapes other ranks), got {x.ndim}-d")
    return x


class Pool(_PoolBase):
    """Pool the last two axes of a 4-d tensor: one Op instead of stacked strided views and reductions."""

    def make_node(self, x):
        x = _input(x, "Pool")
        if self.mode != "max" and not x.dtype.startswith("float"):
            # Sums overflow and averages truncate in an integer output: compute in floats instead
            x = pt.cast(x, common_float(x))
        return Apply(self, [x], [self._pool_type(x, x.dtype)()])

    def perform(self, node, inputs, output_storage, params=None):
        (x,) = inputs
        fill = 0
        if self.mode == "max":  # the fill never wins a max; -inf has no integer value
            fill = np.iinfo(x.dtype).min if np.issubdtype(x.dtype, np.integer) else -np.inf
        canvas, out = self._canvas(x, fill)
        result = np.zeros(x.shape[:2] + tuple(out), dtype=x.dtype)
        if 0 not in out:
            views = [canvas[v] for v in self._views(out)]
            result = np.max(views, axis=0) if self.mode == "max" else np.sum(views, axis=0, dtype=x.dtype)
            if self.mode.startswith("average"):
                result = result / self._divisor(x.shape[2], x.shape[3], out, x.dtype)
        output_storage[0][0] = np.ascontiguousarray(result, dtype=x.dtype)

    def infer_shape(self, fgraph, node, shapes):
        (b, c, r, k) = shapes[0]
        return [(b, c, *self._out(r, k))]

    def vjp(self, inputs, outputs, output_grads):
        (x,) = inputs
        (gz,) = output_grads
        if self.mode == "max":
            return [like(self._twin(MaxPoolGrad)(x, self(x) if outputs is None else outputs[0], gz), x)]
        return [like(self._twin(AveragePoolGrad)(x, gz), x)]


class MaxPoolGrad(_PoolBase):
    """d cost / d x of a max pool: ``gz`` goes to every element equal to its window's max."""

    def __init__(self, ws=(2, 2), stride=None, pad=(0, 0), ignore_border: bool = False, mode: str = "max"):
        super().__init__(ws, stride, pad, ignore_border, "max")

    def make_node(self, x, maxout, gz):
        x, maxout, gz = _input(x, "MaxPoolGrad"), pt.as_tensor_variable(maxout), pt.as_tensor_variable(gz)
        dtype = common_float(x, maxout, gz)
        x, maxout, gz = (pt.cast(v, dtype) for v in (x, maxout, gz))
        return Apply(self, [x, maxout, gz], [tensor_type(dtype, static(x))()])

    def perform(self, node, inputs, output_storage, params=None):
        x, maxout, gz = inputs
        canvas, out = self._canvas(x, -np.inf)
        grads = np.zeros_like(canvas)
        if 0 not in out:
            for v in self._views(out):
                grads[v] += (canvas[v] == maxout) * gz
        output_storage[0][0] = np.ascontiguousarray(grads[self._inner(*x.shape[2:])])

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0]]

    def vjp(self, inputs, outputs, output_grads):
        x, maxout, _ = inputs
        (ggx,) = output_grads
        return [
            pt.zeros_like(x),
            pt.zeros_like(maxout),
            like(self._twin(MaxPoolGradGrad)(x, maxout, ggx), maxout),
        ]


class MaxPoolGradGrad(_PoolBase):
    """The transpose of ``MaxPoolGrad`` in ``gz``: sums ``ggx`` over each window's max elements."""

    def __init__(self, ws=(2, 2), stride=None, pad=(0, 0), ignore_border: bool = False, mode: str = "max"):
        super().__init__(ws, stride, pad, ignore_border, "max")

    def make_node(self, x, maxout, ggx):
        x, maxout, ggx = (
            _input(x, "MaxPoolGradGrad"),
            pt.as_tensor_variable(maxout),
            pt.as_tensor_variable(ggx),
        )
        dtype = common_float(x, maxout, ggx)
        x, maxout, ggx = (pt.cast(v, dtype) for v in (x, maxout, ggx))
        return Apply(self, [x, maxout, ggx], [self._pool_type(x, dtype)()])

    def perform(self, node, inputs, output_storage, params=None):
        x, maxout, ggx = inputs
        canvas, out = self._canvas(x, -np.inf)
        values, _ = self._canvas(ggx, 0)
        result = np.zeros(x.shape[:2] + tuple(out), dtype=x.dtype)
        if 0 not in out:
            for v in self._views(out):
                result += (canvas[v] == maxout) * values[v]
        output_storage[0][0] = result

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1]]

    def vjp(self, inputs, outputs, output_grads):
        x, maxout, _ = inputs
        (g,) = output_grads
        return [pt.zeros_like(x), pt.zeros_like(maxout), like(self._twin(MaxPoolGrad)(x, maxout, g), x)]


class AveragePoolGrad(_PoolBase):
    """d cost / d x of a sum or average pool (``x`` gives the shape only): spreads ``gz`` over windows."""

    def __init__(self, ws=(2, 2), stride=None, pad=(0, 0), ignore_border: bool = False, mode: str = "sum"):
        if mode == "max":
            raise ValueError("AveragePoolGrad: mode 'max' has MaxPoolGrad")
        super().__init__(ws, stride, pad, ignore_border, mode)

    def make_node(self, x, gz):
        x, gz = _input(x, "AveragePoolGrad"), pt.as_tensor_variable(gz)
        dtype = common_float(x, gz)
        x, gz = pt.cast(x, dtype), pt.cast(gz, dtype)
        return Apply(self, [x, gz], [tensor_type(dtype, static(x))()])

    def perform(self, node, inputs, output_storage, params=None):
        x, gz = inputs
        out = self._out(*x.shape[2:])
        canvas, _ = self._canvas(np.zeros_like(x), 0)
        if 0 not in out:
            if self.mode.startswith("average"):
                gz = gz / self._divisor(x.shape[2], x.shape[3], out, x.dtype)
            for v in self._views(out):
                canvas[v] += gz
        output_storage[0][0] = np.ascontiguousarray(canvas[self._inner(*x.shape[2:])])

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0]]

    def vjp(self, inputs, outputs, output_grads):
        x, gz = inputs
        (g,) = output_grads
        return [pt.zeros_like(x), like(self._twin(Pool)(g), gz)]
