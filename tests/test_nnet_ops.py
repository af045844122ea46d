"""The conv/pool Ops against the previous graph implementation, finite differences for every Op (and the
gradient Ops' own gradients), run-time kernel sizes, LeNet training equivalence, and the Numba kernels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import symtrain.nnet as nn
from symtrain import backend
from symtrain.backend import function, grad, pt, shared, verify_grad
from symtrain.nnet.conv import conv2d_graph
from symtrain.nnet.conv_ops import Conv2d, Conv2dGradInputs, Conv2dGradWeights
from symtrain.nnet.pool import pool_2d_graph
from symtrain.nnet.pool_ops import AveragePoolGrad, MaxPoolGrad, MaxPoolGradGrad, Pool

pytestmark = pytest.mark.backend
# The Ops' perform code is the same on both backends; comparing it with the previous graph implementation
# costs minutes of C compilation under Aesara, so those comparisons run on PyTensor only.
pytensor_only = pytest.mark.skipif(
    backend.NAME != "pytensor", reason="graph-implementation comparison: PyTensor"
)
RNG = np.random.default_rng(7)
# (image shape, filter shape, border_mode, subsample, filter_flip, dilation)
CONV_GRID = [
    ((2, 3, 7, 6), (4, 3, 3, 2), "valid", (1, 1), True, (1, 1)),
    ((1, 2, 5, 5), (3, 2, 3, 3), "full", (2, 1), False, (1, 1)),
    ((2, 1, 8, 7), (2, 1, 3, 3), "half", (2, 2), True, (2, 1)),
    ((1, 2, 6, 9), (2, 2, 2, 4), (1, 2), (1, 3), True, (1, 1)),
    ((3, 2, 9, 9), (2, 2, 4, 3), "half", (1, 1), False, (1, 2)),
    ((1, 1, 4, 4), (1, 1, 4, 4), 0, (3, 3), True, (1, 1)),
]
# (ws, stride, ignore_border, pad)
POOL_GRID = [((2, 2), None, False, (0, 0)), ((3, 2), (2, 1), False, (0, 0)), ((3, 3), (2, 2), True, (1, 2))]
MODES = ("max", "sum", "average_inc_pad", "average_exc_pad")


def _conv_kwargs(case):
    _, wshape, border, stride, flip, dil = case
    return dict(
        border_mode=border, subsample=stride, filter_flip=flip, filter_dilation=dil, filter_shape=wshape
    )


@pytest.fixture(scope="module")
def conv_pairs():
    """Per grid case: (Op value, graph value) for the output and both gradients, one compiled function."""
    x, w = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    outs, data = [], []
    for case in CONV_GRID:
        a = RNG.standard_normal(case[0])
        b = RNG.standard_normal(case[1])
        xs, ws = pt.specify_shape(x, a.shape), w
        for conv in (nn.conv2d, conv2d_graph):
            y = conv(xs, ws, **_conv_kwargs(case))
            cost = (y * pt.sin(y)).sum()
            outs += [y, *grad(cost, [x, w])]
        data.append((a, b))
    fns = [function([x, w], outs[6 * i : 6 * i + 6]) for i in range(len(CONV_GRID))]
    return [f(a, b) for f, (a, b) in zip(fns, data)]


@pytensor_only
@pytest.mark.parametrize("case", range(len(CONV_GRID)))
def test_conv_op_matches_graph_implementation(conv_pairs, case):
    values = conv_pairs[case]
    for new, old in zip(values[:3], values[3:]):
        assert new.shape == old.shape
        np.testing.assert_allclose(new, old, rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def pool_pairs():
    x = pt.tensor4(dtype="float64")
    a = RNG.standard_normal((2, 3, 7, 8))
    outs = []
    for ws, st, ib, pad in POOL_GRID:
        for mode in MODES:
            for pool in (nn.pool_2d, pool_2d_graph):
                y = pool(x, ws, ignore_border=ib, stride=st, pad=pad, mode=mode)
                outs += [y, grad((y * pt.cos(y)).sum(), x)]
    return function([x], outs)(a)


@pytensor_only
@pytest.mark.parametrize("case", range(len(POOL_GRID) * len(MODES)))
def test_pool_op_matches_graph_implementation(pool_pairs, case):
    new_y, new_g, old_y, old_g = pool_pairs[4 * case : 4 * case + 4]
    assert new_y.shape == old_y.shape and new_g.shape == old_g.shape
    np.testing.assert_allclose(new_y, old_y, rtol=1e-12)
    np.testing.assert_allclose(new_g, old_g, rtol=1e-12, atol=1e-12)


def test_kernel_size_known_only_at_run_time():
    # conv2d(T.tensor4(), T.tensor4()): one compiled function serves two kernel sizes, 'half' and 'full'
    x, w = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    f = function(
        [x, w], [nn.conv2d(x, w, border_mode="half"), nn.conv2d(x, w, border_mode="full", subsample=(2, 1))]
    )
    a = RNG.standard_normal((1, 1, 6, 7))
    for k in (3, 5):
        b = RNG.standard_normal((1, 1, k, k))
        half, full = f(a, b)
        ref = scipy.signal.convolve2d(a[0, 0], b[0, 0], mode="full")
        np.testing.assert_allclose(full[0, 0], ref[::2], rtol=1e-10)
        np.testing.assert_allclose(half[0, 0], ref[k // 2 : k // 2 + 6, k // 2 : k // 2 + 7], rtol=1e-10)


def test_every_conv_op_by_finite_differences():
    rng = np.random.default_rng(11)
    img, kern = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 2))
    props = ("half", (2, 1), True, (1, 1))
    top = rng.standard_normal((2, 3, 3, 5))  # the output shape for those props
    verify_grad(lambda i, k: Conv2d(*props)(i, k), [img, kern], rng=rng)
    verify_grad(lambda i, t: Conv2dGradWeights(*props)(i, t, (3, 2)), [img, top], rng=rng)
    verify_grad(lambda k, t: Conv2dGradInputs(*props)(k, t, (5, 4)), [kern, top], rng=rng)


def test_second_derivatives_of_conv2d():
    # Hessian-vector style: the gradient of a function of the gradient goes through the gradient Ops' grads
    rng = np.random.default_rng(12)

    def gradient_norm(i, k):
        y = nn.conv2d(i, k, border_mode=(1, 0), subsample=(1, 2), filter_flip=False)
        gi, gk = grad((y**2).sum() + y.sum(), [i, k])
        return (gi**2).sum() + (gk * gk.sum()).sum()

    verify_grad(
        gradient_norm, [rng.standard_normal((1, 2, 4, 5)), rng.standard_normal((2, 2, 2, 3))], rng=rng
    )


@pytest.mark.parametrize("mode", MODES)
def test_every_pool_op_by_finite_differences(mode):
    rng = np.random.default_rng(13)
    geometry = ((3, 2), (2, 1), (1, 1), True)  # ws, stride, pad, ignore_border
    x = rng.standard_normal((1, 2, 5, 4))
    verify_grad(lambda v: Pool(*geometry, mode)(v), [x], rng=rng)
    xs = pt.tensor4(dtype="float64")
    maxout = function([xs], Pool(*geometry, "max")(xs))(x)
    gz = rng.standard_normal(maxout.shape)
    if mode == "max":
        verify_grad(lambda g: MaxPoolGrad(*geometry)(x, maxout, g), [gz], rng=rng)
        verify_grad(lambda gg: MaxPoolGradGrad(*geometry)(x, maxout, gg), [x.copy()], rng=rng)
    else:
        verify_grad(lambda g: AveragePoolGrad(*geometry, mode)(x, g), [gz], rng=rng)


def test_second_derivative_of_max_pool():
    rng = np.random.default_rng(14)
    x = rng.permutation(40).reshape(1, 1, 5, 8).astype("float64")  # distinct values: no ties near x

    def f(v):
        y = nn.pool_2d(v, (2, 3), stride=(1, 2))
        g = grad((y**3).sum(), v)
        return (g**2).sum()

    verify_grad(f, [x], rng=rng)


@pytensor_only
def test_pool_any_rank():
    for shape in ((5, 7), (2, 3, 2, 5, 7)):
        x = pt.TensorType("float64", shape=(None,) * len(shape))("x")
        a = RNG.standard_normal(shape)
        new, old = function(
            [x],
            [nn.pool_2d(x, (2, 3), mode="average_exc_pad"), pool_2d_graph(x, (2, 3), mode="average_exc_pad")],
        )(a)
        assert new.shape == old.shape == shape[:-2] + (3, 3)
        np.testing.assert_allclose(new, old, rtol=1e-12)


def test_static_output_shapes_and_run_time_errors():
    x = pt.TensorType("float64", shape=(2, 3, 10, 9))("x")
    w = pt.TensorType("float64", shape=(4, 3, 3, 3))("w")
    y = nn.conv2d(x, w, border_mode="full", subsample=(2, 2))
    assert y.type.shape == (2, 4, 6, 6)
    assert nn.pool_2d(y, (2, 2)).type.shape == (2, 4, 3, 3)
    xv, wv = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    f = function([xv, wv], nn.conv2d(xv, wv))
    with pytest.raises(ValueError, match="channels"):
        f(np.zeros((1, 2, 5, 5)), np.zeros((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        f(np.zeros((1, 1, 2, 5)), np.zeros((1, 1, 3, 3)))


def lenet_losses(conv, pool, steps: int = 20, batch: int = 8, mode: str | None = None) -> list[float]:
    """Losses of ``steps`` SGD steps of the DLT LeNet (20 and 50 5x5 filters, 2x2 max pools, 500 tanh)."""
    rng = np.random.default_rng(0)
    fx = "float32"
    data_x = shared(rng.random((batch * 4, 784)).astype(fx))
    data_y = shared(rng.integers(0, 10, batch * 4).astype("int64"))

    def param(shape, scale):
        return shared((rng.standard_normal(shape) * scale).astype(fx))

    params = [
        param((20, 1, 5, 5), 0.1),
        param((20,), 0),
        param((50, 20, 5, 5), 0.03),
        param((50,), 0),
        param((800, 500), 0.03),
        param((500,), 0),
        param((500, 10), 0.03),
        param((10,), 0),
    ]
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    i = pt.lscalar()
    h = data_x[i * batch : (i + 1) * batch].reshape((batch, 1, 28, 28))
    h = pt.tanh(
        pool(conv(h, w1, filter_shape=(20, 1, 5, 5)), (2, 2), ignore_border=True)
        + b1.dimshuffle("x", 0, "x", "x")
    )
    h = pt.tanh(
        pool(conv(h, w2, filter_shape=(50, 20, 5, 5)), (2, 2), ignore_border=True)
        + b2.dimshuffle("x", 0, "x", "x")
    )
    h = pt.tanh(h.flatten(2) @ w3 + b3)
    p = nn.softmax(h @ w4 + b4)
    cost = nn.categorical_crossentropy(p, data_y[i * batch : (i + 1) * batch]).mean()
    lr = np.asarray(0.1, dtype=fx)
    step = function(
        [i], cost, updates=[(q, q - lr * g) for q, g in zip(params, grad(cost, params))], mode=mode
    )
    return [float(step(s % 4)) for s in range(steps)]


@pytensor_only
def test_lenet_trains_the_same_with_the_ops_as_with_the_graph_implementation():
    old = lenet_losses(conv2d_graph, pool_2d_graph)
    new = lenet_losses(nn.conv2d, nn.pool_2d)
    assert old[-1] < old[0]  # it trains
    np.testing.assert_allclose(new, old, rtol=2e-4)


@pytest.mark.slow
@pytest.mark.skipif(backend.NAME != "pytensor", reason="the Numba kernels are registered with PyTensor")
def test_numba_kernels_match_perform():
    """The Numba implementations of every Op (and second-order gradients) against the NumPy ones."""
    x, w = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    outs = []
    for border, stride, flip, dil in (("half", (2, 1), True, (1, 2)), ((1, 0), (1, 1), False, (1, 1))):
        y = nn.conv2d(x, w, border_mode=border, subsample=stride, filter_flip=flip, filter_dilation=dil)
        gx, gw = grad((y * pt.sin(y)).sum(), [x, w])
        outs += [y, gx, gw, grad((gx**2).sum() + (gw**2).sum(), x)]
    a, b = RNG.standard_normal((3, 2, 9, 8)), RNG.standard_normal((4, 2, 3, 2))
    # static shapes: the kernels get the sizes as compile-time constants
    xs, ws_ = pt.specify_shape(x, a.shape), pt.specify_shape(w, b.shape)
    y = nn.conv2d(xs, ws_, subsample=(1, 2))
    outs += [y, *grad((y * pt.cos(y)).sum(), [xs, ws_])]
    for ws, st, ib, pad, mode in (
        ((3, 2), (2, 1), True, (1, 1), "max"),
        ((2, 3), None, False, (0, 0), "average_exc_pad"),
        ((2, 2), (1, 1), True, (1, 0), "average_inc_pad"),
        ((2, 2), None, True, (0, 0), "max"),
    ):
        y = nn.pool_2d(x, ws, ignore_border=ib, stride=st, pad=pad, mode=mode)
        g = grad((y**3).sum(), x)
        outs += [y, g, grad((g**2).sum(), x)]
    expected = function([x, w], outs, mode="FAST_COMPILE")(a, b)
    got = function([x, w], outs, mode="NUMBA")(a, b)
    for i, (e, g) in enumerate(zip(expected, got)):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-9, err_msg=f"output {i}")


@pytest.mark.parametrize("mode", ("sum", "average_inc_pad", "average_exc_pad"))
def test_sum_and_average_pooling_of_integers_compute_in_floats(mode):
    # An integer output would truncate averages (6.5 -> 6) and overflow uint8 sums (4 x 255).
    x = pt.tensor4(dtype="uint8")
    y = nn.pool_2d(x, ws=(2, 2), ignore_border=False, mode=mode)
    assert y.dtype.startswith("float")
    data = np.full((1, 1, 3, 3), 255, dtype="uint8")
    data[0, 0, 0, 0] = 0
    got = function([x], y, mode="FAST_COMPILE")(data)
    sums = np.array([[765.0, 510.0], [510.0, 255.0]])
    counts = np.array([[4.0, 2.0], [2.0, 1.0]])  # windows clipped at the edge (no padding: both averages)
    np.testing.assert_allclose(got[0, 0], sums if mode == "sum" else sums / counts)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", ("int8", "int64", "uint8"))
def test_max_pooling_of_integers_keeps_the_dtype_and_exact_values(dtype):
    # The partial edge windows are filled with the dtype's minimum (casting -inf is undefined and warns).
    x = pt.tensor4(dtype=dtype)
    y = nn.pool_2d(x, ws=(2, 2), ignore_border=False)
    data = np.array([[3, 1, 0], [2, 5, 4], [7, 6, 1]], dtype=dtype)[None, None]
    if dtype != "uint8":
        data = data - 100
    got = function([x], y, mode="FAST_COMPILE")(data)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got[0, 0], np.array([[5, 4], [7, 1]]) + (0 if dtype == "uint8" else -100))
