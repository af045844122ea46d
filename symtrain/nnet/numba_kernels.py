"""Numba implementations of the nnet Ops, registered with PyTensor's Numba dispatcher.

Convolution: im2col (one image's patches into a (channels*kr*kc, out_rows*out_cols) buffer) and col2im
are loops compiled by Numba; the products go through BLAS as ``np.dot`` on contiguous arrays, one GEMM
per image, written straight into the output. Pooling: direct loops over the windows.

The convolution kernels take the sizes the graph knows statically (kernel and image rows/cols) as
compile-time constants, so LLVM specialises the im2col loops (about 3x faster for LeNet's 5x5 kernels);
unknown sizes are read at run time. Their cache key is the Op type, its props and those static sizes;
pooling's is the Op type and props. All are plain numbers, so PyTensor caches the compiled kernels, and
whole compiled steps that use them, on disk under ``base_compiledir``: a warm cache loads instead of
compiling. The version in the key is a hash of this file, so an edited kernel is never served from a
stale cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pytensor.link.numba.dispatch import basic as numba_basic
from pytensor.link.numba.dispatch.basic import (
    default_hash_key_from_props,
    register_funcify_and_cache_key,
    register_funcify_default_op_cache_key,
)

from symtrain.nnet.conv_ops import Conv2d, Conv2dGradInputs, Conv2dGradWeights
from symtrain.nnet.pool_ops import AveragePoolGrad, MaxPoolGrad, MaxPoolGradGrad, Pool

CACHE_VERSION = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:15], 16)
jit = numba_basic.numba_njit


# ----- convolution ---------------------------------------------------------------------------------
@jit(boundscheck=False, inline="always")
def _pads(mode: int, ph: int, pw: int, kh: int, kw: int, dh: int, dw: int):
    """Padding from the border mode code (0 explicit, 1 full, 2 half) and the run-time kernel size."""
    eh, ew = (kh - 1) * dh, (kw - 1) * dw
    if mode == 1:
        return eh, ew
    if mode == 2:
        return (eh + 1) // 2, (ew + 1) // 2
    return ph, pw


@jit(boundscheck=False, inline="always")
def _out_len(size: int, k: int, pad: int, stride: int, dil: int) -> int:
    return (size + 2 * pad - (k - 1) * dil - 1) // stride + 1


@jit(boundscheck=False, inline="always")
def _col_range(b: int, dw: int, pw: int, sw: int, width: int, ow: int):
    """Output columns j whose input column j*sw + b*dw - pw lies inside [0, width)."""
    shift = b * dw - pw
    lo = 0 if shift >= 0 else (-shift + sw - 1) // sw
    hi = (width - 1 - shift) // sw + 1 if width - 1 - shift >= 0 else 0
    return lo, min(max(hi, lo), ow)


@jit(boundscheck=False, inline="always")  # inlined: static sizes reach the loops as constants
def _im2col(x, col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow):
    """col[(c*kh + a)*kw + b, i*ow + j] = padded x[c, i*sh + a*dh, j*sw + b*dw] (zero outside)."""
    channels, height, width = x.shape
    for c in range(channels):
        for a in range(kh):
            for b in range(kw):
                row = col[(c * kh + a) * kw + b]
                lo, hi = _col_range(b, dw, pw, sw, width, ow)
                shift = b * dw - pw
                for i in range(oh):
                    r = i * sh + a * dh - ph
                    base = i * ow
                    if r < 0 or r >= height:
                        for j in range(ow):
                            row[base + j] = 0
                        continue
                    for j in range(lo):
                        row[base + j] = 0
                    if sw == 1:  # unit stride: a loop LLVM vectorizes (the common case)
                        for j in range(lo, hi):
                            row[base + j] = x[c, r, j + shift]
                    else:
                        for j in range(lo, hi):
                            row[base + j] = x[c, r, j * sw + shift]
                    for j in range(hi, ow):
                        row[base + j] = 0


@jit(boundscheck=False, inline="always")
def _col2im(col, x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow):
    """The transpose of ``_im2col``: add each patch entry back onto its input pixel."""
    channels, height, width = x.shape
    for c in range(channels):
        for a in range(kh):
            for b in range(kw):
                row = col[(c * kh + a) * kw + b]
                lo, hi = _col_range(b, dw, pw, sw, width, ow)
                shift = b * dw - pw
                for i in range(oh):
                    r = i * sh + a * dh - ph
                    if r < 0 or r >= height:
                        continue
                    base = i * ow
                    if sw == 1:
                        for j in range(lo, hi):
                            x[c, r, j + shift] += row[base + j]
                    else:
                        for j in range(lo, hi):
                            x[c, r, j * sw + shift] += row[base + j]


@jit(boundscheck=False)
def _weights2d(kern, flip: bool):
    """The filters as a C-contiguous (filters, channels*kr*kc) matrix, flipped for a true convolution."""
    nf, channels, kh, kw = kern.shape
    w2 = np.empty((nf, channels * kh * kw), dtype=kern.dtype)
    for f in range(nf):
        for c in range(channels):
            for a in range(kh):
                for b in range(kw):
                    src_a, src_b = (kh - 1 - a, kw - 1 - b) if flip else (a, b)
                    w2[f, (c * kh + a) * kw + b] = kern[f, c, src_a, src_b]
    return w2


@jit(boundscheck=False, inline="always")
def _sizes(h, w, kh, kw, h0: int, w0: int, kh0: int, kw0: int):
    """Run-time sizes, replaced by the static ones (compile-time constants) where the graph knows them."""
    if (h0 >= 0 and h != h0) or (w0 >= 0 and w != w0) or (kh0 >= 0 and kh != kh0) or (kw0 >= 0 and kw != kw0):
        raise ValueError("conv2d: an input's shape differs from the static shape of its type")
    height, width = (h0 if h0 >= 0 else h), (w0 if w0 >= 0 else w)
    return height, width, (kh0 if kh0 >= 0 else kh), (kw0 if kw0 >= 0 else kw)


def _static_pair(var, first: int) -> tuple[int, int]:
    """Static sizes of axes ``first`` and ``first + 1`` of a tensor (-1 when unknown)."""
    shape = var.type.shape
    return tuple(-1 if shape[i] is None else int(shape[i]) for i in (first, first + 1))


def _constant_pair(var) -> tuple[int, int]:
    """The two entries of a constant int vector input (-1 when it is not a constant)."""
    data = getattr(var, "data", None)
    return (int(data[0]), int(data[1])) if data is not None else (-1, -1)


def _key(op, static: tuple[int, ...]) -> str:
    return default_hash_key_from_props(op, cache_version=CACHE_VERSION, static=static)


def _conv_consts(op):
    """The props as plain numbers closed over by the kernels (compile-time constants for Numba)."""
    if isinstance(op.border_mode, tuple):
        mode, ph, pw = 0, op.border_mode[0], op.border_mode[1]
    else:
        mode, ph, pw = {"valid": 0, "full": 1, "half": 2}[op.border_mode], 0, 0
    return mode, ph, pw, op.subsample[0], op.subsample[1], op.filter_dilation[0], op.filter_dilation[1]


@register_funcify_and_cache_key(Conv2d)
def numba_funcify_Conv2d(op, node, **kwargs):
    """Forward convolution: per image, im2col then ``out[b] = W (F, K) @ col (K, N)`` by BLAS."""
    mode, ph0, pw0, sh, sw, dh, dw = _conv_consts(op)
    flip = op.filter_flip
    (h0, w0), (kh0, kw0) = _static_pair(node.inputs[0], 2), _static_pair(node.inputs[1], 2)

    @jit
    def conv2d(img, kern):
        batch, channels = img.shape[0], img.shape[1]
        nf, kc = kern.shape[0], kern.shape[1]
        height, width, kh, kw = _sizes(
            img.shape[2], img.shape[3], kern.shape[2], kern.shape[3], h0, w0, kh0, kw0
        )
        if kc != channels:
            raise ValueError("Conv2d: the number of input channels does not match the filters")
        ph, pw = _pads(mode, ph0, pw0, kh, kw, dh, dw)
        oh, ow = _out_len(height, kh, ph, sh, dh), _out_len(width, kw, pw, sw, dw)
        if oh <= 0 or ow <= 0:
            raise ValueError("Conv2d: the dilated kernel is larger than the padded input")
        k, n = channels * kh * kw, oh * ow
        out = np.zeros((batch, nf, n), dtype=img.dtype)  # 3-d: out[i] is a C-contiguous GEMM target
        if k > 0 and nf > 0 and batch > 0:
            w2 = _weights2d(kern, flip)
            col = np.empty((k, n), dtype=img.dtype)
            for i in range(batch):
                _im2col(img[i], col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
                np.dot(w2, col, out[i])
        return out.reshape((batch, nf, oh, ow))

    return conv2d, _key(op, (h0, w0, kh0, kw0))


@register_funcify_and_cache_key(Conv2dGradWeights)
def numba_funcify_Conv2dGradWeights(op, node, **kwargs):
    """Filter gradient: per image, im2col then ``dW += top[b] (F, N) @ col.T (N, K)`` by BLAS."""
    mode, ph0, pw0, sh, sw, dh, dw = _conv_consts(op)
    flip = op.filter_flip
    (h0, w0), (kh0, kw0) = _static_pair(node.inputs[0], 2), _constant_pair(node.inputs[2])

    @jit
    def conv2d_grad_weights(img, top, kshape):
        batch, channels = img.shape[0], img.shape[1]
        nf = top.shape[1]
        height, width, kh, kw = _sizes(img.shape[2], img.shape[3], kshape[0], kshape[1], h0, w0, kh0, kw0)
        ph, pw = _pads(mode, ph0, pw0, kh, kw, dh, dw)
        oh, ow = _out_len(height, kh, ph, sh, dh), _out_len(width, kw, pw, sw, dw)
        if top.shape[0] != batch or top.shape[2] != oh or top.shape[3] != ow:
            raise ValueError("Conv2dGradWeights: the output gradient's shape does not match the input's")
        k, n = channels * kh * kw, oh * ow
        acc = np.zeros((nf, k), dtype=img.dtype)
        if k > 0 and nf > 0 and n > 0:
            tmp = np.empty((nf, k), dtype=img.dtype)
            col = np.empty((k, n), dtype=img.dtype)
            top3 = np.ascontiguousarray(top).reshape((batch, nf, n))
            for i in range(batch):
                _im2col(img[i], col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
                np.dot(top3[i], col.T, tmp)
                acc += tmp
        dw_out = np.empty((nf, channels, kh, kw), dtype=img.dtype)
        for f in range(nf):
            for c in range(channels):
                for a in range(kh):
                    for b in range(kw):
                        dst_a, dst_b = (kh - 1 - a, kw - 1 - b) if flip else (a, b)
                        dw_out[f, c, dst_a, dst_b] = acc[f, (c * kh + a) * kw + b]
        return dw_out

    return conv2d_grad_weights, _key(op, (h0, w0, kh0, kw0))


@register_funcify_and_cache_key(Conv2dGradInputs)
def numba_funcify_Conv2dGradInputs(op, node, **kwargs):
    """Input gradient: per image, ``col = W.T (K, F) @ top[b] (F, N)`` by BLAS, then col2im."""
    mode, ph0, pw0, sh, sw, dh, dw = _conv_consts(op)
    flip = op.filter_flip
    (h0, w0), (kh0, kw0) = _constant_pair(node.inputs[2]), _static_pair(node.inputs[0], 2)

    @jit
    def conv2d_grad_inputs(kern, top, ishape):
        nf, channels = kern.shape[0], kern.shape[1]
        batch = top.shape[0]
        height, width, kh, kw = _sizes(ishape[0], ishape[1], kern.shape[2], kern.shape[3], h0, w0, kh0, kw0)
        ph, pw = _pads(mode, ph0, pw0, kh, kw, dh, dw)
        oh, ow = _out_len(height, kh, ph, sh, dh), _out_len(width, kw, pw, sw, dw)
        if top.shape[1] != nf or top.shape[2] != oh or top.shape[3] != ow:
            raise ValueError("Conv2dGradInputs: the output gradient's shape does not match the filters/input")
        dx = np.zeros((batch, channels, height, width), dtype=kern.dtype)
        k, n = channels * kh * kw, oh * ow
        if k == 0 or nf == 0 or n == 0:
            return dx
        w2t = np.ascontiguousarray(_weights2d(kern, flip).T)
        col = np.empty((k, n), dtype=kern.dtype)
        top3 = np.ascontiguousarray(top).reshape((batch, nf, n))
        for i in range(batch):
            np.dot(w2t, top3[i], col)
            _col2im(col, dx[i], kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
        return dx

    return conv2d_grad_inputs, _key(op, (h0, w0, kh0, kw0))


# ----- pooling ---------------------------------------------------------------------------------------
@jit(boundscheck=False)
def _pool_len(size: int, ws: int, st: int, pad: int, ignore_border: bool) -> int:
    size = size + 2 * pad
    if ignore_border:
        return max((size - ws) // st + 1, 0)
    if st >= ws:
        return (size - 1) // st + 1
    return max((size - 1 - ws + st) // st, 0) + 1


@jit(boundscheck=False)
def _windows(n_out: int, ws: int, st: int, pad: int, size: int):
    """Per window i: the real input range [lo[i], hi[i]) and the clipped size including padding."""
    lo, hi, span = np.empty(n_out, np.int64), np.empty(n_out, np.int64), np.empty(n_out, np.int64)
    for i in range(n_out):
        start = i * st
        end = min(start + ws, size + 2 * pad)
        lo[i], hi[i], span[i] = max(start - pad, 0), min(end - pad, size), end - start
    return lo, hi, span


def _pool_consts(op):
    return (
        op.ws[0],
        op.ws[1],
        op.stride[0],
        op.stride[1],
        op.pad[0],
        op.pad[1],
        op.ignore_border,
        MODE_CODES[op.mode],
    )


MODE_CODES = {"max": 0, "sum": 1, "average_inc_pad": 2, "average_exc_pad": 3}


@register_funcify_default_op_cache_key(Pool)
def numba_funcify_Pool(op, node, **kwargs):
    """Pooling by direct loops over the (clipped) windows."""
    wr, wc, sr, sc, pr, pc, ib, mode = _pool_consts(op)

    full = ib and pr == 0 and pc == 0  # every window complete: constant-size loops LLVM unrolls

    @jit
    def pool(x):
        nb, nc, rows, cols = x.shape
        orow, ocol = _pool_len(rows, wr, sr, pr, ib), _pool_len(cols, wc, sc, pc, ib)
        r0, r1, rn = _windows(orow, wr, sr, pr, rows)
        c0, c1, cn = _windows(ocol, wc, sc, pc, cols)
        out = np.empty((nb, nc, orow, ocol), dtype=x.dtype)
        for b in range(nb):
            for c in range(nc):
                plane, res = x[b, c], out[b, c]
                if full and mode == 0:
                    for i in range(orow):
                        for j in range(ocol):
                            acc = plane[i * sr, j * sc]
                            for r in range(wr):
                                for q in range(wc):
                                    acc = max(acc, plane[i * sr + r, j * sc + q])
                            res[i, j] = acc
                    continue
                for i in range(orow):
                    for j in range(ocol):
                        if mode == 0:
                            acc = plane[r0[i], c0[j]]
                            for r in range(r0[i], r1[i]):
                                for q in range(c0[j], c1[j]):
                                    acc = max(acc, plane[r, q])
                        else:
                            acc = plane[r0[i], c0[j]] * 0
                            for r in range(r0[i], r1[i]):
                                for q in range(c0[j], c1[j]):
                                    acc += plane[r, q]
                            if mode == 2:
                                acc = acc / (rn[i] * cn[j])
                            elif mode == 3:
                                acc = acc / ((r1[i] - r0[i]) * (c1[j] - c0[j]))
                        res[i, j] = acc
        return out

    return pool, CACHE_VERSION


@register_funcify_default_op_cache_key(MaxPoolGrad)
def numba_funcify_MaxPoolGrad(op, node, **kwargs):
    """Max-pool gradient: each window's gz goes to every element equal to its max."""
    wr, wc, sr, sc, pr, pc, ib, _ = _pool_consts(op)
    full = ib and pr == 0 and pc == 0

    @jit
    def max_pool_grad(x, maxout, gz):
        nb, nc, rows, cols = x.shape
        orow, ocol = _pool_len(rows, wr, sr, pr, ib), _pool_len(cols, wc, sc, pc, ib)
        r0, r1, _ = _windows(orow, wr, sr, pr, rows)
        c0, c1, _ = _windows(ocol, wc, sc, pc, cols)
        gx = np.zeros(x.shape, dtype=x.dtype)
        for b in range(nb):
            for c in range(nc):
                plane, m, g, res = x[b, c], maxout[b, c], gz[b, c], gx[b, c]
                if full:
                    for i in range(orow):
                        for j in range(ocol):
                            for r in range(wr):
                                for q in range(wc):
                                    if plane[i * sr + r, j * sc + q] == m[i, j]:
                                        res[i * sr + r, j * sc + q] += g[i, j]
                    continue
                for i in range(orow):
                    for j in range(ocol):
                        for r in range(r0[i], r1[i]):
                            for q in range(c0[j], c1[j]):
                                if plane[r, q] == m[i, j]:
                                    res[r, q] += g[i, j]
        return gx

    return max_pool_grad, CACHE_VERSION


@register_funcify_default_op_cache_key(MaxPoolGradGrad)
def numba_funcify_MaxPoolGradGrad(op, node, **kwargs):
    """Transpose of the max-pool gradient: sum of ggx over each window's max elements."""
    wr, wc, sr, sc, pr, pc, ib, _ = _pool_consts(op)

    @jit
    def max_pool_grad_grad(x, maxout, ggx):
        nb, nc, rows, cols = x.shape
        orow, ocol = _pool_len(rows, wr, sr, pr, ib), _pool_len(cols, wc, sc, pc, ib)
        r0, r1, _ = _windows(orow, wr, sr, pr, rows)
        c0, c1, _ = _windows(ocol, wc, sc, pc, cols)
        out = np.zeros((nb, nc, orow, ocol), dtype=x.dtype)
        for b in range(nb):
            for c in range(nc):
                plane, m, gg, res = x[b, c], maxout[b, c], ggx[b, c], out[b, c]
                for i in range(orow):
                    for j in range(ocol):
                        for r in range(r0[i], r1[i]):
                            for q in range(c0[j], c1[j]):
                                if plane[r, q] == m[i, j]:
                                    res[i, j] += gg[r, q]
        return out

    return max_pool_grad_grad, CACHE_VERSION


@register_funcify_default_op_cache_key(AveragePoolGrad)
def numba_funcify_AveragePoolGrad(op, node, **kwargs):
    """Sum/average-pool gradient: each window's gz (divided by its count) spread over its elements."""
    wr, wc, sr, sc, pr, pc, ib, mode = _pool_consts(op)

    @jit
    def average_pool_grad(x, gz):
        nb, nc, rows, cols = x.shape
        orow, ocol = _pool_len(rows, wr, sr, pr, ib), _pool_len(cols, wc, sc, pc, ib)
        r0, r1, rn = _windows(orow, wr, sr, pr, rows)
        c0, c1, cn = _windows(ocol, wc, sc, pc, cols)
        gx = np.zeros(x.shape, dtype=x.dtype)
        for b in range(nb):
            for c in range(nc):
                g, res = gz[b, c], gx[b, c]
                for i in range(orow):
                    for j in range(ocol):
                        if mode == 1:
                            v = g[i, j]
                        elif mode == 2:
                            v = g[i, j] / (rn[i] * cn[j])
                        else:
                            v = g[i, j] / ((r1[i] - r0[i]) * (c1[j] - c0[j]))
                        for r in range(r0[i], r1[i]):
                            for q in range(c0[j], c1[j]):
                                res[r, q] += v
        return gx

    return average_pool_grad, CACHE_VERSION
