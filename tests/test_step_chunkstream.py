"""compile_step / compile_eval on the real ChunkStream: shuffled chunks, a short last chunk, a partial
batch."""

from __future__ import annotations

import numpy as np
import pytest

import symtrain as st
from symtrain.backend import config, pt, shared
from symtrain.storage import write_dataset

ROWS, FEATURES, BS, CHUNK = 50, 8, 4, 16
RNG = np.random.default_rng(3)
X = RNG.standard_normal((ROWS, FEATURES)).astype(np.float32)
Y = RNG.integers(0, 3, ROWS).astype(np.int64)
W0 = (RNG.standard_normal(FEATURES) * 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("step") / "ds", {"x": X, "y": Y})


def regression(stream, tag):
    """Least squares of y (as float) on x; the cost is the mean over the batch's valid rows."""
    w = shared(W0.copy(), name=f"{tag}w")
    err = pt.sqr(stream.batch("x") @ w - stream.batch("y").astype(config.floatX))
    cost = pt.sum(err * stream.batch_mask()) / stream.batch_valid().astype(config.floatX)
    return cost, err, w


def np_step(w, rows, lr):
    x, y = X[rows].astype(np.float64), Y[rows].astype(np.float64)
    return w - lr * 2 * x.T @ (x @ w - y) / len(rows)


@pytest.mark.backend
def test_accumulated_epoch_matches_numpy_over_epoch_order(data):
    """13 steps (the last batch has 2 valid rows), groups of 3, the partial group flushed at epoch end."""
    with st.ChunkStream(data, batch_size=BS, chunk_rows=CHUNK, policy="shuffle", seed=5,
                        drop_last=False) as stream:
        assert stream.steps_per_epoch == 13
        cost, err, w = regression(stream, "cs_")
        step = st.compile_step(cost, [w], stream, st.optim.sgd(0.05), outputs={"err": err}, accumulate=3)
        losses = {}
        for chunk in stream.epoch(0):
            for i in chunk.indices:
                losses[chunk.first_step + i - chunk.indices[0]] = step(i)["loss"]
        assert step.pending == 1 and step.flush() and step.pending == 0
        order = stream.epoch_order(0)
    assert len(losses) == 13
    want = W0.astype(np.float64)
    for g in range(5):
        rows = order[g * 3 * BS:(g + 1) * 3 * BS]       # the last group holds only the 2-row batch
        want = np_step(want, rows, 0.05)
    np.testing.assert_allclose(w.get_value(), want, rtol=1e-5, atol=1e-6)
    # the loss reported for the partial batch is the mean over its 2 valid rows (weights after group 4)
    w4 = W0.astype(np.float64)
    for g in range(4):
        w4 = np_step(w4, order[g * 12:(g + 1) * 12], 0.05)
    last = order[48:]
    assert losses[12] == pytest.approx(np.mean((X[last] @ w4 - Y[last]) ** 2), rel=1e-4)


@pytest.mark.backend
def test_eval_over_epoch_weights_the_partial_batch(data):
    with st.ChunkStream(data, batch_size=BS, chunk_rows=CHUNK, policy="sequential", drop_last=False,
                        name="val") as stream:
        cost, err, w = regression(stream, "ev_")
        ev = st.compile_eval({"loss": cost, "err": err}, stream)
        total = ev.run(0)
        again = ev.run(1)
    r = (X @ W0 - Y) ** 2
    assert total["rows"] == ROWS
    assert total["loss"] == pytest.approx(r.mean(), rel=1e-5)
    assert total["err"] == pytest.approx(r.mean(), rel=1e-5)
    assert again == total


@pytest.mark.backend
def test_givens_through_the_stream(data):
    """A Theano-style graph on free inputs compiled with givens={var: field}."""
    with st.ChunkStream(data, batch_size=BS, chunk_rows=CHUNK, policy="sequential", name="gv") as stream:
        x, y = pt.matrix("x"), pt.vector("y", dtype="int64")
        w = shared(W0.copy(), name="gv_w")
        cost = pt.mean(pt.sqr(x @ w - y.astype(config.floatX)))
        step = st.compile_step(cost, [w], stream, st.optim.sgd(0.05), givens={x: "x", y: "y"})
        for chunk in stream.epoch(0):
            for i in list(chunk.indices)[:2]:
                step(i)
            break
    want = np_step(np_step(W0.astype(np.float64), range(4), 0.05), range(4, 8), 0.05)
    np.testing.assert_allclose(w.get_value(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_numba_mode_matches_fast_compile(data):
    """The default PyTensor 3 backend gives the same Adam trajectory as FAST_COMPILE."""
    results = []
    for mode in ("FAST_COMPILE", "NUMBA"):
        with st.ChunkStream(data, batch_size=BS, chunk_rows=CHUNK, policy="sequential",
                            name=f"m{mode}") as stream:
            cost, _, w = regression(stream, f"{mode}_")
            step = st.compile_step(cost, [w], stream, st.optim.adam(0.01), accumulate=2, mode=mode)
            assert step.mode == mode
            for chunk in stream.epoch(0):
                for i in chunk.indices:
                    step(i)
            step.flush()
            results.append(w.get_value())
    assert step.linker == "NumbaLinker"
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)
