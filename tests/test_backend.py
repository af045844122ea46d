"""Backend conformance smoke test: runs on PyTensor and, with SYMTRAIN_BACKEND=aesara, on Aesara 2.9."""

from __future__ import annotations

import os

import numpy as np
import pytest

from symtrain import backend
from symtrain.backend import config, function, pt, shared

pytestmark = pytest.mark.backend


def test_the_requested_backend_is_loaded():
    want = os.environ.get("SYMTRAIN_BACKEND", "pytensor").strip().lower() or "pytensor"
    assert backend.NAME == want
    assert backend.graph.__name__ == want
    assert pt.__name__ == f"{want}.tensor"
    assert config.floatX == "float32"  # tests/conftest.py reached this backend's flags variable
    expected_major = {"pytensor": "3.", "aesara": "2.9"}[want]
    assert backend.VERSION.startswith(expected_major)


def test_shared_buffer_givens_and_symbolic_index():
    """The Theano contract symtrain builds on: f(index) with givens slicing a shared buffer, plus updates."""
    data = np.arange(24, dtype="float32").reshape(12, 2)
    buf = shared(data.copy(), name="buf", borrow=True)
    w = shared(np.ones(2, dtype="float32"), name="w")
    index = pt.lscalar("index")
    x = pt.matrix("x", dtype="float32")
    bs = 4
    cost = (x * w).sum()
    f = function([index], cost, givens={x: buf[index * bs:(index + 1) * bs]},
                 updates=[(w, w - np.float32(0.01) * pt.grad(cost, w))])
    assert f(0) == pytest.approx(data[:4].sum())
    np.testing.assert_allclose(w.get_value(), 1 - 0.01 * data[:4].sum(axis=0), rtol=1e-6)
    # refill the buffer in place, as the chunk stream does: the compiled function sees the new rows
    buf.get_value(borrow=True)[:] = -data
    w_before = w.get_value()
    np.testing.assert_allclose(f(2), -(data[8:] * w_before).sum(), rtol=1e-5)


def test_storage_round_trip(tmp_path):
    from symtrain.storage import open_dataset, write_dataset

    x = np.random.default_rng(0).standard_normal((50, 3)).astype("float32")
    y = np.arange(50, dtype="int64")
    write_dataset(tmp_path / "ds", {"x": x, "y": y})
    ds = open_dataset(tmp_path / "ds")
    try:
        assert ds.rows == 50
        np.testing.assert_array_equal(ds["x"], x)
        np.testing.assert_array_equal(ds["y"], y)
        buf = shared(np.zeros((10, 3), dtype="float32"))
        buf.get_value(borrow=True)[:] = ds["x"][10:20]
        np.testing.assert_array_equal(function([], buf * 1)(), x[10:20])
    finally:
        ds.close()
