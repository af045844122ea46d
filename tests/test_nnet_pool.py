"""symtrain.nnet pooling against explicit loops (Theano's Pool.perform semantics) and finite differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import symtrain.nnet as nn
from symtrain import backend
from symtrain.backend import function, pt, verify_grad
from symtrain.errors import ConfigError

pytestmark = pytest.mark.backend
RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 7, 5))
# (ws, stride, ignore_border, pad)
GEOMETRY = [
    ((2, 2), None, None, (0, 0)),
    ((2, 2), None, True, (0, 0)),
    ((3, 2), (2, 1), False, (0, 0)),
    ((2, 3), (3, 3), False, (0, 0)),
    ((3, 3), (2, 2), True, (1, 2)),
    ((1, 3), (3, 1), True, (0, 0)),
    ((3, 3), (3, 3), True, (2, 1)),
]
MODES = ["max", "sum", "average_inc_pad", "average_exc_pad"]
CASES = list(itertools.product(range(len(GEOMETRY)), MODES))


def out_len(size, ws, st, pad, ignore_border):
    """Count windows by walking them: start positions 0, st, ... on the padded axis."""
    size += 2 * pad
    if ignore_border:
        return len(range(0, size - ws + 1, st))
    n = 0
    # keep a window while it starts inside and (for overlapping windows) still reaches new elements
    while n * st < size and (n == 0 or st >= ws or (n - 1) * st + ws < size):
        n += 1
    return n


def reference(x, ws, st, ignore_border, pad, mode):
    st = st or ws
    ib = bool(ignore_border)
    rows, cols = x.shape[-2:]
    out = np.zeros(
        x.shape[:-2] + (out_len(rows, ws[0], st[0], pad[0], ib), out_len(cols, ws[1], st[1], pad[1], ib))
    )
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            r0, c0 = i * st[0], j * st[1]
            r1, c1 = min(r0 + ws[0], rows + 2 * pad[0]), min(c0 + ws[1], cols + 2 * pad[1])
            # real elements (padded coordinates -> input coordinates)
            rr = slice(max(r0, pad[0]) - pad[0], min(r1, rows + pad[0]) - pad[0])
            cc = slice(max(c0, pad[1]) - pad[1], min(c1, cols + pad[1]) - pad[1])
            patch = x[..., rr, cc]
            if mode == "max":
                out[..., i, j] = patch.max(axis=(-2, -1))
            elif mode == "sum":
                out[..., i, j] = patch.sum(axis=(-2, -1))
            elif mode == "average_inc_pad":
                out[..., i, j] = patch.sum(axis=(-2, -1)) / ((r1 - r0) * (c1 - c0))
            else:
                out[..., i, j] = patch.mean(axis=(-2, -1))
    return out


@pytest.fixture(scope="module")
def pooled():
    x = pt.tensor4(dtype="float64")
    outs = [
        nn.pool_2d(
            x,
            ws=GEOMETRY[g][0],
            stride=GEOMETRY[g][1],
            ignore_border=GEOMETRY[g][2],
            pad=GEOMETRY[g][3],
            mode=m,
        )
        for g, m in CASES
    ]
    return function([x], outs)(X)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_pool_2d_matches_loops(pooled, case):
    g, mode = CASES[case]
    ws, st, ib, pad = GEOMETRY[g]
    ref = reference(X, ws, st, ib, pad, mode)
    assert pooled[case].shape == ref.shape
    assert nn.pool_output_shape(X.shape, ws, ib, st, pad) == ref.shape
    np.testing.assert_allclose(pooled[case], ref, rtol=1e-12)


def test_theano07_default_keeps_partial_windows():
    # Theano 0.7's max_pool_2d default ignore_border=False: 5x5 pooled by 2 is 3x3, not 2x2 (trap 7)
    x = pt.tensor4(dtype="float64")
    a = np.arange(25.0).reshape(1, 1, 5, 5)
    f = function(
        [x],
        [
            nn.max_pool_2d(x, (2, 2)),
            nn.max_pool_2d(x, (2, 2), ignore_border=True),
            nn.pool_2d(x, ds=(2, 2), st=(1, 1), mode="max"),
            nn.max_pool_2d(-x, (2, 2)),
        ],
    )
    ceil, floor, old_names, negative = f(a)
    np.testing.assert_array_equal(ceil[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    np.testing.assert_array_equal(floor[0, 0], [[6, 8], [16, 18]])
    assert old_names.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(negative[0, 0], -np.array([[0, 2, 4], [10, 12, 14], [20, 22, 24]]))


def test_pool_2d_any_leading_dims():
    x = pt.tensor3(dtype="float64")
    a = RNG.standard_normal((2, 5, 4))
    got = function([x], nn.pool_2d(x, (2, 2), mode="average_exc_pad"))(a)
    np.testing.assert_allclose(got, reference(a, (2, 2), None, False, (0, 0), "average_exc_pad"), rtol=1e-12)


def test_pool_gradients_by_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 4))

    def pools(x):
        outs = [
            nn.pool_2d(x, (2, 2)),
            nn.pool_2d(x, (3, 2), stride=(2, 1), mode="max"),
            nn.pool_2d(x, (3, 3), stride=(2, 2), ignore_border=True, pad=(1, 1), mode="average_inc_pad"),
            nn.pool_2d(x, (2, 3), stride=(1, 2), mode="average_exc_pad"),
            nn.pool_2d(x, (2, 2), mode="sum"),
        ]
        return pt.concatenate([o.flatten() for o in outs])

    verify_grad(pools, [x], rng=rng)


def test_pool_argument_errors():
    x = pt.tensor4()
    with pytest.raises(ConfigError, match="ws"):
        nn.pool_2d(x)
    with pytest.raises(ConfigError, match="ignore_border=True"):
        nn.pool_2d(x, (2, 2), pad=(1, 1))
    with pytest.raises(ConfigError, match="smaller"):
        nn.pool_2d(x, (2, 2), ignore_border=True, pad=(2, 0))
    with pytest.raises(ConfigError, match="mode"):
        nn.pool_2d(x, (2, 2), mode="avg")
    with pytest.raises(ConfigError, match="not both"):
        nn.pool_2d(x, ws=(2, 2), ds=(3, 3))
    with pytest.raises(ConfigError, match="at least 2"):
        nn.pool_2d(pt.vector(), (2, 2))


def test_static_shapes_take_the_same_path_to_the_same_values():
    # with a static input shape the window counts and sizes are Python ints (numpy constants)
    x = pt.tensor4(dtype="float64")
    xs = pt.specify_shape(x, X.shape)
    outs = [nn.pool_2d(xs, (3, 2), stride=(2, 1), mode=m) for m in MODES]
    outs += [nn.pool_2d(xs, (3, 3), stride=(2, 2), ignore_border=True, pad=(1, 2), mode="average_inc_pad")]
    if backend.NAME == "pytensor":  # Aesara's type inference does not carry it through the reduction
        assert outs[0].type.shape[-2:] == (3, 4)  # known when the graph is built
    got = function([x], outs)(X)
    for mode, value in zip(MODES, got):
        np.testing.assert_allclose(value, reference(X, (3, 2), (2, 1), False, (0, 0), mode), rtol=1e-12)
    np.testing.assert_allclose(
        got[-1], reference(X, (3, 3), (2, 2), True, (1, 2), "average_inc_pad"), rtol=1e-12
    )
