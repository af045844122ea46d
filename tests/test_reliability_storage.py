"""Issue 14 for datasets: overwrite deletes only what symtrain wrote (rule 1), only regular files inside the
dataset directory are read and nothing blocks on a FIFO (rule 3), manifest values are bounded (rule 4),
every dtype check_dtype accepts is written (rule 8) and paths in messages are the right ones (rule 9)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import symtrain as st
from symtrain.errors import DatasetError
from symtrain.storage import write_dataset
from symtrain.storage.convert import convert, convert_csv, convert_npy, convert_pickle
from symtrain.storage.digits import build_digits
from symtrain.storage.inspect import inspect_path, recompute_fingerprint
from symtrain.storage.shuffle import shuffle_dataset

X = np.arange(40, dtype=np.float32).reshape(20, 2)
Y = np.arange(20, dtype=np.int64)


def finishes(fn: Callable[[], object], fifo: Path | None = None,
             timeout: float = 20.0) -> BaseException | None:
    """Run ``fn`` in a thread; fail if it blocks (then unblock it by opening ``fifo`` for writing)."""
    box: dict[str, BaseException | None] = {"exc": None}

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail(f"blocked for {timeout}s (on {fifo})")
    return box["exc"]


def _pickle(path: Path) -> Path:
    parts = tuple((X, Y) for _ in range(3))
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f)
    return path


# ---------------------------------------------------------------- rule 1: overwrite deletes only our files
@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dg") / "digits"
    build_digits(out, progress=False)
    return out


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("intruder", ["notes.txt", "runs/mlp/metrics.csv", "train/notes.txt", ".hidden"])
def test_digits_overwrite_refuses_foreign_content(digits_dir: Path, tmp_path: Path, intruder: str) -> None:
    out = tmp_path / "digits"
    os.system(f"cp -r {digits_dir} {out}")
    (out / intruder).parent.mkdir(parents=True, exist_ok=True)
    (out / intruder).write_text("mine")
    before = _snapshot(out)
    with pytest.raises(DatasetError, match=r"did not write.*refusing"):
        build_digits(out, overwrite=True, progress=False)
    assert _snapshot(out) == before


def test_digits_overwrite_replaces_its_own(digits_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "digits"
    os.system(f"cp -r {digits_dir} {out}")
    build_digits(out, overwrite=True, progress=False, seed=1)
    assert json.loads((out / "digits.json").read_text())["seed"] == 1


def test_digits_overwrite_refuses_split_that_is_not_a_dataset(digits_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "digits"
    os.system(f"cp -r {digits_dir} {out}")
    (out / "valid" / "manifest.json").unlink()
    with pytest.raises(DatasetError, match=r"valid: .*not a symtrain dataset"):
        build_digits(out, overwrite=True, progress=False)
    assert (out / "valid" / "x.npy").exists()


def test_cli_digits_overwrite_keeps_user_notes(digits_dir: Path, tmp_path: Path) -> None:
    from symtrain.cli import main

    out = tmp_path / "digits"
    os.system(f"cp -r {digits_dir} {out}")
    (out / "README").write_text("my notes")
    assert main(["datasets", "digits", str(out), "--overwrite"]) == 2
    assert (out / "README").read_text() == "my notes"


def test_convert_pickle_overwrite_refuses_foreign_content(tmp_path: Path) -> None:
    src = _pickle(tmp_path / "mnist.pkl.gz")
    out = convert_pickle(src, tmp_path / "mnist")
    (out / "runs").mkdir()
    with pytest.raises(DatasetError, match="did not write"):
        convert_pickle(src, out, overwrite=True)
    assert (out / "runs").is_dir()
    (out / "runs").rmdir()
    convert_pickle(src, out, overwrite=True)


@pytest.mark.parametrize("how", ["write", "convert", "shuffle"])
def test_dataset_overwrite_refuses_foreign_files(tmp_path: Path, how: str) -> None:
    src = write_dataset(tmp_path / "src", {"x": X, "y": Y})
    out = write_dataset(tmp_path / "out", {"x": X, "y": Y})
    (out / "labels-notes.md").write_text("keep me")
    np.save(tmp_path / "x.npy", X)
    run = {"write": lambda: write_dataset(out, {"x": X}, overwrite=True),
           "convert": lambda: convert_npy({"x": tmp_path / "x.npy"}, out, overwrite=True, progress=False),
           "shuffle": lambda: shuffle_dataset(src, out, seed=0, overwrite=True)}[how]
    with pytest.raises(DatasetError, match=r"out: holds files symtrain did not write \(labels-notes.md\)"):
        run()
    assert (out / "labels-notes.md").read_text() == "keep me"
    assert st.open_dataset(out).names == ["x", "y"]


# ------------------------------------------------------------- rule 3: regular files inside the directory
def _fifo(path: Path) -> Path:
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("name", ["x.npy", "manifest.json"])
def test_fifo_in_dataset_is_refused_without_blocking(tmp_path: Path, name: str) -> None:
    ds = write_dataset(tmp_path / "ds", {"x": X, "y": Y})
    fifo = _fifo(ds / name)
    exc = finishes(lambda: st.open_dataset(ds), fifo)
    assert isinstance(exc, DatasetError) and "FIFO" in str(exc) and name in str(exc)


def test_fifo_swapped_in_after_open_does_not_block(tmp_path: Path) -> None:
    ds_path = write_dataset(tmp_path / "ds", {"x": X, "y": Y})
    ds = st.open_dataset(ds_path)
    fifo = _fifo(ds_path / "y.npy")
    for read in (lambda: ds["y"], lambda: ds.read_rows("y", 0, 2)):
        exc = finishes(read, fifo)
        assert isinstance(exc, DatasetError) and "FIFO" in str(exc)


@pytest.mark.parametrize("kind", ["npy", "pickle", "csv", "npz", "several"])
def test_fifo_convert_input_is_refused(tmp_path: Path, kind: str) -> None:
    name = {"npy": "x.npy", "pickle": "m.pkl.gz", "csv": "d.csv", "npz": "a.npz", "several": "y.npy"}[kind]
    fifo = _fifo(tmp_path / name)
    np.save(tmp_path / "x0.npy", X)
    inputs = [f"x={tmp_path / 'x0.npy'}", f"y={fifo}"] if kind == "several" else fifo
    exc = finishes(lambda: convert(inputs, tmp_path / "out", progress=False), fifo)
    assert isinstance(exc, DatasetError) and "FIFO" in str(exc), exc
    exc = finishes(lambda: convert_csv(fifo, tmp_path / "out2", progress=False), fifo)
    assert isinstance(exc, DatasetError)
    assert not (tmp_path / "out").exists()


def test_fifo_group_marker_is_not_read(tmp_path: Path) -> None:
    out = tmp_path / "grp"
    out.mkdir()
    fifo = _fifo(out / "digits.json")
    exc = finishes(lambda: build_digits(out, overwrite=True, progress=False), fifo)
    assert isinstance(exc, DatasetError) and "refusing" in str(exc)


def test_field_symlink_outside_dataset_is_refused(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", {"x": X, "y": Y})
    other = write_dataset(tmp_path / "other", {"x": X + 1, "y": Y})
    (ds / "x.npy").unlink()
    (ds / "x.npy").symlink_to(other / "x.npy")
    with pytest.raises(DatasetError, match=r"x.npy: resolves to .*other/x.npy, outside"):
        st.open_dataset(ds)
    with pytest.raises(DatasetError, match="outside"):
        inspect_path(ds, verify=True)


def test_manifest_symlink_outside_dataset_is_refused(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", {"x": X})
    os.replace(ds / "manifest.json", tmp_path / "elsewhere.json")
    (ds / "manifest.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(DatasetError, match="manifest.json: resolves to .*outside"):
        st.open_dataset(ds)


def test_symlink_inside_dataset_and_symlinked_directory_are_fine(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", {"x": X})
    os.replace(ds / "x.npy", ds / "x-data.npy")
    (ds / "x.npy").symlink_to("x-data.npy")
    (tmp_path / "link").symlink_to(ds)
    np.testing.assert_array_equal(st.open_dataset(tmp_path / "link")["x"], X)


def test_device_as_field_file_is_refused(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", {"x": X})
    (ds / "x.npy").unlink()
    os.symlink("/dev/zero", ds / "x.npy")
    with pytest.raises(DatasetError, match="outside|character device"):
        st.open_dataset(ds)


# ------------------------------------------------------------------------ rule 4: manifest values bounded
def _tamper(ds: Path, **changes: object) -> None:
    raw = json.loads((ds / "manifest.json").read_text())
    raw.update(changes)
    (ds / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("rows, fields, pattern", [
    (10**13, {"e": {"dtype": "<f4", "shape": [0]}}, r"invalid row count 10000000000000"),
    (10**9, {"e": {"dtype": "<f4", "shape": [0]}}, r"zero bytes per row, yet it claims 1000000000 rows"),
    (10**13, {"x": {"dtype": "<f4", "shape": [2]}}, r"invalid row count"),
    (2**62, {"x": {"dtype": "<f4", "shape": [0]}}, r"invalid row count"),
    (5, {"x": {"dtype": "<f8", "shape": [2**31, 2**31]}}, r"rows of \d+ bytes"),
    (5, {"x": {"dtype": "<f8", "shape": [3] * 40}}, r"invalid shape"),
])
def test_manifest_values_cannot_cause_absurd_work(tmp_path: Path, rows: int, fields: dict,
                                                  pattern: str) -> None:
    ds = write_dataset(tmp_path / "ds", {"x": X})
    _tamper(ds, rows=rows, fields=fields)
    exc = finishes(lambda: st.open_dataset(ds), timeout=10)
    assert isinstance(exc, DatasetError) and "manifest.json" in str(exc), exc
    assert pytest.raises(DatasetError, st.open_dataset, ds).match(pattern)


def test_huge_manifest_is_refused_unread(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", {"x": X})
    raw = json.loads((ds / "manifest.json").read_text())
    raw["metadata"] = {"pad": "x" * (17 << 20)}
    (ds / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match="larger than"):
        st.open_dataset(ds)


def test_writer_refuses_what_the_reader_would(tmp_path: Path) -> None:
    with pytest.raises(st.SymtrainError, match="exceed"):
        st.DatasetWriter(tmp_path / "w", {"x": ("float64", (2**31, 2**31))})
    small = np.zeros((3, 0), np.float32)
    write_dataset(tmp_path / "ok", {"e": small})  # a few data-less rows stay allowed
    assert st.open_dataset(tmp_path / "ok").rows == 3


# ---------------------------------------------------------------------------- rule 8: every accepted dtype
@pytest.mark.parametrize("dtype", ["datetime64[s]", "datetime64[ns]", "timedelta64[ms]", "S3", "U2", "c8",
                                   "?"])
def test_every_accepted_dtype_round_trips(tmp_path: Path, dtype: str) -> None:
    a = np.arange(6).astype(dtype) if dtype[0] not in "SU" else np.array(["ab", "c", "d", "", "e", "ff"],
                                                                         dtype)
    ds = write_dataset(tmp_path / "ds", {"t": a, "y": np.arange(6)})
    got = st.open_dataset(ds)
    np.testing.assert_array_equal(got["t"], a)
    np.testing.assert_array_equal(got.read_rows("t", 1, 4), a[1:4])
    assert recompute_fingerprint(got) == got.fingerprint


# --------------------------------------------------------------------------------- rule 9: the right path
def test_parent_messages_name_the_target_and_the_culprit(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(DatasetError, match=r"f/a/b: cannot be created: .*/f is not a directory"):
        write_dataset(tmp_path / "f" / "a" / "b", {"x": X})
    out = write_dataset(tmp_path / "nest" / "a" / "b", {"x": X})  # missing parents are created
    assert st.open_dataset(out).rows == 20


def test_migrate_skips_or_refuses_a_fifo(tmp_path: Path) -> None:
    """Rule 3 in the migrate command: a FIFO named like a source file never blocks it."""
    from symtrain.cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.py").write_text("import theano\n")
    fifo = _fifo(src / "pipe.py")
    assert finishes(lambda: main(["migrate", "--check", "--no-report", str(src)]), fifo) is None
    exc = finishes(lambda: main(["migrate", str(fifo)]), fifo)
    assert exc is None


def test_a_refused_schema_creates_no_parent(tmp_path: Path) -> None:
    with pytest.raises(st.SymtrainError):
        st.DatasetWriter(tmp_path / "new" / "deeper" / "ds", {"x": ("object", ())})
    assert not (tmp_path / "new").exists()
