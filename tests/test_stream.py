"""ChunkStream: bit-exact oracles against in-memory training, edges, transforms, errors and clean shutdown."""

from __future__ import annotations

import _thread
import importlib.util
import os
import threading
import time

import numpy as np
import pytest

from symtrain.backend import config, function, grad, pt, shared, special
from symtrain.errors import ConfigError, DatasetError, StreamError
from symtrain.storage import open_dataset, write_dataset
from symtrain.stream import ChunkStream, ThreadLoader
from symtrain.stream.load import Load, sources_of

pytestmark = pytest.mark.backend  # nothing PyTensor-specific: also passes under SYMTRAIN_BACKEND=aesara

ROWS, FEATURES, CLASSES, BS = 1000, 8, 3, 32


_PREEXISTING: set[threading.Thread] = set()


def loader_threads() -> list[threading.Thread]:
    """Loader threads alive now that were not alive when the current test started (other tests' leaks
    in the same worker process are their business)."""
    return [t for t in threading.enumerate() if t.name == "symtrain-loader" and t not in _PREEXISTING]


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test: ``interrupt_main`` does nothing under SIG_IGN/SIG_DFL and
    only logs under a handler an earlier test in this worker left installed (a fit's graceful stop)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _snapshot_threads():
    _PREEXISTING.clear()
    _PREEXISTING.update(threading.enumerate())
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, ROWS).astype(np.int64)
    path = write_dataset(tmp_path_factory.mktemp("stream") / "ds", {"x": x, "y": y})
    return path, x, y


@pytest.fixture(scope="module")
def logreg():
    """A tiny logistic regression with plain SGD, built on placeholders x, y (compiled per data source)."""
    x, y = pt.matrix("x", dtype="float32"), pt.vector("y", dtype="int64")
    w = shared(np.zeros((FEATURES, CLASSES), dtype=np.float32), name="w")
    b = shared(np.zeros(CLASSES, dtype=np.float32), name="b")
    nll = -pt.log(special.softmax(x @ w + b, axis=-1))[pt.arange(y.shape[0]), y]
    lr = np.float32(0.1)

    def compile_with(index, givens, cost=None):
        c = nll.mean() if cost is None else cost(nll)
        gw, gb = grad(c, [w, b])
        return function([index], c, updates=[(w, w - lr * gw), (b, b - lr * gb)], givens=givens)

    def reset():
        w.set_value(np.zeros((FEATURES, CLASSES), dtype=np.float32))
        b.set_value(np.zeros(CLASSES, dtype=np.float32))

    def params():
        return w.get_value().copy(), b.get_value().copy()

    return {"x": x, "y": y, "compile": compile_with, "reset": reset, "params": params}


def in_memory_training(logreg, x, y, orders, steps, cost=None):
    """The tutorial loop: the whole (permuted) dataset in one shared variable, sliced by the index."""
    i = pt.lscalar("i")
    xs, ys = shared(x), shared(y)
    f = logreg["compile"](i, {logreg["x"]: xs[i * BS:(i + 1) * BS], logreg["y"]: ys[i * BS:(i + 1) * BS]},
                          cost)
    logreg["reset"]()
    for order in orders:
        xs.set_value(x[order]), ys.set_value(y[order])
        for s in range(steps):
            f(s)
    return logreg["params"]()


def streamed_training(logreg, stream, epochs, cost=None):
    f = logreg["compile"](stream.index, stream.givens({logreg["x"]: "x", logreg["y"]: "y"}), cost)
    logreg["reset"]()
    steps = 0
    for e in range(epochs):
        for chunk in stream.epoch(e):
            for i in chunk.indices:
                f(i)
                steps += 1
    assert steps == epochs * stream.steps_per_epoch
    return logreg["params"]()


def bits_equal(a, b):
    return a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


HAVE_PROCESS_LOADER = importlib.util.find_spec("symtrain.stream.process_loader") is not None


@pytest.mark.parametrize("mix, loader", [
    (1, "thread"), (2, "thread"),
    pytest.param(2, "process", marks=pytest.mark.skipif(not HAVE_PROCESS_LOADER, reason="no process loader")),
])
def test_shuffled_stream_equals_in_memory_training_to_the_bit(data, logreg, mix, loader):
    path, x, y = data
    with ChunkStream(path, BS, 200, seed=11, mix=mix, loader=loader) as stream:
        assert stream.chunk_rows == 192 and stream.steps_per_epoch == ROWS // BS
        got = streamed_training(logreg, stream, epochs=2)
        orders = [stream.epoch_order(e) for e in range(2)]
    assert not np.array_equal(orders[0], orders[1])
    want = in_memory_training(logreg, x, y, orders, ROWS // BS)
    assert all(bits_equal(g, w) for g, w in zip(got, want))
    assert np.abs(got[0]).sum() > 0  # it trained


def test_sequential_stream_equals_the_plain_tutorial_loop(data, logreg):
    path, x, y = data
    with ChunkStream(path, BS, 200, policy="sequential") as stream:
        got = streamed_training(logreg, stream, epochs=1)
    want = in_memory_training(logreg, x, y, [np.arange(ROWS)], ROWS // BS)  # n_batches = N // bs
    assert all(bits_equal(g, w) for g, w in zip(got, want))


def test_partial_batch_masked_cost_matches_in_memory(data, logreg):
    path, x, y = data
    with ChunkStream(path, BS, 200, seed=3, drop_last=False) as stream:
        assert stream.steps_per_epoch == -(-ROWS // BS)
        valid, mask = stream.batch_valid(), stream.batch_mask()
        got = streamed_training(logreg, stream, 1, cost=lambda nll: (nll * mask).sum()
                                / valid.astype("float32"))
        order = stream.epoch_order(0)
    want = in_memory_training(logreg, x, y, [order], stream.steps_per_epoch)  # last slice is 8 rows
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_edges_never_show_stale_rows_nor_change_shape(tmp_path):
    y = np.arange(1, 1001, dtype=np.int64)  # 0 marks padding
    path = write_dataset(tmp_path / "ds", {"y": y})
    with ChunkStream(path, BS, 200, seed=5, drop_last=False) as stream:
        probe = function([stream.index], [stream.batch("y"), stream.batch_valid(), stream.batch_mask()])
        seen, shapes = [], set()
        for chunk in stream.epoch(0):
            buf = stream.buffers["y"].get_value(borrow=True)
            shapes.add(buf.shape)
            assert type(buf) is np.ndarray and buf.flags.c_contiguous and buf.flags.writeable
            assert (buf[chunk.n_valid:] == 0).all()
            for i in chunk.indices:
                rows, nv, m = probe(i)
                assert int(nv) == int((rows > 0).sum()) and np.array_equal(m,
                                                                           (rows > 0).astype(config.floatX))
                seen.append(rows[:int(nv)])
        assert shapes == {(192, )}
        assert int(nv) == ROWS % BS  # the last batch is the partial one
        seen = np.concatenate(seen)
        assert np.array_equal(np.sort(seen), y) and np.array_equal(seen, y[stream.epoch_order(0)])


def test_start_step_resumes_the_same_batches(data):
    path, _, y = data
    with ChunkStream(path, BS, 200, seed=2, mix=2, fields=["y"]) as stream:
        def collect(e, start):
            out, steps = [], []
            for chunk in stream.epoch(e, start_step=start):
                buf = stream.buffers["y"].get_value(borrow=True)
                out += [buf[i * BS:(i + 1) * BS].copy() for i in chunk.indices]
                steps += [chunk.first_step + j for j in range(len(chunk.indices))]
            return np.concatenate(out) if out else np.zeros(0, np.int64), steps
        full, steps = collect(1, 0)
        assert steps == list(range(stream.steps_per_epoch))
        assert np.array_equal(full, y[stream.epoch_order(1)[:len(full)]])
        for k in (1, 5, 6, 7, stream.steps_per_epoch - 1, stream.steps_per_epoch):
            part, steps = collect(1, k)
            assert steps == list(range(k, stream.steps_per_epoch))
            assert np.array_equal(part, full[k * BS:])
        # out-of-order epochs (the speculative fill of the next epoch is discarded) still give the plan
        again, _ = collect(0, 0)
        assert np.array_equal(again, y[stream.epoch_order(0)[:len(again)]])


def test_iterating_the_stream_yields_local_indices_per_epoch(data):
    path, _, _ = data
    with ChunkStream(path, BS, 200, fields=["y"]) as stream:
        for _ in range(2):
            idx = list(stream)
            assert [len(r) for r in idx] == [6, 6, 6, 6, 6, 1] and all(r.start == 0 for r in idx)


def test_transform_runs_in_the_loader_on_valid_rows_only(tmp_path):
    y = np.arange(1, 1001, dtype=np.int64)
    path = write_dataset(tmp_path / "ds", {"y": y})
    calls = []

    def plus(arrays):
        calls.append((threading.current_thread().name, arrays["y"].shape))
        arrays["y"] += 10_000

    with ChunkStream(path, BS, 200, seed=1, drop_last=False, transform=plus) as stream:
        for chunk in stream.epoch(0):
            buf = stream.buffers["y"].get_value(borrow=True)
            assert (buf[:chunk.n_valid] > 10_000).all() and (buf[chunk.n_valid:] == 0).all()
    assert calls and all(name == "symtrain-loader" for name, _ in calls)
    assert sorted(shape[0] for _, shape in calls)[:2] == [ROWS % 192, 192]


def test_loader_failure_in_transform_is_a_stream_error_with_cause(data):
    path, _, _ = data

    def bad(arrays):
        raise ValueError("bad augmentation")

    with ChunkStream(path, BS, 200, transform=bad) as stream:
        with pytest.raises(StreamError, match="bad augmentation") as info:
            for _ in stream.epoch(0):
                pass
        assert isinstance(info.value.__cause__, ValueError)
        assert not loader_threads()


def test_truncated_file_after_opening_surfaces_in_caller_and_leaves_no_thread(tmp_path):
    rng = np.random.default_rng(0)
    path = write_dataset(tmp_path / "ds", {"x": rng.standard_normal((1000, 8)).astype(np.float32)})
    fds = len(os.listdir("/proc/self/fd"))
    with ChunkStream(path, BS, 200, policy="sequential") as stream:
        it = stream.epoch(0)
        next(it)  # the first chunk is fine
        os.truncate(path / "x.npy", 128 + 300 * 8 * 4)  # keeps 300 rows: fills from row 384 on fail
        with pytest.raises(StreamError) as info:
            for _ in it:
                pass
        assert isinstance(info.value.__cause__, DatasetError) and "x.npy" in str(info.value)
        assert "short read" in str(info.value)
        assert not loader_threads()
    assert len(os.listdir("/proc/self/fd")) == fds


def test_early_break_exception_and_close_join_the_loader(data):
    path, _, _ = data
    fds = len(os.listdir("/proc/self/fd"))
    stream = ChunkStream(path, BS, 200)
    for _ in stream.epoch(0):
        assert loader_threads()
        break
    assert not loader_threads()
    assert (stream.buffers["x"].get_value(borrow=True) == 0).all()  # parked, not aliasing a loader set
    with pytest.raises(KeyboardInterrupt):
        for _ in stream.epoch(1):
            raise KeyboardInterrupt
    assert not loader_threads()
    held = iter(stream)  # a suspended, still referenced iterator ...
    next(held)
    it = stream.epoch(2)  # ... is closed when another epoch starts
    next(it)
    assert len(loader_threads()) == 1 and list(held) == []
    stream.close()
    stream.close()  # idempotent
    assert not loader_threads() and len(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(StreamError, match="closed"):
        stream.epoch(0)


def test_full_epochs_keep_one_loader_and_prefetch_the_next_epoch(data):
    path, _, _ = data
    with ChunkStream(path, BS, 200) as stream:
        for e in range(3):
            for _ in stream.epoch(e):
                pass
            assert len(loader_threads()) == 1  # kept for the next epoch, with its first fill in flight
        assert stream.wait_seconds >= 0
    assert not loader_threads()


def test_thread_loader_alternates_two_sets(data):
    path, _, y = data
    ds = open_dataset(path)
    src = sources_of(ds, ["y"])
    with ThreadLoader(src, 64) as loader:
        loader.submit(Load(((0, 64),), None, 64))
        with pytest.raises(StreamError, match="before wait"):
            loader.submit(Load(((0, 64),), None, 64))
        a = loader.wait()
        loader.submit(Load(((100, 110),), np.arange(10)[::-1].copy(), 10))
        b = loader.wait()
        assert a["y"] is not b["y"] and np.array_equal(a["y"], y[:64])
        assert np.array_equal(b["y"][:10], y[100:110][::-1]) and (b["y"][10:] == 0).all()
        loader.submit(Load(((0, 8),), None, 8))
        assert loader.wait()["y"] is a["y"]


def test_argument_errors(data, tmp_path):
    path, _, _ = data
    with pytest.raises(ConfigError, match="no field 'z'"):
        ChunkStream(path, BS, 200, fields=["z"])
    with pytest.raises(ConfigError, match="float64 is needed"):
        ChunkStream(path, BS, 200, dtypes={"x": "float64"})
    with pytest.raises(ConfigError, match="larger than the dataset"):
        ChunkStream(path, 2000, 4000)
    with pytest.raises(ConfigError, match="chunk_rows=16 must be >= batch_size=32"):
        ChunkStream(path, BS, 16)
    with pytest.raises(ConfigError, match="batch_size"):
        ChunkStream(path, 0, 16)
    with pytest.raises(ConfigError, match="loader must be one of"):
        ChunkStream(path, BS, 200, loader="fork")
    with pytest.raises(ConfigError, match="dataset_or_path"):
        ChunkStream(np.zeros((10, 2)), BS, 200)
    with ChunkStream(path, BS, 200) as stream:
        with pytest.raises(ConfigError, match="unknown field 'z'"):
            stream.batch("z")
        with pytest.raises(ConfigError, match="float64"):
            stream.givens({pt.matrix("x", dtype="float64"): "x"})
        with pytest.raises(ConfigError, match="start_step"):
            stream.epoch(0, start_step=stream.steps_per_epoch + 1)
        with pytest.raises(ConfigError, match="epoch"):
            stream.epoch(-1)
    empty = write_dataset(tmp_path / "empty", {"x": np.zeros((0, 3), np.float32)})
    with pytest.raises(ConfigError, match="empty"):
        ChunkStream(empty, BS, 200)
    if not HAVE_PROCESS_LOADER:
        with pytest.raises(ConfigError, match="loader='process' is not available"):
            ChunkStream(path, BS, 200, loader="process")


def test_split_streams_only_its_rows_and_state_names_them(data):
    path, _, y = data
    ds = open_dataset(path).split(100, 500)
    with ChunkStream(ds, BS, 128, seed=4, fields=["y"]) as stream:
        got = []
        for chunk in stream.epoch(0):
            buf = stream.buffers["y"].get_value(borrow=True)
            got += [buf[i * BS:(i + 1) * BS].copy() for i in chunk.indices]
        got = np.concatenate(got)
        assert np.array_equal(got, y[100:500][stream.epoch_order(0)[:len(got)]])
        state = stream.state()
        assert state["plan"]["start"] == 100 and state["rows"] == 400 and "[100:500]" in state["fingerprint"]
        stream.check_state(state)
        with pytest.raises(Exception, match="seed"):
            stream.check_state({**state, "plan": {**state["plan"], "seed": 5}})


def _slow(arrays):
    time.sleep(0.3)


def test_ctrl_c_while_waiting_for_a_fill_joins_the_loader(data, python_sigint):
    path, _, _ = data
    with ChunkStream(path, BS, 200, transform=_slow) as stream:
        timer = threading.Timer(0.1, _thread.interrupt_main)
        with pytest.raises(KeyboardInterrupt):  # started inside: a late-scheduled test still catches it
            timer.start()
            for _ in stream.epoch(0):
                time.sleep(1)  # usually interrupts the first fill (0.3 s); on a loaded machine later
        timer.join()
        assert not loader_threads()


def test_ctrl_c_while_the_loader_threads_start_leaves_no_thread(data, monkeypatch, python_sigint):
    """On a loaded machine a Ctrl-C can land while the loader is being built: nothing may be left behind."""
    path, _, _ = data
    start = threading.Thread.start

    def start_then_interrupt(self):
        start(self)
        if self.name.startswith("symtrain-loader"):
            _thread.interrupt_main()

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    with ChunkStream(path, BS, 200, transform=_slow, workers=2) as stream:
        with pytest.raises(KeyboardInterrupt):
            for _ in stream.epoch(0):
                pass
        monkeypatch.undo()
        assert not [t for t in threading.enumerate() if t.name.startswith("symtrain-loader")]
