"""Validation of the on-disk format: every crafted defect is a DatasetError naming the offending file."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from symtrain.atomic import partial_name, stale_leftovers
from symtrain.errors import ConfigError, DatasetError, SchemaError
from symtrain.storage import DatasetWriter, open_dataset, write_dataset
from symtrain.storage.manifest import FORMAT_VERSION

pytestmark = pytest.mark.backend  # backend-conformance subset: also runs on Aesara


@pytest.fixture
def ds_path(make_dataset):
    return make_dataset(rows=50, features=4)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _put_manifest(path, raw):
    (path / "manifest.json").write_text(json.dumps(raw))


def _raises_naming(path, match, file):
    with pytest.raises(DatasetError, match=match) as info:
        open_dataset(path)
    assert str(file) in str(info.value)
    return info.value


def test_round_trip_and_plain_numpy(ds_path):
    ds = open_dataset(ds_path)
    assert ds.rows == len(ds) == 50 and ds.names == ["x", "y"]
    assert ds["x"].flags.writeable is False and ds["x"].mode == "r"
    plain = np.load(ds_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(plain, ds["x"])
    assert ds.fields["x"].offset % 64 == 0


def test_truncated_npy(ds_path):
    f = ds_path / "x.npy"
    os.truncate(f, f.stat().st_size - 3)
    _raises_naming(ds_path, "truncated", f)


def test_trailing_bytes(ds_path):
    f = ds_path / "y.npy"
    with open(f, "ab") as fh:
        fh.write(b"\0" * 8)
    _raises_naming(ds_path, "unexpected bytes", f)


def test_wrong_dtype(ds_path):
    np.save(ds_path / "x.npy", np.zeros((50, 4), np.float64))
    _raises_naming(ds_path, "dtype float64 but manifest.json says float32", ds_path / "x.npy")


def test_missing_field_file(ds_path):
    (ds_path / "y.npy").unlink()
    _raises_naming(ds_path, "missing", ds_path / "y.npy")


def test_mismatched_row_counts(ds_path):
    np.save(ds_path / "y.npy", np.zeros(49, np.int64))
    _raises_naming(ds_path, "49 rows but manifest.json says 50", ds_path / "y.npy")


def test_wrong_row_shape(ds_path):
    np.save(ds_path / "x.npy", np.zeros((50, 5), np.float32))
    _raises_naming(ds_path, r"shape \(50, 5\) but manifest.json says \(50, 4\)", ds_path / "x.npy")


def test_fortran_order_field(ds_path):
    np.save(ds_path / "x.npy", np.asfortranarray(np.zeros((50, 4), np.float32)))
    _raises_naming(ds_path, "Fortran order", ds_path / "x.npy")


def test_garbage_npy_header(ds_path):
    (ds_path / "x.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <<<<\n")
    _raises_naming(ds_path, "corrupt .npy header", ds_path / "x.npy")


def test_not_npy_magic(ds_path):
    (ds_path / "x.npy").write_bytes(b"hello world, not numpy")
    _raises_naming(ds_path, "bad magic", ds_path / "x.npy")


def test_npz_in_place_of_field(ds_path):
    np.savez(ds_path / "x.npz", x=np.zeros((50, 4), np.float32))
    os.replace(ds_path / "x.npz", ds_path / "x.npy")
    _raises_naming(ds_path, r"\.npz \(zip\) archive", ds_path / "x.npy")


def test_npz_given_as_dataset(tmp_path):
    p = tmp_path / "data.npz"
    np.savez(p, x=np.zeros(3))
    err = _raises_naming(p, "convert", p)
    assert "memory-mapped" in str(err)


def test_npy_given_as_dataset(tmp_path):
    p = tmp_path / "data.npy"
    np.save(p, np.zeros(3))
    _raises_naming(p, "not a dataset", p)


def test_missing_dataset(tmp_path):
    _raises_naming(tmp_path / "nope", "does not exist", tmp_path / "nope")


def test_missing_manifest(tmp_path):
    (tmp_path / "d").mkdir()
    _raises_naming(tmp_path / "d", "missing", tmp_path / "d" / "manifest.json")


def test_corrupt_manifest_json(ds_path):
    (ds_path / "manifest.json").write_text('{"format": "symtrain-dataset", "rows": 5')
    _raises_naming(ds_path, "not valid JSON", ds_path / "manifest.json")


@pytest.mark.parametrize("key,value,match", [
    ("format", "other", "not a symtrain dataset manifest"),
    ("format_version", "1", "invalid format_version"),
    ("rows", -1, "invalid row count"),
    ("rows", True, "invalid row count"),
    ("fields", {}, "at least one field"),
    ("fingerprint", "", "no fingerprint"),
    ("metadata", [], "must be a JSON object"),
])
def test_invalid_manifest_values(ds_path, key, value, match):
    raw = _manifest(ds_path)
    raw[key] = value
    _put_manifest(ds_path, raw)
    _raises_naming(ds_path, match, ds_path / "manifest.json")


@pytest.mark.parametrize("spec,match", [
    ({"dtype": "nope", "shape": [4]}, "invalid dtype"),
    ({"dtype": None, "shape": [4]}, "invalid dtype"),
    ({"dtype": "O", "shape": [4]}, "not supported"),
    ({"dtype": "<f4", "shape": [-1]}, "invalid shape"),
    ({"dtype": "<f4", "shape": "4"}, "invalid shape"),
    ({"shape": [4]}, "no 'dtype'"),
    ({"dtype": "<f4", "shape": [4], "file": "../etc/passwd"}, "names file"),
    ([1, 2], "must be an object"),
])
def test_invalid_field_specs(ds_path, spec, match):
    raw = _manifest(ds_path)
    raw["fields"]["x"] = spec
    _put_manifest(ds_path, raw)
    _raises_naming(ds_path, match, ds_path / "manifest.json")


def test_bad_field_name_in_manifest(ds_path):
    raw = _manifest(ds_path)
    raw["fields"]["../x"] = raw["fields"].pop("x")
    _put_manifest(ds_path, raw)
    _raises_naming(ds_path, "not allowed", ds_path / "manifest.json")


def test_newer_format_version(ds_path):
    raw = _manifest(ds_path)
    raw["format_version"] = FORMAT_VERSION + 1
    _put_manifest(ds_path, raw)
    _raises_naming(ds_path, "newer than this symtrain reads", ds_path / "manifest.json")


def test_unknown_field_requested(ds_path):
    with pytest.raises(ConfigError, match="no field 'z'"):
        open_dataset(ds_path, fields=["z"])


def test_zero_rows(tmp_path):
    p = write_dataset(tmp_path / "z", {"x": np.zeros((0, 3), np.float32), "y": np.zeros(0, np.int64)})
    ds = open_dataset(p)
    assert ds.rows == 0 and ds["x"].shape == (0, 3) and ds["y"].dtype == np.int64
    assert np.load(p / "x.npy").shape == (0, 3)
    with DatasetWriter(tmp_path / "z2", {"x": ("float32", (2,))}):
        pass
    assert open_dataset(tmp_path / "z2").rows == 0


def test_split_no_copy_and_errors(ds_path):
    ds = open_dataset(ds_path)
    part = ds.split(10, 20)
    assert part.rows == 10 and part.start == 10 and np.shares_memory(part["x"], ds["x"])
    np.testing.assert_array_equal(part["y"], ds["y"][10:20])
    assert part.split(2, 5)["y"].tolist() == ds["y"][12:15].tolist()
    assert part.fingerprint != ds.fingerprint
    assert ds.split(np.int32(3)).rows == 47
    for bad in [(-1, 5), (5, 4), (0, 51), (1.5, 4), ("a", 3), (True, 4)]:
        with pytest.raises(ConfigError, match="split"):
            ds.split(*bad)


def test_writer_refuses_existing_target(ds_path, tmp_path):
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(ds_path)
    user_dir = tmp_path / "precious"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a symtrain dataset"):
        DatasetWriter(user_dir, overwrite=True)
    assert (user_dir / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_dataset(ds_path):
    write_dataset(ds_path, {"a": np.arange(3)}, overwrite=True)
    assert open_dataset(ds_path).names == ["a"]
    assert not [p for p in ds_path.parent.iterdir() if p.name.startswith(".")]


def test_writer_schema_errors(tmp_path):
    with DatasetWriter(tmp_path / "w", {"x": ("float32", (2,)), "y": ("int64", ())}) as w:
        with pytest.raises(SchemaError, match="dtype float64"):
            w.append(x=np.zeros((3, 2)), y=np.zeros(3, np.int64))
        with pytest.raises(SchemaError, match="shape"):
            w.append(x=np.zeros((3, 3), np.float32), y=np.zeros(3, np.int64))
        with pytest.raises(SchemaError, match="missing"):
            w.append(x=np.zeros((3, 2), np.float32))
        with pytest.raises(SchemaError, match="row counts"):
            w.append(x=np.zeros((3, 2), np.float32), y=np.zeros(2, np.int64))
        w.append(x=np.ones((3, 2), np.float32), y=np.arange(3))
    assert open_dataset(tmp_path / "w").rows == 3


def test_exception_leaves_no_target(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "t") as w:
            w.append(x=np.zeros((4, 2), np.float32))
            raise RuntimeError("boom")
    assert not (tmp_path / "t").exists()
    assert os.listdir(tmp_path) == []


def test_stale_partials_cleaned(tmp_path):
    dead = tmp_path / ".t.partial-999999999-0123abcd"
    dead.mkdir()
    (dead / "x.npy").write_bytes(b"half")
    alive = partial_name(tmp_path / "t")  # our own pid: alive, never removed
    alive.mkdir()
    other = tmp_path / ".u.partial-999999999-0123abcd"
    other.mkdir()
    assert stale_leftovers(tmp_path / "t") == [dead]
    write_dataset(tmp_path / "t", {"x": np.arange(2)})
    assert not dead.exists() and alive.exists() and other.exists()


def test_fingerprint_changes_with_data(tmp_path):
    a = write_dataset(tmp_path / "a", {"x": np.arange(10, dtype=np.float32)})
    b = write_dataset(tmp_path / "b", {"x": np.arange(10, dtype=np.float32)})
    c = write_dataset(tmp_path / "c", {"x": np.r_[np.arange(9), 10].astype(np.float32)})
    d = write_dataset(tmp_path / "d", {"x": np.arange(10, dtype=np.int32).view(np.float32)})
    fps = [open_dataset(p).fingerprint for p in (a, b, c, d)]
    assert fps[0] == fps[1] and len(set(fps)) == 3


def test_zip_named_npy_is_rejected_even_without_pk_suffix(tmp_path):
    ds = write_dataset(tmp_path / "d", {"x": np.arange(4)})
    with zipfile.ZipFile(ds / "x.npy", "w") as z:
        z.writestr("x.npy", b"data")
    _raises_naming(ds, "npz", ds / "x.npy")


def test_read_rows_copies_split_rows(ds_path):
    ds = open_dataset(ds_path)
    part = ds.split(5, 45)
    got = part.read_rows("x", 3, 10)
    np.testing.assert_array_equal(got, ds["x"][8:15])
    assert got.flags.writeable and not isinstance(got, np.memmap)
    buf = np.empty((16, 4), np.float32)
    assert np.shares_memory(part.read_rows("x", 0, 16, out=buf), buf)
    with pytest.raises(ConfigError, match="read_rows"):
        part.read_rows("x", 30, 41)
    with pytest.raises(ConfigError, match="out must be"):
        part.read_rows("x", 0, 4, out=np.empty((4, 4), np.float64))
    os.truncate(ds.fields["x"].path, ds.fields["x"].offset + 10)  # shrunk after opening
    with pytest.raises(DatasetError, match="x.npy.*truncated while open"):
        ds.read_rows("x", 0, 50)
