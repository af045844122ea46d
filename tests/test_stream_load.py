"""load.fill: contiguous reads + permutation into staging arrays, for any field shape and dtype."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from symtrain.errors import ConfigError, DatasetError
from symtrain.storage import open_dataset, write_dataset
from symtrain.stream.load import FieldSource, Load, fill, sources_of
from symtrain.stream.transform import Augment


@pytest.fixture
def mixed(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"img": rng.integers(0, 255, (300, 4, 5)).astype(np.uint8),
              "flag": rng.random(300) < 0.5,
              "empty": np.zeros((300, 0), np.float32),
              "h": rng.standard_normal((300, 3)).astype(np.float16)}
    return open_dataset(write_dataset(tmp_path / "ds", arrays)), arrays


def test_fill_matches_fancy_indexing_for_every_field_kind(mixed):
    ds, arrays = mixed
    src = sources_of(ds)
    out = {n: s.empty(64) for n, s in src.items()}
    for arr in out.values():
        arr[...] = 1  # stale contents must not survive
    perm = np.random.default_rng(0).permutation(40)
    load = Load(((10, 30), (200, 220)), perm, 40)
    scratch: dict = {}
    for _ in range(2):  # the second fill reuses the scratch arrays
        fill(src, load, out, scratch)
        rows = load.rows()
        for name, a in arrays.items():
            assert np.array_equal(out[name][:40], a[rows]) and not out[name][40:].any()
    fill(src, Load(((0, 64),), None, 64), out, scratch)
    assert all(np.array_equal(out[n], a[:64]) for n, a in arrays.items())


def test_sources_are_picklable_and_address_file_rows_of_a_split(mixed):
    ds, arrays = mixed
    part = ds.split(100, 200)
    src = pickle.loads(pickle.dumps(sources_of(part, ["h"])))
    out = {"h": src["h"].empty(8)}
    fill(src, Load(((part.start + 5, part.start + 13),), None, 8), out)
    assert np.array_equal(out["h"], arrays["h"][105:113])


def test_load_module_imports_no_graph_library():
    import subprocess
    code = ("import sys, symtrain.stream.load, symtrain.stream.transform; "
            "print(any(m.split('.')[0] in ('pytensor', 'aesara') for m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "False", run.stderr


@pytest.mark.parametrize("args, match", [
    ((((5, 5),), None, 0), "bad row range"),
    ((((0, 10),), None, 9), "n_valid=9"),
    ((((0, 10),), np.arange(9), 10), "vector of 10"),
    ((((0, 10),), np.arange(10) + 1, 10), "0..9"),
    ((((0, 10),), np.arange(10.0), 10), "integer"),
])
def test_bad_loads(args, match):
    with pytest.raises(ConfigError, match=match):
        Load(*args)


def test_fill_rejects_wrong_staging_and_reports_short_reads(mixed, tmp_path):
    ds, _ = mixed
    src = sources_of(ds, ["h"])
    with pytest.raises(ConfigError, match="float16"):
        fill(src, Load(((0, 4),), None, 4), {"h": np.zeros((4, 3), np.float32)})
    with pytest.raises(ConfigError, match="holds 2 rows"):
        fill(src, Load(((0, 4),), None, 4), {"h": np.zeros((2, 3), np.float16)})
    with pytest.raises(ConfigError, match="C-contiguous"):
        fill(src, Load(((0, 4),), None, 4), {"h": np.zeros((3, 8), np.float16).T[:, :3]})
    with pytest.raises(DatasetError, match="short read"):
        fill(src, Load(((290, 310),), None, 20), {"h": np.zeros((20, 3), np.float16)})


def test_transform_sees_only_valid_rows_and_must_not_return_a_value():
    seen = []
    src = {"a": FieldSource("a", "<mem>", 0, "<f8", (2,), array=np.zeros((8, 2)))}
    t = Augment(lambda arrays: seen.append(arrays["a"].shape), src, seed=0, piece_rows=4)
    assert t.pieces(5, 1) == [(0, 5)]  # the one-argument form sees the whole fill, as before
    t.apply({"a": np.zeros((8, 2))}, {}, Load(((0, 5),), None, 5), 0, 5)
    assert seen == [(5, 2)]
    with pytest.raises(ConfigError, match="in place"):
        Augment(lambda arrays: arrays, src, seed=0, piece_rows=4).apply(
            {"a": np.zeros((3, 2))}, {}, Load(((0, 3),), None, 3), 0, 3)


def test_a_mapped_gather_holds_off_truncation_and_a_writable_file_is_read_without_a_mapping(tmp_path,
                                                                                             monkeypatch):
    """A file truncated under a mapping faults (SIGBUS kills the process): the mapped gather holds a read
    lease, so a writer cannot truncate until it is done; a file open for writing gets no lease and is read
    with pread instead. Both give the same rows; a later fill of the truncated file is a DatasetError."""
    import os

    from symtrain.stream import load as load_mod

    a = np.random.default_rng(3).standard_normal((512, 6)).astype(np.float32)
    ds = open_dataset(write_dataset(tmp_path / "ds", {"x": a}))
    src = sources_of(ds)["x"]
    rows = np.random.default_rng(4).permutation(np.arange(100, 400))
    real_mmap, attempts = load_mod.mmap.mmap, []
    with open(src.path, "rb") as f:
        original = f.read()

    class _Mmap:  # the mmap module, whose mapping call lets a writer try to truncate the file right then
        ALLOCATIONGRANULARITY, PROT_READ = load_mod.mmap.ALLOCATIONGRANULARITY, load_mod.mmap.PROT_READ

        @staticmethod
        def mmap(*args, **kwargs):
            m = real_mmap(*args, **kwargs)
            try:
                fd = os.open(src.path, os.O_WRONLY | os.O_NONBLOCK | os.O_TRUNC)
            except BlockingIOError:
                attempts.append("held off")
            else:  # it truncated: put the bytes back so that this process survives to report it
                os.write(fd, original)
                os.close(fd)
                attempts.append("truncated under the mapping")
            return m

    monkeypatch.setattr(load_mod, "mmap", _Mmap)
    dst = np.empty((len(rows), 6), np.float32)
    load_mod._gather_file(src, rows, dst)
    assert attempts == ["held off"] and np.array_equal(dst, a[rows])
    monkeypatch.undo()
    monkeypatch.setattr(load_mod, "_READ_BLOCK", 7 * src.row_bytes)  # many blocks per run
    with open(src.path, "r+b"):  # open for writing elsewhere: no lease, read with pread
        dst[...] = 0
        load_mod._gather_file(src, rows, dst)
        assert np.array_equal(dst, a[rows])
        os.truncate(src.path, src.offset + 200 * src.row_bytes)
        with pytest.raises(DatasetError, match="short read|shrank"):
            load_mod._gather_file(src, rows, dst)
