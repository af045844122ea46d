"""Faults while running: files changing under an open stream, I/O errors in the loader, disk full while
writing a dataset or a checkpoint, SIGKILL during checkpoint and dataset writes, SIGTERM during validation.

Each fault must end in one clear symtrain error or a clean stop, never a hang (every subprocess has a
timeout, every loader wait is bounded), with no loader thread left behind, the previous checkpoint
loadable and the source dataset byte-for-byte intact. Subprocesses that need no graph library import
only ``symtrain.storage`` / ``symtrain.train.checkpoint`` (see ``_CKPT_IMPORT``) to stay cheap.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import symtrain as st
from symtrain.atomic import stale_leftovers
from symtrain.errors import CheckpointError, DatasetError, StreamError

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")

# symtrain.train is lazy: importing its checkpoint module loads no graph library
_CKPT_IMPORT = """
import pathlib, sys
from symtrain.train import checkpoint as ckpt
"""


def _run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _tree_hash(path: Path) -> str:
    """sha256 over every file name and content under ``path`` (to prove a dataset is untouched)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _loader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("symtrain")]


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    y = np.arange(400, dtype=np.int64)
    return st.write_dataset(tmp_path / "ds", {"x": x, "y": y})


# ----- the stream: files changing underneath, I/O errors in the loader ------------------------------------

def _first_chunk_then(stream, fault):
    """Take the first chunk of epoch 0, inject ``fault``, then drain the epoch (the loader hits the fault)."""
    chunks = stream.epoch(0)
    next(chunks)
    fault()
    try:
        for _ in chunks:
            pass
    finally:
        chunks.close()


@pytest.mark.parametrize("loader", ["thread", "process"])
def test_field_file_truncated_while_streaming(dataset, loader):
    before = set(_loader_threads())
    x = dataset / "x.npy"
    stream = st.ChunkStream(dataset, batch_size=20, chunk_rows=40, policy="sequential", loader=loader)
    try:
        with pytest.raises(StreamError) as info:
            _first_chunk_then(stream, lambda: os.truncate(x, x.stat().st_size // 2))
    finally:
        stream.close()
    assert "x.npy" in str(info.value)
    assert set(_loader_threads()) <= before


@pytest.mark.parametrize("how,loader", [("shorter", "thread"), ("same-size", "thread"),
                                        ("same-size", "process")])
def test_field_file_replaced_while_streaming(dataset, how, loader):
    """Replacing a field file (another writer, a user's cp) is detected at the next fill, even when the new
    file has the same size and header (the rows would silently be other data)."""
    x = dataset / "x.npy"
    arr = np.load(x)
    replacement = arr[:100] if how == "shorter" else arr[::-1].copy()
    stream = st.ChunkStream(dataset, batch_size=20, chunk_rows=40, policy="sequential", loader=loader)

    def replace():
        tmp = dataset / "x.tmp.npy"
        np.save(tmp, replacement)
        os.replace(tmp, x)

    try:
        with pytest.raises(StreamError) as info:
            _first_chunk_then(stream, replace)
    finally:
        stream.close()
    assert "x.npy" in str(info.value)
    assert isinstance(info.value.__cause__, DatasetError)
    assert _loader_threads() == []


def test_io_error_in_loader_thread(dataset, monkeypatch):
    """An EIO from the disk in the loader thread reaches the consumer as StreamError(DatasetError(EIO)); the
    stream recovers for the next epoch once the disk does."""
    import symtrain.stream.load as load

    real = os.preadv
    calls = {"n": 0}

    def flaky(fd, buffers, offset):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, buffers, offset)

    monkeypatch.setattr(load.os, "preadv", flaky)
    stream = st.ChunkStream(dataset, batch_size=20, chunk_rows=40, policy="sequential")
    try:
        with pytest.raises(StreamError, match=r"Input/output error") as info:
            for _ in stream.epoch(0):
                pass
        cause = info.value.__cause__
        assert isinstance(cause, DatasetError) and cause.path.name in ("x.npy", "y.npy")
        assert isinstance(cause.__cause__, OSError) and cause.__cause__.errno == errno.EIO
        assert _loader_threads() == []  # the failed epoch joined its loader
        rows = np.concatenate([stream.buffers["y"].get_value()[:c.n_valid] for c in stream.epoch(1)])
        assert np.array_equal(rows, np.arange(400))  # a fresh loader, correct data
    finally:
        stream.close()
    assert _loader_threads() == []


def test_loader_exception_is_not_lost_and_no_hang(dataset, monkeypatch):
    """Any exception in ``fill`` (not only OSError) surfaces with its cause; close() never blocks."""
    import symtrain.stream.prefetch as prefetch

    def boom(*a, **k):
        raise MemoryError("staging allocation failed")

    stream = st.ChunkStream(dataset, batch_size=20, chunk_rows=40)
    monkeypatch.setattr(prefetch, "fill_part", boom)  # what each loader thread runs per fill
    t0 = time.monotonic()
    try:
        with pytest.raises(StreamError, match="staging allocation failed") as info:
            next(stream.epoch(0))
        assert isinstance(info.value.__cause__, MemoryError)
    finally:
        stream.close()
    assert time.monotonic() - t0 < 30 and _loader_threads() == []


# ----- disk full (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG) ------------------------------------

DISK_FULL = _CKPT_IMPORT + """
import json, resource, signal, sys
import numpy as np
from symtrain.storage import write_dataset
from symtrain.storage.convert import convert
from symtrain.storage.shuffle import shuffle_dataset
root = pathlib.Path(sys.argv[1])
out = {}
ck = root / "run" / "checkpoints"
meta = {"epochs": 1, "cursor": {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "steps_per_epoch": 9},
        "stream": {"plan": {}, "fingerprint": "f", "fields": [], "rows": 1}}  # the least the schema takes
ckpt.write_checkpoint(ck / ckpt.checkpoint_name(0, 5), {"w": np.full(1000, 5.0)}, meta)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))
big = {"x": np.ones((4096, 128), np.float32)}   # 2 MiB: over the limit
for name, call in [
    ("dataset_new", lambda: write_dataset(root / "new", big)),
    ("dataset_overwrite", lambda: write_dataset(root / "existing", big, overwrite=True)),
    ("shuffle", lambda: shuffle_dataset(root / "big", root / "shuffled", 1, progress=False)),
    ("convert", lambda: convert(root / "big.npy", root / "converted", progress=False)),
    ("checkpoint", lambda: ckpt.write_checkpoint(ck / ckpt.checkpoint_name(0, 10), {"w": np.ones(10**6)},
                                                 meta)),
]:
    try:
        call()
        out[name] = ["no error", ""]
    except Exception as exc:
        out[name] = [type(exc).__name__, str(exc), type(exc.__cause__).__name__]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory):
    root = tmp_path_factory.mktemp("disk_full")
    existing = st.write_dataset(root / "existing", {"x": np.arange(300, dtype=np.float32).reshape(100, 3)})
    before = _tree_hash(existing)
    big = np.ones((4096, 128), np.float32)  # 2 MiB, over the 256 KiB file size limit of the subprocess
    st.write_dataset(root / "big", {"x": big})
    np.save(root / "big.npy", big)
    res = _run(DISK_FULL, root)
    assert res.returncode == 0, res.stderr
    return root, before, json.loads(res.stdout.strip().splitlines()[-1])


def test_disk_full_while_writing_new_dataset(disk_full):
    root, _, out = disk_full
    kind, msg, cause = out["dataset_new"]
    assert kind == "DatasetError", out["dataset_new"]
    assert "new" in msg and "File too large" in msg
    assert not (root / "new").exists()
    assert [p.name for p in root.iterdir() if ".partial-" in p.name or ".old-" in p.name] == []


def test_disk_full_while_overwriting_leaves_old_dataset_intact(disk_full):
    root, before, out = disk_full
    kind, msg, _ = out["dataset_overwrite"]
    assert kind == "DatasetError" and "existing" in msg, out["dataset_overwrite"]
    assert _tree_hash(root / "existing") == before
    ds = st.open_dataset(root / "existing")
    assert ds.rows == 100 and ds["x"][99, 2] == 299


@pytest.mark.parametrize("command,target", [("shuffle", "shuffled"), ("convert", "converted")])
def test_disk_full_in_shuffle_and_convert(disk_full, command, target):
    root, _, out = disk_full
    kind, msg, _ = out[command]
    assert not (root / target).exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(f".{target}.")] == []
    assert kind == "DatasetError" and target in msg and "File too large" in msg, out[command]


def test_disk_full_while_writing_checkpoint_keeps_previous(disk_full):
    from symtrain.train import checkpoint as ckpt

    root, _, out = disk_full
    kind, msg, cause = out["checkpoint"]
    assert kind in ("CheckpointError", "OSError"), out["checkpoint"]
    assert "File too large" in msg or cause == "OSError"
    c = ckpt.load_latest(root / "run" / "checkpoints")
    assert c.path.name == ckpt.checkpoint_name(0, 5) and np.array_equal(c.arrays["w"], np.full(1000, 5.0))
    assert [p.name for p in (root / "run" / "checkpoints").iterdir()] == [ckpt.checkpoint_name(0, 5)]


def test_disk_full_checkpoint_error_is_a_checkpoint_error(disk_full):
    """The checkpoint writer wraps the OSError (EFBIG/ENOSPC) as CheckpointError naming the path and the
    checkpoint that remains."""
    kind, msg, cause = disk_full[2]["checkpoint"]
    assert kind == "CheckpointError" and cause == "OSError", disk_full[2]["checkpoint"]
    assert "checkpoints/epoch-00000-step-00000010" in msg and "File too large" in msg, msg
    assert "previous checkpoint" in msg and "epoch-00000-step-00000005 remains" in msg, msg


# ----- SIGKILL during checkpoint writes -------------------------------------------------------------------

CKPT_LOOP = _CKPT_IMPORT + """
import numpy as np
ck = pathlib.Path(sys.argv[1])
ckpt.clean_leftovers(ck)
start = int(sys.argv[2])
print("ready", flush=True)
for k in range(start, start + 10**6):
    n = 20000 + 997 * (k % 50)            # sizes vary, so kills land in different phases of a write
    values = {"w": np.full(n, float(k)), "k": np.array(k), "b": np.arange(k % 7, dtype=np.int32)}
    cursor = {"epoch": k, "step_in_epoch": 0, "global_step": k, "steps_per_epoch": 1, "k": k}
    stream = {"plan": {}, "fingerprint": "f", "fields": [], "rows": 1}
    meta = {"epochs": k + 1, "cursor": cursor, "stream": stream}
    ckpt.write_checkpoint(ck / ckpt.checkpoint_name(k, 0), values, meta)
    ckpt.prune(ck, 2)
"""


def test_sigkill_during_checkpoint_writes_newest_valid_loads(tmp_path):
    """Kill a process that writes checkpoints back to back, at random instants, twice; each time the newest
    checkpoint that loads is complete and self-consistent, and the next writer cleans the leftovers."""
    from symtrain.train import checkpoint as ckpt

    ck = tmp_path / "checkpoints"
    rnd = random.Random(9)
    start = 0
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CKPT_LOOP), str(ck), str(start)],
                                env=ENV,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rnd.uniform(0.2, 0.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        c = ckpt.load_latest(ck)
        assert c is not None
        k = c.meta["cursor"]["k"]
        assert k >= start
        assert (c.arrays["k"] == k and np.all(c.arrays["w"] == k) and len(c.arrays["w"]) == 20000 + 997
                * (k % 50))
        assert np.array_equal(c.arrays["b"], np.arange(k % 7, dtype=np.int32))
        start = k + 1
    assert start >= 2, "the writer was killed before it wrote anything: raise the sleep"


# ----- SIGKILL during dataset writing with overwrite=True ---------------------------------------------------

def test_sigkill_while_overwriting_dataset_keeps_old(tmp_path):
    """(A SIGKILL of a new dataset write is tests/test_storage_process.py.) With overwrite=True, the old
    dataset stays byte-for-byte intact until the new one is complete."""
    target = st.write_dataset(tmp_path / "victim", {"x": np.arange(64, dtype=np.float32).reshape(16, 4)})
    before = _tree_hash(target)
    code = """
        import sys, time
        import numpy as np
        from symtrain.storage import DatasetWriter
        with DatasetWriter(sys.argv[1], {"x": ("float32", (4,))}, overwrite=True) as w:
            for i in range(10**6):
                w.append(x=np.full((4096, 4), i, np.float32))
                if i == 5:
                    print("writing", flush=True)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(target)], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    assert _tree_hash(target) == before
    assert st.open_dataset(target).rows == 16
    assert [p.name.split(".partial-")[0] for p in stale_leftovers(target)] == [".victim"]
    st.write_dataset(target, {"x": np.zeros((2, 4), np.float32)}, overwrite=True)
    assert stale_leftovers(target) == [] and st.open_dataset(target).rows == 2


# ----- SIGTERM during validation ----------------------------------------------------------------------------

TRAIN_SCRIPT = textwrap.dedent('''
    import os, signal
    import numpy as np
    import symtrain as st
    from symtrain.backend import shared

    STREAM = {"batch_size": 10, "chunk_rows": 20, "seed": 1}
    FIT = {"progress": False, "epochs": 4}

    def build(train, valid):
        W = shared(np.zeros((16, 1), "float32"), name="W")
        pred = (train.batch("x") @ W)[:, 0]
        cost = ((pred - train.batch("y").astype("float32") / 400) ** 2).mean()
        step = st.compile_step(cost, [W], train, st.optim.sgd(0.01))
        vpred = (valid.batch("x") @ W)[:, 0]
        ev = st.compile_eval({"loss": (vpred - valid.batch("y").astype("float32") / 400) ** 2}, valid)
        calls = {"n": 0}

        def validation():
            calls["n"] += 1
            if calls["n"] == 2 and os.environ.get("SYMTRAIN_TEST_SIGTERM"):
                os.kill(os.getpid(), signal.SIGTERM)   # arrives while the evaluator runs
            return ev.run()

        return {"step": step, "validation": validation}
''')


def test_sigterm_during_validation_stops_cleanly_with_checkpoint(tmp_path, dataset):
    """SIGTERM while validating: fit finishes that validation, checkpoints at the epoch boundary and exits
    with status 130; the data is untouched and a resume completes the run."""
    from symtrain.train import checkpoint as ckpt
    from symtrain.train.commands import run_script

    script = tmp_path / "model.py"
    script.write_text(TRAIN_SCRIPT)
    before = _tree_hash(dataset)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "symtrain.cli", "-q", "train", str(script), "--data", str(dataset),
           "--valid",
           str(dataset), "--run-dir", str(run_dir)]
    res = subprocess.run(cmd, env={**ENV, "SYMTRAIN_TEST_SIGTERM": "1"}, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 130, res.stderr
    assert "interrupted; resume with" in res.stderr
    c = ckpt.load_latest(run_dir / "checkpoints")
    assert c.meta["reason"] == "interrupt"
    # after epoch 2 (index 1) and its validation
    assert (c.cursor["epoch"], c.cursor["step_in_epoch"]) == (2, 0)
    assert len(c.meta["history"]["validations"]) == 2
    assert _tree_hash(dataset) == before
    assert [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")] == []
    history = run_script(script, dataset, run_dir, valid=dataset, resume=True)
    assert history.stop_reason == "completed" and len(history.validations) == 4
    assert history.global_step == 4 * 40
    assert _loader_threads() == []


def test_checkpoint_damaged_after_the_fact_falls_back(tmp_path):
    """A newest checkpoint whose arrays were damaged later (bit rot, a partial copy) is skipped for the
    previous one; when every checkpoint is damaged the error says so."""
    from symtrain.train import checkpoint as ckpt

    ck = tmp_path / "checkpoints"
    for k in (1, 2):
        ckpt.write_checkpoint(ck / ckpt.checkpoint_name(k, 0), {"w": np.full(100, float(k))},
                              {"epochs": k, "cursor": {"epoch": k, "step_in_epoch": 0, "global_step": k,
                                                       "steps_per_epoch": 1},
                               "stream": {"plan": {}, "fingerprint": "f", "fields": [], "rows": 1}})
    newest = ck / ckpt.checkpoint_name(2, 0) / ckpt.ARRAYS
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    assert ckpt.load_latest(ck).arrays["w"][0] == 1.0
    shutil.rmtree(ck / ckpt.checkpoint_name(1, 0))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        ckpt.load_latest(ck)
