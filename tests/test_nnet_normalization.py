"""symtrain.nnet batch normalization and dropout against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import symtrain.nnet as nn
from symtrain.backend import RandomStream, function, pt, shared, shared_rng, verify_grad
from symtrain.errors import ConfigError

pytestmark = pytest.mark.backend
RNG = np.random.default_rng(0)


def test_batch_normalization_inference_form():
    x, g, b, m, s = pt.matrix(dtype="float64"), *(pt.vector(dtype="float64") for _ in range(4))
    a = RNG.standard_normal((4, 3))
    gv, bv, mv, sv = (
        RNG.standard_normal(3),
        RNG.standard_normal(3),
        RNG.standard_normal(3),
        RNG.uniform(1, 2, 3),
    )
    f = function(
        [x, g, b, m, s],
        [nn.batch_normalization(x, g, b, m, s), nn.batch_normalization(x, g, b, m, s, mode="high_mem")],
    )
    low, high = f(a, gv, bv, mv, sv)
    np.testing.assert_allclose(low, (a - mv) * (gv / sv) + bv, rtol=1e-12)
    np.testing.assert_allclose(high, low, rtol=1e-12)
    with pytest.raises(ConfigError, match="mode"):
        nn.batch_normalization(x, g, b, m, s, mode="fast")


def test_batch_normalization_train_spatial_with_running_averages():
    x = pt.tensor4(dtype="float64")
    a = RNG.standard_normal((3, 2, 4, 5)) * 2 + 1
    gamma, beta = RNG.standard_normal(2), RNG.standard_normal(2)  # reduced axes left out, as Theano allowed
    rm = shared(np.zeros(2)), shared(np.ones(2))
    out, mean, invstd, new_mean, new_var = nn.batch_normalization_train(
        x,
        gamma,
        beta,
        axes="spatial",
        epsilon=1e-4,
        running_average_factor=0.25,
        running_mean=rm[0],
        running_var=rm[1],
    )
    test_out = nn.batch_normalization_test(x, gamma, beta, new_mean, new_var, axes="spatial")
    f = function([x], [out, mean, invstd, test_out], updates=[(rm[0], new_mean), (rm[1], new_var)])
    got_out, got_mean, got_invstd, got_test = f(a)
    mu = a.mean(axis=(0, 2, 3), keepdims=True)
    var = a.var(axis=(0, 2, 3), keepdims=True)
    shape = (1, 2, 1, 1)
    np.testing.assert_allclose(got_mean, mu, rtol=1e-12)
    np.testing.assert_allclose(got_invstd, 1 / np.sqrt(var + 1e-4), rtol=1e-12)
    np.testing.assert_allclose(
        got_out, (a - mu) / np.sqrt(var + 1e-4) * gamma.reshape(shape) + beta.reshape(shape), rtol=1e-10
    )
    m = 3 * 4 * 5
    want_mean, want_var = 0.25 * mu.ravel(), 0.75 + 0.25 * var.ravel() * m / (m - 1)
    np.testing.assert_allclose(rm[0].get_value(), want_mean, rtol=1e-12)
    np.testing.assert_allclose(rm[1].get_value(), want_var, rtol=1e-12)
    np.testing.assert_allclose(
        got_test,
        (a - want_mean.reshape(shape)) / np.sqrt(want_var.reshape(shape) + 1e-4) * gamma.reshape(shape)
        + beta.reshape(shape),
        rtol=1e-10,
    )


def test_batch_normalization_train_gradient():
    rng = np.random.default_rng(4)

    def bn(x, g, b):
        return nn.batch_normalization_train(x, g, b, axes="per-activation")[0]

    verify_grad(bn, [rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal(3)], rng=rng)


def test_batch_normalization_argument_errors():
    x = pt.matrix()
    with pytest.raises(ConfigError, match="axes"):
        nn.batch_normalization_train(x, pt.vector(), pt.vector(), axes=(0, 5))
    with pytest.raises(ConfigError, match="gamma"):
        nn.batch_normalization_train(x, pt.tensor3(), pt.vector())
    with pytest.raises(ConfigError, match="both"):
        nn.batch_normalization_train(x, pt.vector(), pt.vector(), running_mean=pt.vector())


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("kind", ["shared_rng", "RandomStream"])
def test_dropout_mask_scaling_and_updates(kind):
    rng = shared_rng(7) if kind == "shared_rng" else RandomStream(7)
    x = pt.matrix(dtype="float32")
    y, updates = nn.dropout(x, 0.25, rng)
    assert (kind == "shared_rng") == bool(updates)
    f = function([x], y, updates=updates)
    ones = np.ones((200, 50), dtype="float32")
    first, second = f(ones), f(ones)
    assert first.dtype == np.float32
    assert set(np.unique(first)) <= {0.0, np.float32(1 / 0.75)}  # inverted scaling: survivors * 1/(1-p)
    assert abs((first == 0).mean() - 0.25) < 0.02
    assert abs(first.mean() - 1.0) < 0.03
    assert not np.array_equal(first, second)  # the rng advances every call


def test_dropout_zero_and_errors():
    x = pt.matrix()
    assert nn.dropout(x, 0, shared_rng(0)) == (x, {})
    with pytest.raises(ConfigError, match="p must"):
        nn.dropout(x, 1.0, shared_rng(0))
    with pytest.raises(ConfigError, match="rng"):
        nn.dropout(x, 0.5, np.random.default_rng(0))
