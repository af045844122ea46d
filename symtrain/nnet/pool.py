"""Theano's ``pool_2d`` / ``max_pool_2d`` over the last two axes: one ``Pool`` Op (symtrain.nnet.pool_ops)
with gradient Ops and Numba kernels; ``pool_2d_graph`` keeps the previous strided-slice implementation.

The default ``ignore_border=None`` means Theano 0.7's ``False``: a partial window at the bottom/right
edge makes an extra output row/column (ceil), and real scripts size their next layer on that.
"""

from __future__ import annotations

import numpy as np

from symtrain.backend import pt
from symtrain.errors import ConfigError
from symtrain.nnet._shapes import dim, int_pair, pad_to
from symtrain.nnet.pool_ops import POOL_MODES, Pool, pool_len

__all__ = ["pool_2d", "max_pool_2d", "pool_output_shape", "pool_2d_graph", "POOL_MODES"]


_out_len = pool_len


def pool_output_shape(input_shape, ws, ignore_border: bool | None = None, stride=None, pad=(0, 0)) -> tuple:
    """Output shape of :func:`pool_2d` for concrete shapes (``ignore_border=None`` means False)."""
    ws = int_pair(ws, "pool_2d: ws", 1)
    stride = ws if stride is None else int_pair(stride, "pool_2d: stride", 1)
    pad = int_pair(pad, "pool_2d: pad", 0)
    ib = bool(ignore_border)
    rows, cols = (_out_len(int(input_shape[-2 + i]), ws[i], stride[i], pad[i], ib) for i in range(2))
    return (*tuple(int(s) for s in input_shape[:-2]), rows, cols)


def _one_of(new, old, new_name: str, old_name: str, default=None):
    if old is not None:
        if new is not None and tuple(np.atleast_1d(new)) != tuple(np.atleast_1d(old)):
            raise ConfigError(f"pool_2d: give {new_name} or its old name {old_name}, not both")
        return old
    return default if new is None else new


def _counts(out_len, size, ws: int, stride: int, pad: int, include_pad: bool):
    """How many elements each window averages over along one axis (Theano clips windows at the edge)."""
    if isinstance(out_len, int) and isinstance(size, int):
        starts = np.arange(out_len) * stride
        ends = np.minimum(starts + ws, size + 2 * pad)
        if not include_pad:
            starts, ends = np.maximum(starts, pad), np.minimum(ends, size + pad)
        return pt.as_tensor_variable((ends - starts).astype("int64"))
    starts = pt.arange(out_len) * stride
    ends = pt.minimum(starts + ws, size + 2 * pad)
    if not include_pad:
        starts, ends = pt.maximum(starts, pad), pt.minimum(ends, size + pad)
    return ends - starts


def pool_2d(
    input,
    ws=None,
    ignore_border: bool | None = None,
    stride=None,
    pad=(0, 0),
    mode: str = "max",
    ds=None,
    st=None,
    padding=None,
):
    """Pool over the last two axes of ``input`` (any ndim >= 2), Theano's semantics.

    ``ws`` window (old name ``ds``), ``stride`` (old ``st``; default ``ws``), ``pad`` (old ``padding``):
    margins added on both sides, which need ``ignore_border=True`` and ``pad < ws``, as in Theano.
    ``ignore_border=None`` means False, Theano 0.7's default: partial edge windows are kept (ceil).
    ``mode``: 'max' (padding never wins), 'sum', 'average_inc_pad' (divide by the window size clipped
    to the padded image), 'average_exc_pad' (divide by the number of real elements in the window).
    """
    input, ws, ignore_border, stride, pad = _prepare(
        input, ws, ignore_border, stride, pad, mode, ds, st, padding
    )
    return _pool_op(input, Pool(ws, stride, pad, ignore_border, mode))


def pool_2d_graph(
    input,
    ws=None,
    ignore_border: bool | None = None,
    stride=None,
    pad=(0, 0),
    mode: str = "max",
    ds=None,
    st=None,
    padding=None,
):
    """The previous implementation of :func:`pool_2d` from strided slices and reductions (for checks)."""
    input, ws, ignore_border, stride, pad = _prepare(
        input, ws, ignore_border, stride, pad, mode, ds, st, padding
    )
    sizes = (dim(input, -2), dim(input, -1))
    outs = [_out_len(sizes[i], ws[i], stride[i], pad[i], ignore_border) for i in range(2)]
    # Canvas that holds every window: padding/extension never wins a max and adds 0 to sums.
    needed = [(outs[i] - 1) * stride[i] + ws[i] for i in range(2)]
    fill = -np.inf if mode == "max" else 0
    x = input
    if pad != (0, 0) or not ignore_border:
        padded = [sizes[i] + 2 * pad[i] for i in range(2)]
        canvas = [_larger(needed[i], padded[i]) for i in range(2)]
        x = pad_to(x, pad[0], pad[1], canvas[0], canvas[1], fill)
    lead = (slice(None),) * (input.ndim - 2)
    if ws == stride:
        # Non-overlapping windows: crop to whole windows, reshape, reduce (no copies of k*k views).
        x = x[lead + (slice(0, outs[0] * ws[0]), slice(0, outs[1] * ws[1]))]
        shape = [x.shape[i] for i in range(input.ndim - 2)] + [outs[0], ws[0], outs[1], ws[1]]
        axes = (input.ndim - 1, input.ndim + 1)
        windows = x.reshape(shape, ndim=input.ndim + 2)
    else:
        views = [
            x[
                lead
                + (
                    slice(a, a + (outs[0] - 1) * stride[0] + 1, stride[0]),
                    slice(b, b + (outs[1] - 1) * stride[1] + 1, stride[1]),
                )
            ]
            for a in range(ws[0])
            for b in range(ws[1])
        ]
        windows = pt.stack(views, axis=input.ndim)
        axes = (input.ndim,)
    if mode == "max":
        return pt.max(windows, axis=axes)
    total = pt.sum(windows, axis=axes)
    if mode == "sum":
        return total
    include = mode == "average_inc_pad"
    rows = _counts(outs[0], sizes[0], ws[0], stride[0], pad[0], include)
    cols = _counts(outs[1], sizes[1], ws[1], stride[1], pad[1], include)
    return total / pt.cast(rows.dimshuffle(0, "x") * cols.dimshuffle("x", 0), input.dtype)


def _pool_op(input, op: Pool):
    """Apply the 4-d ``op`` to any rank >= 2: lower ranks get leading unit axes, higher ones are folded."""
    if input.ndim == 4:
        return op(input)
    if input.ndim < 4:
        out = op(pt.shape_padleft(input, 4 - input.ndim))
        return out[(0,) * (4 - input.ndim)]
    shape = input.shape
    out = op(input.reshape((-1, shape[-3], shape[-2], shape[-1]), ndim=4))
    return out.reshape(
        tuple(shape[i] for i in range(input.ndim - 2)) + (out.shape[2], out.shape[3]), ndim=input.ndim
    )


def _prepare(input, ws, ignore_border, stride, pad, mode, ds, st, padding):
    """Check and normalise the arguments shared by both implementations (Theano's rules)."""
    input = pt.as_tensor_variable(input)
    if input.ndim < 2:
        raise ConfigError(f"pool_2d: input must have at least 2 dimensions, got {input.ndim}")
    ws = _one_of(ws, ds, "ws", "ds")
    if ws is None:
        raise ConfigError("pool_2d: the window size ws (or its old name ds) is required")
    ws = int_pair(ws, "pool_2d: ws", 1)
    stride = _one_of(stride, st, "stride", "st")
    stride = ws if stride is None else int_pair(stride, "pool_2d: stride", 1)
    pad = int_pair(
        _one_of(None if pad in (None, (0, 0), 0) else pad, padding, "pad", "padding", (0, 0)),
        "pool_2d: pad",
        0,
    )
    if mode not in POOL_MODES:
        raise ConfigError(f"pool_2d: mode must be one of {', '.join(POOL_MODES)}, got {mode!r}")
    ignore_border = False if ignore_border is None else bool(ignore_border)
    if pad != (0, 0):
        if not ignore_border:
            raise ConfigError("pool_2d: pad needs ignore_border=True (as in Theano)")
        if pad[0] >= ws[0] or pad[1] >= ws[1]:
            raise ConfigError(f"pool_2d: pad {pad} must be smaller than the window ws {ws}")
    return input, ws, ignore_border, stride, pad


def _larger(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return pt.maximum(a, b)


def max_pool_2d(input, ds, ignore_border: bool | None = None, st=None, padding=(0, 0), mode: str = "max"):
    """Theano 0.7's ``downsample.max_pool_2d``: :func:`pool_2d` with the old argument names.

    ``ignore_border=None`` means False (ceil: partial edge windows kept), Theano 0.7's default.
    """
    return pool_2d(input, ws=ds, ignore_border=ignore_border, stride=st, pad=padding, mode=mode)
