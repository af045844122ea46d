"""symtrain.nnet activations, softmax, rounding and losses against NumPy, incl. finite-difference grads."""

from __future__ import annotations

import numpy as np
import pytest

import symtrain.nnet as nn
from symtrain.backend import function, pt, verify_grad
from symtrain.errors import ConfigError

pytestmark = pytest.mark.backend
RNG = np.random.default_rng(0)


def np_softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_sigmoid_and_softplus_are_the_graph_library_objects():
    # legacy scripts compare `activation == T.nnet.sigmoid` after migration (MIGRATION_NOTES trap 4)
    assert nn.sigmoid is pt.sigmoid
    assert nn.softplus is pt.softplus
    assert nn.ultra_fast_sigmoid is nn.sigmoid


@pytest.fixture(scope="module")
def elementwise():
    x = pt.vector(dtype="float64")
    outs = [
        nn.sigmoid(x),
        nn.softplus(x),
        nn.relu(x),
        nn.relu(x, alpha=0.1),
        nn.elu(x),
        nn.elu(x, 0.5),
        nn.hard_sigmoid(x),
        nn.round(x),
        nn.round(x, mode="half_to_even"),
        pt.grad(nn.relu(x).sum(), x),
        pt.grad(nn.relu(x, 0.1).sum(), x),
    ]
    return function([x], outs)


def test_elementwise_values(elementwise):
    a = np.array([-3.0, -2.5, -0.5, 0.0, 0.5, 1.5, 2.5, 4.0])
    sig, sp, relu, leaky, elu, elu_half, hard, rnd, rnd_even, grelu, gleaky = elementwise(a)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-a)), rtol=1e-12)
    np.testing.assert_allclose(sp, np.log1p(np.exp(a)), rtol=1e-12)
    np.testing.assert_array_equal(relu, np.maximum(a, 0))
    np.testing.assert_allclose(leaky, np.where(a > 0, a, 0.1 * a), rtol=1e-12)
    np.testing.assert_allclose(elu, np.where(a > 0, a, np.expm1(a)), rtol=1e-12)
    np.testing.assert_allclose(elu_half, np.where(a > 0, a, 0.5 * np.expm1(a)), rtol=1e-12)
    np.testing.assert_allclose(hard, np.clip(0.2 * a + 0.5, 0, 1), rtol=1e-12)
    # Theano 0.7 rounding: halves away from zero (trap 6); the modern default rounds to even
    np.testing.assert_array_equal(rnd, [-3, -3, -1, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(rnd_even, np.round(a))
    # Theano's relu formula 0.5 * (x + |x|): gradient 0.5 at exactly zero
    np.testing.assert_array_equal(grelu, [0, 0, 0, 0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(gleaky, [0.1, 0.1, 0.1, 0.55, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def softmaxes():
    m, v = pt.matrix(dtype="float64"), pt.vector(dtype="float64")
    return function([m, v], [nn.softmax(m), nn.log_softmax(m), nn.softmax(v), nn.log_softmax(v)])


def test_softmax_is_per_row_and_pads_vectors(softmaxes):
    a = RNG.standard_normal((3, 5)) * 3
    v = RNG.standard_normal(4)
    sm, lsm, smv, lsmv = softmaxes(a, v)
    np.testing.assert_allclose(sm, np_softmax(a), rtol=1e-12)
    np.testing.assert_allclose(sm.sum(axis=1), 1.0)  # per row, not over the whole matrix (trap 1)
    np.testing.assert_allclose(lsm, np.log(np_softmax(a)), rtol=1e-12)
    assert smv.shape == (1, 4) and lsmv.shape == (1, 4)  # Theano padded a vector to a row (trap 3)
    np.testing.assert_allclose(smv[0], np_softmax(v), rtol=1e-12)
    np.testing.assert_allclose(lsmv[0], np.log(np_softmax(v)), rtol=1e-12)


def test_softmax_rejects_scalars():
    with pytest.raises(ConfigError, match="softmax"):
        nn.softmax(pt.scalar())


@pytest.fixture(scope="module")
def losses():
    p, t, y = pt.matrix(dtype="float64"), pt.matrix(dtype="float64"), pt.vector(dtype="int64")
    o, b = pt.vector(dtype="float64"), pt.vector(dtype="float64")
    outs = [
        nn.categorical_crossentropy(p, t),
        nn.categorical_crossentropy(p, y),
        nn.binary_crossentropy(o, b),
    ]
    return function([p, t, y, o, b], outs)


def test_crossentropies(losses):
    p = np_softmax(RNG.standard_normal((4, 3)))
    y = np.array([0, 2, 1, 2])
    onehot = np.eye(3)[y]
    o = np.array([0.1, 0.5, 0.9, 0.7])
    b = np.array([0.0, 1.0, 1.0, 0.3])
    dense, indexed, bce = losses(p, onehot, y, o, b)
    np.testing.assert_allclose(dense, -np.log(p[np.arange(4), y]), rtol=1e-12)
    np.testing.assert_allclose(indexed, dense, rtol=1e-12)
    np.testing.assert_allclose(bce, -(b * np.log(o) + (1 - b) * np.log(1 - o)), rtol=1e-12)


def test_crossentropy_rejects_float_indices_and_bad_ranks():
    with pytest.raises(ConfigError, match="integer"):
        nn.categorical_crossentropy(pt.matrix(), pt.vector())
    with pytest.raises(ConfigError, match="true_dist"):
        nn.categorical_crossentropy(pt.matrix(), pt.tensor3())


def test_gradients_by_finite_differences():
    rng = np.random.default_rng(1)
    y = np.array([1, 0, 2])

    def composite(a, t, o):
        # one graph covering softmax, log_softmax, elu, softplus, crossentropies (one verify_grad call)
        p = nn.softmax(a)
        return (
            nn.categorical_crossentropy(p, t).sum()
            + nn.categorical_crossentropy(p, y).sum()
            + nn.log_softmax(a * 0.5).sum(axis=0).dot(nn.elu(a[0]))
            + nn.softplus(a).sum()
            + nn.binary_crossentropy(nn.sigmoid(o), 0.3).sum()
            + nn.relu(o, 0.2).sum()
        )

    a = rng.standard_normal((3, 3))
    t = np_softmax(rng.standard_normal((3, 3)))
    o = rng.standard_normal(5) + 0.1  # away from relu's kink at 0
    verify_grad(composite, [a, t, o], rng=rng)


def test_bad_round_mode():
    with pytest.raises(ConfigError, match="mode"):
        nn.round(pt.vector(), mode="half_up")
