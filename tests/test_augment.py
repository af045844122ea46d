"""Augmentation in the loader and streams over plain arrays (issue 15), and the loader rules of issue 14.

Parallel workers, reproducible randomness (the same rows for any worker count, thread or process loader),
declared output specs, plain ndarray/memmap sources, bounded shutdown with a stuck transform, and the
clear errors (string fields, rebinding transforms, absurd plans, unguarded scripts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from symtrain.errors import ConfigError, StreamError
from symtrain.storage import write_dataset
from symtrain.stream import ChunkStream
from symtrain.stream.plan import make_spec
from symtrain.stream.prefetch import ThreadLoader

ROWS, BS = 300, 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(3)
    tmp = tmp_path_factory.mktemp("aug")
    img = rng.integers(0, 255, (ROWS, 6, 6)).astype(np.uint8)
    y = np.arange(ROWS, dtype=np.int64)
    path = write_dataset(tmp / "ds", {"img": img, "y": y})
    return path, img, y


def noisy(arrays: dict, ctx) -> None:
    """Random flip + noise, row-wise, with the context's generator; y records the global row."""
    x = arrays["img"]
    flip = ctx.rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    x += ctx.rng.integers(0, 3, x.shape, dtype=np.uint8)
    assert np.array_equal(arrays["y"], ctx.rows)  # y == row index in this dataset
    arrays["y"] += 1000 * ctx.epoch


def crop(arrays: dict, ctx) -> None:
    """Random 4x4 crop of each 6x6 image, as float32 in [0, 1]: a declared output spec."""
    x = arrays["img"]
    i, j = ctx.rng.integers(0, 3, 2)
    arrays["img"] = (x[:, i:i + 4, j:j + 4] / np.float32(255)).astype(np.float32)


def collect(stream: ChunkStream, epochs: int = 2) -> list[dict[str, np.ndarray]]:
    out = []
    for e in range(epochs):
        for chunk in stream.epoch(e):
            out.append({f: v.get_value(borrow=False)[:chunk.n_valid] for f, v in stream.buffers.items()})
    return out


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(x[k].tobytes() == y[k].tobytes() for k in x) for x, y in zip(a, b))


@pytest.mark.backend  # numpy-side, but the buffers are the graph library's shared variables
def test_random_augmentation_is_a_pure_function_of_the_plan(data, monkeypatch):
    import symtrain.stream.transform as transform

    monkeypatch.setattr(transform, "PIECE_MIN_ROWS", 20)  # 6 pieces per fill of 120 rows: workers split it
    path, img, y = data
    runs = {}
    for loader, workers in [("thread", 1), ("thread", 2), ("process", 2)]:
        with ChunkStream(path, BS, 120, seed=5, mix=2, transform=noisy, loader=loader, workers=workers) as s:
            runs[loader, workers] = collect(s)
            orders = [s.epoch_order(e) for e in range(2)]
    ref = runs["thread", 1]
    assert same(ref, runs["thread", 2]) and same(ref, runs["process", 2])
    got_y = np.concatenate([c["y"] for c in ref])
    want_y = np.concatenate([orders[e] + 1000 * e for e in range(2)])
    assert np.array_equal(got_y, want_y)  # the context's rows are the plan's rows
    first = np.concatenate([c["img"] for c in ref[:len(ref) // 2]])
    assert not np.array_equal(first, img[orders[0]])  # it did augment
    with ChunkStream(path, BS, 120, seed=6, mix=2, transform=noisy) as s:
        assert not same(ref, collect(s))  # another seed, other random numbers
    with ChunkStream(path, BS, 120, seed=5, mix=2, transform=noisy) as s:
        resumed = list(s.epoch(1, start_step=13))
        assert resumed[0].first_step == 13  # the fill of a resumed step is the same fill as before
        assert s.buffers["img"].get_value(borrow=False)[:resumed[-1].n_valid].tobytes() == \
            ref[-1]["img"].tobytes()


@pytest.mark.backend  # numpy-side, but the buffers are the graph library's shared variables
def test_declared_output_spec_sets_the_buffers_and_wrong_output_is_an_error(data):
    path, img, _ = data
    with ChunkStream(path, BS, 60, seed=1, transform=crop, outputs={"img": ("float32", (4, 4))},
                     workers=2) as s:
        assert s.buffers["img"].get_value(borrow=True).shape == (60, 4, 4)
        assert s.buffers["img"].dtype == "float32"
        chunks = collect(s, 1)
        assert all(c["img"].dtype == np.float32 and c["img"].max() <= 1 for c in chunks)
        order = s.epoch_order(0)
        first = chunks[0]["img"][0] * 255
        src = img[order[0]].astype(np.float32)
        assert any(np.allclose(first, src[i:i + 4, j:j + 4]) for i in range(3) for j in range(3))
    with ChunkStream(path, BS, 60, seed=1, transform=crop, outputs={"img": ("float32", (4, 4))},
                     loader="process", workers=2) as s:
        assert same(collect(s, 1), chunks)  # the process workers produce the same declared output
    with ChunkStream(path, BS, 60, transform=crop, outputs={"img": ("float64", (4, 4))}) as s:
        with pytest.raises(StreamError, match=r"declares float64|<f8") as info:
            collect(s, 1)
        assert "outputs=" in str(info.value.__cause__)
    with pytest.raises(ConfigError, match="no transform"):
        ChunkStream(path, BS, 60, outputs={"img": "float32"})
    with pytest.raises(ConfigError, match="not a streamed field"):
        ChunkStream(path, BS, 60, transform=crop, outputs={"nope": "float32"})
    with pytest.raises(ConfigError, match="unicode strings"):
        ChunkStream(path, BS, 60, transform=crop, outputs={"img": "<U3"})


def rebind(arrays: dict) -> None:
    arrays["img"] = arrays["img"].astype(np.float32)  # rebinding, not writing in place: ignored before


def reshaped_view(arrays: dict) -> None:
    x = arrays["img"] = arrays["img"].reshape(len(arrays["img"]), 36)  # another view of the same rows: fine
    x[:, 0] = 7


def adds_field(arrays: dict, ctx) -> None:
    arrays["extra"] = np.zeros(3)


@pytest.mark.parametrize("fn, match", [(rebind, r"replaced arrays\['img'\] with a new array"),
                                       (adds_field, "cannot add fields"),
                                       (lambda a: a, "returned a value")])
def test_a_transform_that_does_not_write_in_place_is_an_error(data, fn, match):
    """(A rebinding to another view of the same memory, e.g. a reshape, is accepted: see below.)"""
    path, _, _ = data
    with ChunkStream(path, BS, 60, transform=fn) as s:
        with pytest.raises(StreamError) as info:
            collect(s, 1)
    assert isinstance(info.value.__cause__, ConfigError)
    assert __import__("re").search(match, str(info.value.__cause__))


@pytest.mark.backend  # numpy-side, but the buffers are the graph library's shared variables
def test_rebinding_to_a_view_of_the_same_rows_is_accepted(data):
    path, _, _ = data
    with ChunkStream(path, BS, 60, transform=reshaped_view) as s:
        chunks = collect(s, 1)
    assert all((c["img"][:, 0, 0] == 7).all() for c in chunks)


@pytest.mark.backend  # numpy-side, but the buffers are the graph library's shared variables
def test_plain_arrays_and_memmaps_stream_like_a_dataset(data, tmp_path):
    path, img, y = data
    np.save(tmp_path / "img.npy", img)
    mm = np.load(tmp_path / "img.npy", mmap_mode="r")
    with ChunkStream(path, BS, 60, seed=2, mix=3) as s:
        want = collect(s)
    for src in ({"img": img, "y": y}, {"img": mm, "y": y}):
        with ChunkStream(src, BS, 60, seed=2, mix=3) as s:
            assert same(collect(s), want)
            state = s.state()
        with ChunkStream(src, BS, 60, seed=2, mix=3) as s:
            s.check_state(state)
    with ChunkStream({"img": mm[100:]}, BS, 60, policy="sequential") as s:  # a view at a row offset
        assert s.dataset.sources["img"].array is None  # read from the file, not from the caller's mapping
        assert np.array_equal(collect(s, 1)[0]["img"], img[100:160])
    with ChunkStream({"img": mm}, BS, 60, seed=2, mix=3, loader="process", workers=2) as s:
        assert same(collect(s), [{"img": c["img"]} for c in want])
    bad = [({"img": img, "y": y[:-1]}, "different row counts"),
           ({"s": np.array(["abc"] * 20)}, "unicode strings"),
           ({"v": np.zeros(20, dtype="V4")}, "void"),
           ({"x": np.array(1.0)}, "no rows"),
           ({}, "non-empty dict"),
           ({"x": [1, 2, 3]}, "numpy array"),
           ({"x": np.zeros(20, dtype=">f4")}, "non-native byte order"),
           ({"t": np.zeros(20, dtype="datetime64[s]")}, "datetimes")]
    for arrays, match in bad:
        with pytest.raises(ConfigError, match=match):
            ChunkStream(arrays, 2, 4)
    with pytest.raises(ConfigError, match="in-memory arrays"):
        ChunkStream({"img": img}, BS, 60, loader="process")
    with pytest.raises(ConfigError, match="not C-contiguous"):
        ChunkStream({"img": mm[:, :3]}, BS, 60, loader="process")  # a strided view cannot be read by offset
    with pytest.raises(ConfigError, match="dict of arrays"):
        ChunkStream(img, BS, 60)


def _rss_file() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssFile:"))


def test_a_memmap_source_keeps_file_backed_memory_flat(tmp_path):
    """A 48 MiB memmap streamed whole: RssFile ends where it started (no pages stay mapped; the fingerprint
    reads its sample with pread, since touching the caller's mapping mapped ~21 MiB of page-cache folios)."""
    rows, width = 12288, 1024  # float32: 4 KiB rows, 48 MiB
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(rows, width))
    mm[:] = 1
    mm.flush()
    del mm
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    before = _rss_file()
    with ChunkStream({"x": x}, 64, 1024, mix=2) as s:
        for chunk in s.epoch(0):
            assert chunk.n_valid == 1024
        total = s.buffers["x"].get_value(borrow=True).sum()
    assert total == 1024 * width
    assert _rss_file() - before < 8 * 2**20  # 48 MiB were read; none of it stays mapped


def test_string_or_void_fields_in_a_dataset_are_one_clear_error(tmp_path):
    path = write_dataset(tmp_path / "ds", {"x": np.zeros(20, np.float32), "name": np.array(["abc"] * 20),
                                           "raw": np.zeros(20, dtype="V4")})
    with pytest.raises(ConfigError, match=r"name\.npy: field 'name' is stored as <U3 \(unicode strings\)"):
        ChunkStream(path, 2, 4)
    with pytest.raises(ConfigError, match="raw void"):
        ChunkStream(path, 2, 4, fields=["raw"])
    with ChunkStream(path, 2, 4, fields=["x"]) as s:  # leaving them out works
        assert len(collect(s, 1)) == 5


@pytest.mark.parametrize("rows, chunk_rows", [(10**13, 16384), (10**13, 10**13), (2**40, 1)])
def test_an_absurd_plan_is_refused_before_any_allocation(rows, chunk_rows):
    with pytest.raises(ConfigError, match="more than a plan can"):
        make_spec(rows, chunk_rows, 1)


def test_zero_size_rows_at_an_absurd_row_count_are_refused(tmp_path):
    mm = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(10**13, 0), strides=(0, 4))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="more than a plan can"):
        ChunkStream({"x": mm}, 128, 16384)
    assert time.perf_counter() - t0 < 30  # (no allocation of 10**13 anything)


def test_workers_argument_is_checked(data):
    path, _, _ = data
    for bad in (0, -1, 1.5, True, 65):
        with pytest.raises(ConfigError, match="workers"):
            ChunkStream(path, BS, 60, workers=bad)


def test_close_with_a_transform_stuck_in_the_loader_thread_is_bounded(data):
    from symtrain.storage import open_dataset
    from symtrain.stream.load import Load, sources_of

    path, _, _ = data
    release = threading.Event()
    with open_dataset(path) as ds:
        loader = ThreadLoader(sources_of(ds), 60, transform=lambda arrays, n: release.wait(30))
        try:
            loader.submit(Load(((0, 60),), None, 60))
            time.sleep(0.1)
            t0 = time.perf_counter()
            with pytest.warns(RuntimeWarning, match="still busy"):
                loader.close(timeout=0.3)
            assert time.perf_counter() - t0 < 5
        finally:
            release.set()


def sleepy(arrays: dict) -> None:
    time.sleep(60)


def test_close_with_a_transform_stuck_in_a_loader_process_is_bounded(data):
    path, _, _ = data
    from symtrain.stream.plan import epoch_loads

    with ChunkStream(path, BS, 60, transform=sleepy, loader="process", workers=2) as s:
        loader = s._loader()
        pids = list(loader.pids)
        loader.submit(epoch_loads(s.spec, 0).load(0))
        time.sleep(0.3)
        t0 = time.perf_counter()
        s.close()
        assert time.perf_counter() - t0 < 10
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_stream_close_with_a_stuck_one_argument_transform_returns(data):
    from symtrain.stream.plan import epoch_loads

    path, _, _ = data
    release = threading.Event()
    try:
        s = ChunkStream(path, BS, 60, transform=lambda arrays: release.wait(30))
        s._loader().submit(epoch_loads(s.spec, 0).load(0))  # the loader thread is now inside the transform
        time.sleep(0.1)
        t0 = time.perf_counter()
        with pytest.warns(RuntimeWarning, match="still busy"):
            s.close()  # what a second Ctrl-C runs: bounded (2 s), never a hang
        assert time.perf_counter() - t0 < 10
        assert not s.buffers["img"].get_value(borrow=True).any()  # parked on zeros, not the loader's memory
    finally:
        release.set()


UNGUARDED = """
import sys
import numpy as np
from symtrain.stream import ChunkStream

def neg(arrays):
    arrays["x"] *= -1

s = ChunkStream({"x": np.load(sys.argv[1], mmap_mode="r")}, 2, 4, transform=neg, loader="process")
print("started")
"""


def test_a_process_transform_in_a_script_without_main_guard_is_a_clear_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((8, 2), np.float32))
    script = tmp_path / "train_me.py"
    script.write_text(UNGUARDED)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "x.npy")], capture_output=True,
                         text=True,
                         timeout=120)
    assert "started" not in run.stdout
    assert "ConfigError" in run.stderr and "__main__" in run.stderr and "train_me.py" in run.stderr


RESUME_SCRIPT = '''
import os, signal
import numpy as np
import symtrain as st
from symtrain.backend import shared
from symtrain.train.callbacks import Callback


def augment(arrays, ctx):
    """Random noise and sign flips drawn from the context's generator (defined in the script itself)."""
    x = arrays["x"]
    x += ctx.rng.standard_normal(x.shape).astype(x.dtype) * np.float32(0.5)
    x *= np.where(ctx.rng.random((len(x), 1)) < 0.3, -1, 1).astype(x.dtype)


STREAM = {"batch_size": 16, "chunk_rows": 160, "seed": 3, "transform": augment,
          "loader": os.environ.get("AUG_LOADER", "thread"),
          "workers": int(os.environ.get("AUG_WORKERS", "1"))}
FIT = {"checkpoint_every_steps": 5, "progress": False, "epochs": 2}


class Killer(Callback):
    def on_step_end(self, t, step, metrics):
        if t.global_step == int(os.environ.get("AUG_KILL_AT", "-1")):
            os.kill(os.getpid(), signal.SIGKILL)


def build(train, valid):
    x, y = train.batch("x"), train.batch("y")
    W = shared(np.zeros((6, 3), "float32"), name="W")
    b = shared(np.zeros(3, "float32"), name="b")
    p = st.nnet.softmax(x @ W + b)
    cost = st.nnet.categorical_crossentropy(p, y).mean()
    step = st.compile_step(cost, [W, b], train, st.optim.adam(0.05))
    return {"step": step, "callbacks": [Killer()]}
'''


@pytest.mark.slow
def test_sigkill_and_resume_with_random_augmentation_in_process_workers_is_bit_exact(tmp_path):
    """Reference: thread loader, 1 worker, uninterrupted. Then: 2 process workers (the transform lives
    in the ``symtrain train`` script), SIGKILLed mid-epoch, resumed with 2 thread workers."""
    from symtrain.train import checkpoint as ckpt
    from symtrain.train.commands import run_script

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = (np.abs(x[:, 0]) * 2).astype(np.int64).clip(0, 2)
    data = write_dataset(tmp_path / "data", {"x": x, "y": y})
    script = tmp_path / "aug_model.py"
    script.write_text(RESUME_SCRIPT)
    assert run_script(script, data, tmp_path / "ref").stop_reason == "completed"
    run = tmp_path / "killed"
    for env, resume in [({"AUG_LOADER": "process", "AUG_WORKERS": "2", "AUG_KILL_AT": "17"}, False),
                        ({"AUG_LOADER": "thread", "AUG_WORKERS": "2"}, True)]:
        cmd = [sys.executable, "-m", "symtrain.cli", "-q", "train", str(script), "--data", str(data),
               "--run-dir", str(run)] + (["--resume"] if resume else [])
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=180)
        assert proc.returncode == (0 if resume else -9), proc.stderr
    a, b = ckpt.load_latest(run / "checkpoints"), ckpt.load_latest(tmp_path / "ref" / "checkpoints")
    assert a.cursor["global_step"] == b.cursor["global_step"] == 2 * (200 // 16)
    assert a.meta["history"]["resumed_from"]
    for name in b.arrays:
        va, vb = a.arrays[name], b.arrays[name]
        assert (va.tobytes() == vb.tobytes()) if isinstance(va, np.ndarray) else va == vb, name


def test_a_copy_on_write_memmap_streams_what_it_holds_and_extended_precision_is_refused(data, tmp_path):
    """A memmap in mode 'c' keeps the caller's changes in private pages: reading its file would stream other
    rows, so it is gathered from memory (and refused by the process loader); float128 is one clear error."""
    _, img, y = data
    np.save(tmp_path / "img.npy", img)
    cow = np.load(tmp_path / "img.npy", mmap_mode="c")
    cow[:] = 255 - cow  # changed in memory only
    with ChunkStream({"img": 255 - img, "y": y}, BS, 60, seed=2) as s:
        want = collect(s, 1)
    with ChunkStream({"img": cow, "y": y}, BS, 60, seed=2) as s:
        assert same(collect(s, 1), want)
    with pytest.raises(ConfigError, match="copy-on-write"):
        ChunkStream({"img": cow, "y": y}, BS, 60, loader="process")
    for wide in (np.longdouble, np.clongdouble):
        if np.dtype(wide).itemsize > (8 if np.dtype(wide).kind == "f" else 16):
            with pytest.raises(ConfigError, match="field 'w' is stored as .*extended precision"):
                ChunkStream({"img": img, "w": np.zeros(len(img), wide)}, BS, 60)
