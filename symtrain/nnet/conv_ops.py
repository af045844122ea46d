"""``Conv2d`` and its gradient Ops ``Conv2dGradWeights`` / ``Conv2dGradInputs`` (Theano's CorrMM trio).

One compiled node per convolution instead of a graph of strided slices: the Numba implementation
(``symtrain.nnet.numba_kernels``) does im2col/col2im in loops and the matrix product through BLAS, and
``perform`` is the NumPy implementation for the Python linker, FAST_COMPILE and Aesara. Each gradient
Op's own gradient is expressed with the other two, so second derivatives work as in Theano.

Props shared by the three: ``border_mode`` ('valid', 'full', 'half' or a pair of ints; the padding is
resolved from the kernel size at run time, so kernels of unknown size work), ``subsample`` (stride),
``filter_flip`` (True: true convolution) and ``filter_dilation``.
"""

from __future__ import annotations

import numpy as np

from symtrain.backend import pt
from symtrain.nnet._graph_ops import (
    Apply,
    DiffOp,
    DisconnectedType,
    Op,
    as_pair_vector,
    common_float,
    constant_pair,
    like,
    static,
    tensor_type,
)

__all__ = ["Conv2d", "Conv2dGradWeights", "Conv2dGradInputs", "padding", "out_size"]

Border = str | tuple[int, int]


def padding(border_mode: Border, kh: int, kw: int, dilation: tuple[int, int]) -> tuple[int, int]:
    """Zero padding (rows, cols) for a border mode and a kernel size (Theano's rules)."""
    eh, ew = (kh - 1) * dilation[0], (kw - 1) * dilation[1]
    if border_mode == "valid":
        return 0, 0
    if border_mode == "full":
        return eh, ew
    if border_mode == "half":
        return (eh + 1) // 2, (ew + 1) // 2
    return int(border_mode[0]), int(border_mode[1])


def out_size(size, k, pad, stride: int, dilation: int):
    """Output length along one axis (ints or symbolic scalars)."""
    return (size + 2 * pad - (k - 1) * dilation - 1) // stride + 1


class _ConvBase(DiffOp):
    """Props, validation and shape arithmetic common to the three convolution Ops."""

    __props__ = ("border_mode", "subsample", "filter_flip", "filter_dilation")

    def __init__(
        self,
        border_mode: Border = "valid",
        subsample=(1, 1),
        filter_flip: bool = True,
        filter_dilation=(1, 1),
    ):
        if isinstance(border_mode, str):
            if border_mode not in ("valid", "full", "half"):
                raise ValueError(f"{type(self).__name__}: unknown border_mode {border_mode!r}")
        else:
            border_mode = (int(border_mode[0]), int(border_mode[1]))
        self.border_mode = border_mode
        self.subsample = (int(subsample[0]), int(subsample[1]))
        self.filter_flip = bool(filter_flip)
        self.filter_dilation = (int(filter_dilation[0]), int(filter_dilation[1]))

    def _pads(self, kh, kw):
        """Padding for kernel sizes that may be symbolic."""
        if isinstance(self.border_mode, tuple):
            return self.border_mode
        dh, dw = self.filter_dilation
        eh, ew = (kh - 1) * dh, (kw - 1) * dw
        if self.border_mode == "valid":
            return 0, 0
        if self.border_mode == "full":
            return eh, ew
        return (eh + 1) // 2, (ew + 1) // 2

    def _out(self, h, w, kh, kw):
        """Output rows and cols (None when a size is unknown)."""
        if None in (h, w, kh, kw):
            return None, None
        ph, pw = self._pads(kh, kw)
        return (
            out_size(h, kh, ph, self.subsample[0], self.filter_dilation[0]),
            out_size(w, kw, pw, self.subsample[1], self.filter_dilation[1]),
        )

    def _geometry(self, img_hw, kern_hw, out_hw=None):
        """Padding and output size for concrete shapes, with the checks that give readable errors."""
        (h, w), (kh, kw) = img_hw, kern_hw
        ph, pw = padding(self.border_mode, kh, kw, self.filter_dilation)
        oh, ow = self._out(h, w, kh, kw)
        if oh <= 0 or ow <= 0:
            raise ValueError(
                f"{type(self).__name__}: the dilated kernel {kh}x{kw} is larger than the padded "
                f"input {h + 2 * ph}x{w + 2 * pw}"
            )
        if out_hw is not None and tuple(out_hw) != (oh, ow):
            raise ValueError(
                f"{type(self).__name__}: output gradient is {tuple(out_hw)}, expected {(oh, ow)}"
            )
        return (ph, pw), (oh, ow)

    def _pad_image(self, img, ph: int, pw: int):
        return np.pad(img, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else img

    def _views(self, xp, kh: int, kw: int, oh: int, ow: int):
        """(a, b, view) for every kernel position: the strided (batch, ch, oh, ow) view of padded input."""
        (sh, sw), (dh, dw) = self.subsample, self.filter_dilation
        for a in range(kh):
            for b in range(kw):
                yield (
                    a,
                    b,
                    (
                        slice(None),
                        slice(None),
                        slice(a * dh, a * dh + (oh - 1) * sh + 1, sh),
                        slice(b * dw, b * dw + (ow - 1) * sw + 1, sw),
                    ),
                )

    def _kernel_view(self, kern):
        return kern[:, :, ::-1, ::-1] if self.filter_flip else kern

    def _twin(self, cls):
        return cls(self.border_mode, self.subsample, self.filter_flip, self.filter_dilation)


def _check_channels(op: Op, what: str, got: int, expected: int) -> None:
    if got != expected:
        raise ValueError(f"{type(op).__name__}: {what} is {got}, expected {expected} (from the filters)")


class Conv2d(_ConvBase):
    """out = conv(img (batch, ch, rows, cols), kern (filters, ch, kr, kc)): one Op, not a graph of slices."""

    def make_node(self, img, kern):
        img, kern = pt.as_tensor_variable(img), pt.as_tensor_variable(kern)
        if img.ndim != 4 or kern.ndim != 4:
            raise TypeError("Conv2d: img and kern must be 4-d tensors")
        dtype = common_float(img, kern)
        img, kern = pt.cast(img, dtype), pt.cast(kern, dtype)
        (b, _, h, w), (f, _, kh, kw) = static(img), static(kern)
        out = tensor_type(dtype, (b, f, *self._out(h, w, kh, kw)))()
        return Apply(self, [img, kern], [out])

    def perform(self, node, inputs, output_storage, params=None):
        img, kern = inputs
        _check_channels(self, "the number of input channels", img.shape[1], kern.shape[1])
        (ph, pw), (oh, ow) = self._geometry(img.shape[2:], kern.shape[2:])
        xp, k = self._pad_image(img, ph, pw), self._kernel_view(kern)
        out = np.zeros((img.shape[0], oh, ow, kern.shape[0]), dtype=node.outputs[0].dtype)
        for a, b, view in self._views(xp, kern.shape[2], kern.shape[3], oh, ow):
            out += np.tensordot(xp[view], k[:, :, a, b], axes=([1], [1]))
        output_storage[0][0] = np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def infer_shape(self, fgraph, node, shapes):
        (b, _, h, w), (f, _, kh, kw) = shapes
        ph, pw = self._pads(kh, kw)
        (sh, sw), (dh, dw) = self.subsample, self.filter_dilation
        return [(b, f, out_size(h, kh, ph, sh, dh), out_size(w, kw, pw, sw, dw))]

    def vjp(self, inputs, outputs, output_grads):
        img, kern = inputs
        (gz,) = output_grads
        d_img = self._twin(Conv2dGradInputs)(kern, gz, _spatial(img))
        d_kern = self._twin(Conv2dGradWeights)(img, gz, _spatial(kern))
        return [like(d_img, img), like(d_kern, kern)]


class Conv2dGradWeights(_ConvBase):
    """d cost / d kern from img and the output gradient; ``kshape`` = (kr, kc), ambiguous under strides."""

    def make_node(self, img, topgrad, kshape):
        img, topgrad = pt.as_tensor_variable(img), pt.as_tensor_variable(topgrad)
        dtype = common_float(img, topgrad)
        img, topgrad, kshape = pt.cast(img, dtype), pt.cast(topgrad, dtype), as_pair_vector(kshape)
        out = tensor_type(dtype, (static(topgrad)[1], static(img)[1], *constant_pair(kshape)))()
        return Apply(self, [img, topgrad, kshape], [out])

    def perform(self, node, inputs, output_storage, params=None):
        img, top, kshape = inputs
        kh, kw = int(kshape[0]), int(kshape[1])
        (ph, pw), (oh, ow) = self._geometry(img.shape[2:], (kh, kw), top.shape[2:])
        xp = self._pad_image(img, ph, pw)
        dw = np.zeros((top.shape[1], img.shape[1], kh, kw), dtype=node.outputs[0].dtype)
        for a, b, view in self._views(xp, kh, kw, oh, ow):
            dw[:, :, a, b] = np.tensordot(top, xp[view], axes=([0, 2, 3], [0, 2, 3]))
        output_storage[0][0] = np.ascontiguousarray(self._kernel_view(dw))

    def infer_shape(self, fgraph, node, shapes):
        (_, c, _, _), (_, f, _, _), _ = shapes
        kshape = node.inputs[2]
        return [(f, c, kshape[0], kshape[1])]

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def vjp(self, inputs, outputs, output_grads):
        img, top, _ = inputs
        (g,) = output_grads  # shaped like the kernel
        d_img = self._twin(Conv2dGradInputs)(g, top, _spatial(img))
        d_top = self._twin(Conv2d)(img, g)
        return [like(d_img, img), like(d_top, top), DisconnectedType()()]


class Conv2dGradInputs(_ConvBase):
    """d cost / d img from kern and the output gradient; ``ishape`` = (rows, cols) of the input."""

    def make_node(self, kern, topgrad, ishape):
        kern, topgrad = pt.as_tensor_variable(kern), pt.as_tensor_variable(topgrad)
        dtype = common_float(kern, topgrad)
        kern, topgrad, ishape = pt.cast(kern, dtype), pt.cast(topgrad, dtype), as_pair_vector(ishape)
        out = tensor_type(dtype, (static(topgrad)[0], static(kern)[1], *constant_pair(ishape)))()
        return Apply(self, [kern, topgrad, ishape], [out])

    def perform(self, node, inputs, output_storage, params=None):
        kern, top, ishape = inputs
        h, w = int(ishape[0]), int(ishape[1])
        (ph, pw), (oh, ow) = self._geometry((h, w), kern.shape[2:], top.shape[2:])
        _check_channels(self, "the output gradient's channel count", top.shape[1], kern.shape[0])
        k = self._kernel_view(kern)
        xp = np.zeros((top.shape[0], kern.shape[1], h + 2 * ph, w + 2 * pw), dtype=node.outputs[0].dtype)
        for a, b, view in self._views(xp, kern.shape[2], kern.shape[3], oh, ow):
            xp[view] += np.tensordot(top, k[:, :, a, b], axes=([1], [0])).transpose(0, 3, 1, 2)
        output_storage[0][0] = np.ascontiguousarray(xp[:, :, ph : ph + h, pw : pw + w])

    def infer_shape(self, fgraph, node, shapes):
        (_, c, _, _), (b, _, _, _), _ = shapes
        ishape = node.inputs[2]
        return [(b, c, ishape[0], ishape[1])]

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def vjp(self, inputs, outputs, output_grads):
        kern, top, _ = inputs
        (g,) = output_grads  # shaped like the image
        d_kern = self._twin(Conv2dGradWeights)(g, top, _spatial(kern))
        d_top = self._twin(Conv2d)(g, kern)
        return [like(d_kern, kern), like(d_top, top), DisconnectedType()()]


def _spatial(var):
    """(rows, cols) of a 4-d variable: Python ints when static (so gradient types keep static shapes)."""
    rows, cols = static(var)[2:]
    if rows is not None and cols is not None:
        return (rows, cols)
    return var.shape[2:]
