"""Theano's NN-style ``conv2d`` on (batch, channels, rows, cols) images and (filters, channels, k, k)
kernels: one ``Conv2d`` Op (symtrain.nnet.conv_ops) with gradient Ops and a Numba im2col + GEMM kernel.
``conv2d_graph`` keeps the previous graph-only implementation (strided slices + one dot) for checks."""

from __future__ import annotations

from collections.abc import Sequence

from symtrain.backend import pt
from symtrain.errors import ConfigError
from symtrain.nnet._shapes import dim, int_pair, pad_to, static_dims
from symtrain.nnet.conv_ops import Conv2d

__all__ = ["conv2d", "conv_output_shape", "conv2d_graph"]

BorderMode = str | int | tuple[int, int]


def _padding(border_mode: BorderMode, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    if isinstance(border_mode, str):
        extent = [(k - 1) * d for k, d in zip(kernel, dilation)]
        if border_mode == "valid":
            return (0, 0)
        if border_mode == "full":
            return (extent[0], extent[1])
        if border_mode == "half":  # Theano: (dilated kernel size) // 2
            return ((extent[0] + 1) // 2, (extent[1] + 1) // 2)
        raise ConfigError(
            "conv2d: border_mode must be 'valid', 'full', 'half', an int or a pair of ints, "
            f"got {border_mode!r}"
        )
    return int_pair(border_mode, "conv2d: border_mode", 0)


def _out_size(size, kernel: int, pad: int, stride: int, dilation: int):
    return (size + 2 * pad - (kernel - 1) * dilation - 1) // stride + 1


def conv_output_shape(
    input_shape: Sequence[int],
    filter_shape: Sequence[int],
    border_mode: BorderMode = "valid",
    subsample=(1, 1),
    filter_dilation=(1, 1),
) -> tuple[int, int, int, int]:
    """The output shape of :func:`conv2d` for concrete shapes (to size the next layer's weights)."""
    kernel = (int(filter_shape[2]), int(filter_shape[3]))
    dilation = int_pair(filter_dilation, "conv2d: filter_dilation", 1)
    stride = int_pair(subsample, "conv2d: subsample", 1)
    pad = _padding(border_mode, kernel, dilation)
    rows, cols = (_out_size(input_shape[2 + i], kernel[i], pad[i], stride[i], dilation[i]) for i in range(2))
    return (int(input_shape[0]), int(filter_shape[0]), rows, cols)


def conv2d(
    input,
    filters,
    input_shape=None,
    filter_shape=None,
    border_mode: BorderMode = "valid",
    subsample=(1, 1),
    filter_flip: bool = True,
    image_shape=None,
    filter_dilation=(1, 1),
    num_groups: int = 1,
):
    """2-d convolution of a batch of multi-channel images with a bank of filters, Theano's semantics.

    input: (batch, channels, rows, cols); filters: (n_filters, channels, k_rows, k_cols);
    returns (batch, n_filters, out_rows, out_cols). ``filter_flip=True`` (Theano's default) flips the
    kernels: a true convolution, as ``scipy.signal.convolve2d``; ``False`` gives cross-correlation.
    ``border_mode``: 'valid' (no padding), 'full' (pad k-1), 'half' (pad k//2), an int or (int, int)
    of zero padding. ``subsample`` is the stride. ``input_shape`` / ``image_shape`` (its old name) are
    checked for length only; ``filter_shape`` is asserted at run time. The kernel size may be known
    only at run time. Built as one ``Conv2d`` Op (im2col + GEMM in compiled code, gradient Ops).
    """
    input, filters, _, stride, dilation = _prepare(
        input, filters, input_shape, filter_shape, subsample, image_shape, filter_dilation, num_groups
    )
    return Conv2d(_border(border_mode), stride, filter_flip, dilation)(input, filters)


def conv2d_graph(
    input,
    filters,
    input_shape=None,
    filter_shape=None,
    border_mode: BorderMode = "valid",
    subsample=(1, 1),
    filter_flip: bool = True,
    image_shape=None,
    filter_dilation=(1, 1),
    num_groups: int = 1,
):
    """The previous implementation of :func:`conv2d` from graph pieces (kept to check the Ops against).

    im2col from 2k strided slices plus one dot; needs the kernel size when the graph is built.
    """
    input, filters, shape, stride, dilation = _prepare(
        input, filters, input_shape, filter_shape, subsample, image_shape, filter_dilation, num_groups
    )
    if shape[2] is None or shape[3] is None:
        raise ConfigError("conv2d: the kernel size is unknown: pass filter_shape=(n_filters, channels, k, k)")
    kernel = (shape[2], shape[3])
    pad = _padding(border_mode, kernel, dilation)

    x = input
    if pad != (0, 0):
        x = pad_to(x, pad[0], pad[1], dim(x, 2) + 2 * pad[0], dim(x, 3) + 2 * pad[1], 0)
    out_rows, out_cols = (
        _out_size(dim(input, 2 + i), kernel[i], pad[i], stride[i], dilation[i]) for i in range(2)
    )
    return _im2col_dot(x, filters, kernel, stride, dilation, out_rows, out_cols, filter_flip)


def _border(border_mode: BorderMode) -> str | tuple[int, int]:
    """Check ``border_mode`` and give it as the Op's prop: a mode name or a pair of paddings."""
    if isinstance(border_mode, str):
        if border_mode in ("valid", "full", "half"):
            return border_mode
        raise ConfigError(
            "conv2d: border_mode must be 'valid', 'full', 'half', an int or a pair of ints, "
            f"got {border_mode!r}"
        )
    return int_pair(border_mode, "conv2d: border_mode", 0)


def _prepare(input, filters, input_shape, filter_shape, subsample, image_shape, filter_dilation, num_groups):
    """Check the arguments shared by both implementations; returns the (shape-asserted) variables."""
    input = pt.as_tensor_variable(input)
    filters = pt.as_tensor_variable(filters)
    if input.ndim != 4:
        raise ConfigError(f"conv2d: input must be 4-d (batch, channels, rows, cols), got {input.ndim}-d")
    if filters.ndim != 4:
        raise ConfigError(
            f"conv2d: filters must be 4-d (filters, channels, rows, cols), got {filters.ndim}-d"
        )
    if image_shape is not None:
        if input_shape is not None:
            raise ConfigError("conv2d: give input_shape or its old name image_shape, not both")
        input_shape = image_shape
    if input_shape is not None and len(input_shape) != 4:
        raise ConfigError(f"conv2d: input_shape must have 4 entries, got {input_shape!r}")
    if num_groups != 1:
        raise ConfigError(
            f"conv2d: num_groups must be 1 (grouped convolution is not provided), got {num_groups!r}"
        )
    shape = static_dims(filters)
    if filter_shape is not None:
        if len(filter_shape) != 4:
            raise ConfigError(f"conv2d: filter_shape must have 4 entries, got {filter_shape!r}")
        for given, known in zip(filter_shape, shape):
            if given is not None and known is not None and int(given) != known:
                raise ConfigError(
                    f"conv2d: filter_shape {tuple(filter_shape)} does not match the filters {shape}"
                )
        filters = pt.specify_shape(filters, tuple(None if s is None else int(s) for s in filter_shape))
        shape = tuple(int(g) if g is not None else k for g, k in zip(filter_shape, shape))
    stride = int_pair(subsample, "conv2d: subsample", 1)
    dilation = int_pair(filter_dilation, "conv2d: filter_dilation", 1)
    return input, filters, shape, stride, dilation


def _im2col_dot(x, filters, kernel, stride, dilation, out_rows, out_cols, flip):
    """Convolve (``flip``) or correlate padded ``x`` with ``filters``: patches from strided slices, one GEMM.

    The flip reverses the order of the patch positions instead of the filters: a ``[::-1]`` view of the
    filters would make their gradient, and so the updated parameter, non-contiguous (Numba re-JITs then).
    The patches are built in two stages (k_rows row-shifted slices, then k_cols column-shifted slices
    of those): 2k slices instead of k*k keeps the graph, and Numba's cold compile, about 3x smaller.
    """
    row_views = [
        x[:, :, a * dilation[0] : a * dilation[0] + (out_rows - 1) * stride[0] + 1 : stride[0], :]
        for a in _order(kernel[0], flip)
    ]
    rows = pt.stack(row_views, axis=2)  # (batch, channels, k_rows, out_rows, padded_cols)
    col_views = [
        rows[:, :, :, :, b * dilation[1] : b * dilation[1] + (out_cols - 1) * stride[1] + 1 : stride[1]]
        for b in _order(kernel[1], flip)
    ]
    patches = pt.stack(col_views, axis=5)  # (batch, channels, k_rows, out_rows, out_cols, k_cols)
    batch, n_filters = dim(x, 0), dim(filters, 0)
    patches = patches.dimshuffle(0, 3, 4, 1, 2, 5).reshape((batch * out_rows * out_cols, -1))
    weights = filters.reshape((n_filters, -1))
    out = pt.dot(patches, weights.T)
    return out.reshape((batch, out_rows, out_cols, n_filters)).dimshuffle(0, 3, 1, 2)


def _order(k: int, flip: bool) -> range:
    return range(k - 1, -1, -1) if flip else range(k)
