"""ProcessLoader: same arrays as an in-process ``fill``, errors surface with their cause, nothing leaks.

A spawned worker costs a fraction of a second here (it imports numpy only), so most tests share one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from symtrain.errors import ConfigError, DatasetError, StreamError
from symtrain.storage import open_dataset, write_dataset
from symtrain.stream.load import Load, fill, sources_of
from symtrain.stream.prefetch import ThreadLoader
from symtrain.stream.process_loader import ProcessLoader
from symtrain.stream.transform import Augment

CHUNK = 96
GRAPH_LIBRARIES = ("pytensor", "aesara", "numba")


def double_x(arrays: dict[str, np.ndarray], n_valid: int) -> None:
    """A transform that also proves the worker is lean: no graph library, no re-imported __main__."""
    loaded = [m for m in sys.modules if m.split(".")[0] in GRAPH_LIBRARIES]
    if getattr(sys.modules["__main__"], "__file__", None):
        loaded.append(f"the caller's script {sys.modules['__main__'].__file__}")
    if loaded:
        raise RuntimeError(f"the loader process imported {loaded}")
    arrays["x"][:n_valid] *= 2


def failing(arrays: dict[str, np.ndarray], n_valid: int) -> None:
    raise ValueError(f"bad chunk of {n_valid} rows")


def _shm_names(loader: ProcessLoader) -> list[str]:
    return [s.name for s in loader._res.shms]


def _gone(names: list[str]) -> bool:
    return not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)


def _random_load(rng: np.random.Generator, rows: int) -> Load:
    """1-3 disjoint ranges of at most CHUNK rows in total, permuted or not."""
    k = int(rng.integers(1, 4))
    cuts = np.sort(rng.choice(np.arange(1, rows), size=2 * k, replace=False))
    ranges, total = [], 0
    for a, b in zip(cuts[0::2], cuts[1::2]):
        b = min(int(b), int(a) + CHUNK - total)
        if b > a:
            ranges.append((int(a), b))
            total += b - int(a)
    perm = rng.permutation(total) if rng.random() < 0.7 else None
    return Load(tuple(ranges), perm, total)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("pl") / "ds"
    write_dataset(path, {"x": rng.standard_normal((700, 5)).astype(np.float32),
                         "y": rng.integers(0, 9, 700).astype(np.int64),
                         "img": rng.integers(0, 255, (700, 3, 2)).astype(np.uint8)})
    return open_dataset(path)


@pytest.fixture(scope="module")
def loader(dataset):
    with ProcessLoader(sources_of(dataset), CHUNK) as ld:
        yield ld


def _reference(sources, load: Load) -> dict[str, np.ndarray]:
    out = {k: s.empty(CHUNK) for k, s in sources.items()}
    out = {k: v + 7 if v.dtype.kind == "f" else v for k, v in out.items()}  # stale values must be zeroed
    fill(sources, load, out)
    return out


def test_same_arrays_as_fill_for_random_loads(loader, dataset):
    rng = np.random.default_rng(0)
    seen_ids = set()
    for _ in range(25):
        load = _random_load(rng, dataset.rows)
        loader.submit(load)
        got = loader.wait()
        ref = _reference(loader.sources, load)
        for name in ref:
            assert got[name].dtype == ref[name].dtype and got[name].shape == ref[name].shape
            assert got[name].flags.c_contiguous and got[name].flags.writeable
            np.testing.assert_array_equal(got[name], ref[name])
        seen_ids.add(id(got["x"]))
    assert len(seen_ids) == 2  # exactly two staging sets, allocated once


def test_next_fill_never_touches_the_set_handed_out(loader, dataset):
    loader.submit(Load(((0, CHUNK),), None, CHUNK))
    first = loader.wait()
    kept = {k: v.copy() for k, v in first.items()}
    loader.submit(Load(((300, 300 + CHUNK),), np.arange(CHUNK)[::-1].copy(), CHUNK))
    second = loader.wait()
    assert second["x"] is not first["x"]
    for name in kept:
        np.testing.assert_array_equal(first[name], kept[name])
    np.testing.assert_array_equal(second["x"], np.asarray(dataset["x"][300:300 + CHUNK])[::-1])


def test_worker_error_is_a_stream_error_with_its_cause_and_the_loader_goes_on(dataset):
    with ProcessLoader(sources_of(dataset), CHUNK, transform=failing) as ld:
        ld.submit(Load(((0, 10),), None, 10))
        with pytest.raises(StreamError, match="bad chunk of 10 rows") as info:
            ld.wait()
        cause = info.value.__cause__
        assert isinstance(cause, ValueError)
        assert any("Traceback in the loader process" in n and "failing" in n for n in cause.__notes__)
        ld.submit(Load(((0, 10),), None, 10))  # the worker survives a failed fill
        with pytest.raises(StreamError):
            ld.wait()


def test_transform_runs_in_a_lean_worker(dataset):
    with ProcessLoader(sources_of(dataset), CHUNK, transform=double_x) as ld:
        ld.submit(Load(((5, 50),), None, 45))
        got = ld.wait()
        np.testing.assert_array_equal(got["x"][:45], 2 * np.asarray(dataset["x"][5:50]))
        assert not got["x"][45:].any()


def test_unpicklable_transform_is_a_clear_config_error(dataset):
    before = mp.active_children()
    with pytest.raises(ConfigError, match="loader='thread'"):
        ProcessLoader(sources_of(dataset), CHUNK, transform=lambda arrays, n: None)
    assert mp.active_children() == before


def test_truncated_file_names_the_file_and_does_not_hang(tmp_path):
    rng = np.random.default_rng(2)
    path = write_dataset(tmp_path / "t", {"x": rng.standard_normal((400, 4)).astype(np.float32)})
    ds = open_dataset(path)
    xfile = ds.field("x").path
    with ProcessLoader(sources_of(ds), CHUNK) as ld:
        os.truncate(xfile, os.path.getsize(xfile) - 100 * 16)  # after opening: the last 100 rows vanish
        ld.submit(Load(((350, 400),), None, 50))
        start = time.monotonic()
        with pytest.raises(StreamError, match=str(xfile)) as info:
            ld.wait()
        assert time.monotonic() - start < 10
        assert isinstance(info.value.__cause__, DatasetError)
        assert info.value.__cause__.path == Path(xfile)


def test_killed_worker_is_detected_and_everything_released(dataset):
    ld = ProcessLoader(sources_of(dataset), CHUNK)
    names, pid = _shm_names(ld), ld.pid
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(StreamError, match="SIGKILL"):
        ld.submit(Load(((0, 10),), None, 10))
        ld.wait()
    assert time.monotonic() - start < 10
    ld.close()
    assert all(p.pid != pid for p in mp.active_children())
    assert _gone(names)


def test_close_during_a_pending_fill_and_twice(dataset):
    ld = ProcessLoader(sources_of(dataset), CHUNK)
    names, pid = _shm_names(ld), ld.pid
    ld.submit(Load(((0, CHUNK),), np.arange(CHUNK), CHUNK))
    ld.close()
    ld.close()
    assert all(p.pid != pid for p in mp.active_children())
    assert _gone(names)
    with pytest.raises(StreamError, match="closed"):
        ld.wait()


def test_dropped_loader_is_finalized(dataset):
    ld = ProcessLoader(sources_of(dataset), CHUNK)
    names, pid = _shm_names(ld), ld.pid
    ld.submit(Load(((0, 8),), None, 8))
    arrays = ld.wait()
    del ld
    assert all(p.pid != pid for p in mp.active_children())
    assert _gone(names)
    assert arrays["x"].shape == (CHUNK, 5)  # arrays handed out stay valid: the mapping dies with them
    float(arrays["x"].sum())


def test_misuse_is_reported(loader):
    with pytest.raises(StreamError, match="no fill submitted"):
        loader.wait()
    with pytest.raises(ConfigError, match="rows"):
        loader.submit(Load(((0, CHUNK + 1),), None, CHUNK + 1))
    with pytest.raises(ConfigError, match="chunk_rows"):
        ProcessLoader(loader.sources, 0)


SCRIPT = """
import os, signal, sys
import numpy as np
from symtrain.storage import open_dataset
from symtrain.stream.load import Load, sources_of
from symtrain.stream.process_loader import ProcessLoader
import test_process_loader as t

workers = int(sys.argv[3])
busy = sys.argv[2] == "sigkill-busy"  # the worker is inside a transform that does not return
ld = ProcessLoader(sources_of(open_dataset(sys.argv[1])), 64,
                   transform=t.stuck if busy else t.double_x if workers == 1 else None, workers=workers)
if not busy:
    ld.submit(Load(((0, 64),), None, 64))
    ld.wait()
ld.submit(Load(((64, 128),), None, 64))
print(",".join(map(str, ld.pids)), *t._shm_names(ld), flush=True)
if sys.argv[2] == "interrupt":
    raise KeyboardInterrupt  # a Ctrl-C in the middle of training, with a fill pending and no close()
os.kill(os.getpid(), signal.SIGKILL)
"""


def stuck(arrays: dict[str, np.ndarray], n_valid: int) -> None:
    time.sleep(600)


@pytest.mark.parametrize("how, workers", [("interrupt", 1), ("sigkill", 1), ("sigkill", 2),
                                          ("sigkill-busy", 1)])
def test_parent_interrupted_or_killed_leaves_no_worker_and_no_shared_memory(dataset, tmp_path, how, workers):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    run = subprocess.run([sys.executable, str(script), str(dataset.path), how, str(workers)],
                         capture_output=True,
                         text=True, env=env, timeout=60)
    assert run.stdout, run.stderr
    pids, *names = run.stdout.split()
    pids = [int(p) for p in pids.split(",")]
    assert len(pids) == workers
    assert "imported" not in run.stderr  # the transform found no graph library and no re-imported script
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (_gone(names) and not any(map(_alive, pids))):
        time.sleep(0.1)
    assert _gone(names), f"/dev/shm leftovers: {names}"
    assert not any(map(_alive, pids))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


MAIN_TRANSFORM_SCRIPT = """
import sys
import numpy as np
from symtrain.storage import open_dataset
from symtrain.stream.load import Load, sources_of
from symtrain.stream.process_loader import ProcessLoader
from symtrain.stream.transform import Augment


def negate(arrays):
    arrays["x"] *= -1


if __name__ == "__main__":
    ds = open_dataset(sys.argv[1])
    src = sources_of(ds)
    with ProcessLoader(src, 64, transform=Augment(negate, src, seed=0, piece_rows=64)) as ld:
        ld.submit(Load(((0, 10),), None, 10))
        got = ld.wait()
        assert np.array_equal(got["x"][:10], -np.asarray(ds["x"][:10])) and not got["x"][10:].any()
    print("ok")
"""


def test_transform_defined_in_the_callers_script_works(dataset, tmp_path):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(MAIN_TRANSFORM_SCRIPT))
    run = subprocess.run([sys.executable, str(script), str(dataset.path)], capture_output=True, text=True,
                         timeout=60)
    assert run.stdout.strip() == "ok", run.stderr


def fails_in_a_later_piece(arrays: dict[str, np.ndarray], ctx) -> None:
    if ctx.lo > 0:
        raise KeyError("label")


@pytest.mark.parametrize("loader_cls", [ProcessLoader, ThreadLoader])
def test_a_transform_raising_in_one_of_several_workers_names_type_transform_and_rows(dataset, loader_cls):
    """Only the workers holding buffer rows 32: fail: the error says what was raised (a bare KeyError's
    message is just its key), by which transform, on which rows; nothing is left running or
    mapped."""
    src = sources_of(dataset)
    before = mp.active_children()
    augment = Augment(fails_in_a_later_piece, src, seed=0, piece_rows=32)
    ld = loader_cls(src, CHUNK, transform=augment, workers=3)
    names = _shm_names(ld) if loader_cls is ProcessLoader else []
    try:
        ld.submit(Load(((0, CHUNK),), None, CHUNK))
        want = r"KeyError: 'label' \(raised in transform 'fails_in_a_later_piece' on buffer rows (32:|64:)"
        with pytest.raises(StreamError, match=want) as err:
            ld.wait()
        assert isinstance(err.value.__cause__, KeyError)
    finally:
        ld.close()
    assert _gone(names) and mp.active_children() == before
