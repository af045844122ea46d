"""symtrain.nnet.conv2d against scipy.signal (values) and finite differences (gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import symtrain.nnet as nn
from symtrain.backend import function, pt, shared, verify_grad
from symtrain.errors import ConfigError
from symtrain.nnet.conv import conv2d_graph

pytestmark = pytest.mark.backend
RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 7, 6))
W = RNG.standard_normal((4, 3, 3, 2))
# (border_mode, subsample, filter_flip, dilation)
CASES = [
    ("valid", (1, 1), True, (1, 1)),
    ("full", (1, 1), True, (1, 1)),
    ("half", (1, 1), True, (1, 1)),
    ("valid", (2, 3), True, (1, 1)),
    ("full", (2, 2), False, (1, 1)),
    (1, (1, 2), True, (1, 1)),
    ((2, 0), (1, 1), False, (1, 1)),
    ("valid", (1, 1), True, (2, 2)),
    ("half", (2, 1), True, (2, 1)),
]


def reference(x, w, border_mode, subsample, flip, dilation):
    """Theano's conv2d with scipy: pad, convolve (or correlate) each channel, sum, stride."""
    kh, kw = w.shape[2:]
    dk = [(kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1]
    pad = {"valid": (0, 0), "full": (dk[0] - 1, dk[1] - 1), "half": (dk[0] // 2, dk[1] // 2)}.get(
        border_mode, border_mode if isinstance(border_mode, tuple) else (border_mode, border_mode)
    )
    wd = np.zeros(w.shape[:2] + tuple(dk))
    wd[:, :, :: dilation[0], :: dilation[1]] = w
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    op = scipy.signal.convolve2d if flip else scipy.signal.correlate2d
    out = np.array(
        [
            [sum(op(xp[b, c], wd[f, c], mode="valid") for c in range(x.shape[1])) for f in range(w.shape[0])]
            for b in range(x.shape[0])
        ]
    )
    return out[:, :, :: subsample[0], :: subsample[1]]


@pytest.fixture(scope="module")
def conv_outputs():
    x, w = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    outs = [
        nn.conv2d(x, w, filter_shape=W.shape, border_mode=b, subsample=s, filter_flip=f, filter_dilation=d)
        for b, s, f, d in CASES
    ]
    return function([x, w], outs)(X, W)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_conv2d_matches_scipy(conv_outputs, case):
    b, s, f, d = CASES[case]
    ref = reference(X, W, b, s, f, d)
    assert conv_outputs[case].shape == ref.shape
    assert nn.conv_output_shape(X.shape, W.shape, b, s, d) == ref.shape
    np.testing.assert_allclose(conv_outputs[case], ref, rtol=1e-10, atol=1e-12)


def test_conv2d_shared_filters_old_image_shape_name_and_float32():
    # the DLT LeNet call: shared filters (kernel size from the value), image_shape= the old keyword
    w = shared(W.astype("float32"))
    x = pt.tensor4(dtype="float32")
    out = nn.conv2d(input=x, filters=w, filter_shape=W.shape, image_shape=X.shape)
    got = function([x], out)(X.astype("float32"))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference(X, W, "valid", (1, 1), True, (1, 1)), rtol=1e-4, atol=1e-4)


def test_conv2d_gradients_by_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 5, 4))
    w = rng.standard_normal((3, 2, 3, 2))

    def conv(x, w):
        a = nn.conv2d(x, w, filter_shape=w_shape, border_mode="full", subsample=(2, 1))
        b = nn.conv2d(x, w, filter_shape=w_shape, border_mode="valid", filter_flip=False)
        return pt.concatenate([a.flatten(), b.flatten()])

    w_shape = w.shape
    verify_grad(conv, [x, w], rng=rng)


def test_conv2d_argument_errors():
    x, w = pt.tensor4(), pt.tensor4()
    with pytest.raises(ConfigError, match="filter_shape"):
        conv2d_graph(x, w)  # the old graph implementation needs the kernel size; the Op does not
    with pytest.raises(ConfigError, match="border_mode"):
        nn.conv2d(x, w, filter_shape=(2, 1, 3, 3), border_mode="same")
    with pytest.raises(ConfigError, match="subsample"):
        nn.conv2d(x, w, filter_shape=(2, 1, 3, 3), subsample=(0, 1))
    with pytest.raises(ConfigError, match="input must be 4-d"):
        nn.conv2d(pt.matrix(), w, filter_shape=(2, 1, 3, 3))
    with pytest.raises(ConfigError, match="not both"):
        nn.conv2d(x, w, filter_shape=(2, 1, 3, 3), input_shape=(1, 1, 5, 5), image_shape=(1, 1, 5, 5))
    with pytest.raises(ConfigError, match="does not match"):
        nn.conv2d(x, shared(np.zeros((2, 1, 3, 3), dtype="float32")), filter_shape=(2, 1, 5, 5))


def test_filters_are_never_sliced_so_their_updates_stay_contiguous():
    # A [::-1] view of the filters makes their gradient (and the SGD-updated parameter) non-C-contiguous,
    # which makes Numba re-compile the whole step; the flip is done on the patch order instead.
    w = shared(W.astype("float32"))
    out = nn.conv2d(pt.tensor4(dtype="float32"), w, border_mode="full")
    seen, stack, consumers = set(), [out], []
    while stack:
        var = stack.pop()
        if var.owner is None or id(var) in seen:
            continue
        seen.add(id(var))
        if any(i is w for i in var.owner.inputs):
            consumers.append(type(var.owner.op).__name__)
        stack.extend(var.owner.inputs)
    assert consumers and not any("Subtensor" in name for name in consumers), consumers
