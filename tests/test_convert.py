"""Conversion from arrays, .npy/.npz, the Theano-tutorial pickle, CSV and HDF5, with dtype casting."""

from __future__ import annotations

import gzip
import pickle
import struct
import tracemalloc
import warnings

import numpy as np
import pytest

from symtrain.errors import ConfigError, DatasetError
from symtrain.storage import open_dataset
from symtrain.storage.convert import (
    convert,
    convert_arrays,
    convert_csv,
    convert_npz,
    parse_dtype_spec,
)

RNG = np.random.default_rng(0)


def _mnist_like(n):
    return (RNG.random((n, 784), dtype=np.float32), RNG.integers(0, 10, n).astype(np.int64))


def test_arrays_with_dtype(tmp_path):
    x, y = RNG.random((100, 3)), np.arange(100, dtype=np.float64)
    out = convert_arrays({"x": x, "y": y}, tmp_path / "a", dtype="x:float32,y:int32", chunk_rows=7)
    ds = open_dataset(out)
    assert ds.fields["x"].dtype == np.float32 and ds.fields["y"].dtype == np.int32
    np.testing.assert_array_equal(ds["x"], x.astype(np.float32))
    np.testing.assert_array_equal(ds["y"], np.arange(100))
    single = open_dataset(convert_arrays({"x": x, "y": np.arange(100)}, tmp_path / "b", dtype="float32"))
    assert single.fields["x"].dtype == np.float32 and single.fields["y"].dtype == np.int64  # ints untouched


def test_inexact_float_to_int_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="exactly"):
        convert_arrays({"y": np.array([0.0, 1.5])}, tmp_path / "c", dtype={"y": "int64"})
    with pytest.raises(DatasetError, match="range"):
        convert_arrays({"y": np.array([0, 300])}, tmp_path / "c", dtype={"y": "uint8"})
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("spec,match", [("nope", "not a dtype"), ("x:", "FIELD:DTYPE"),
                                        ("x:object", "not supported")])
def test_bad_dtype_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_dtype_spec(spec)


def test_dtype_names_unknown_field(tmp_path):
    with pytest.raises(ConfigError, match=r"\['z'\]"):
        convert_arrays({"x": np.zeros(3)}, tmp_path / "d", dtype="z:float32")


def test_npy_files_one_per_field(tmp_path):
    x, y = _mnist_like(50)
    np.save(tmp_path / "feat.npy", x)
    np.save(tmp_path / "lab.npy", y)
    out = convert([f"x={tmp_path / 'feat.npy'}", f"y={tmp_path / 'lab.npy'}"], tmp_path / "o", progress=False)
    ds = open_dataset(out)
    np.testing.assert_array_equal(ds["x"], x)
    np.testing.assert_array_equal(ds["y"], y)
    single = open_dataset(convert(tmp_path / "feat.npy", tmp_path / "o2", progress=False))
    assert single.names == ["x"]


def test_npy_bad_inputs_name_the_file(tmp_path):
    p = tmp_path / "t.npy"
    np.save(p, np.zeros((10, 10)))
    with open(p, "r+b") as f:
        f.truncate(200)
    with pytest.raises(DatasetError, match="t.npy"):
        convert(p, tmp_path / "o", progress=False)
    np.save(tmp_path / "a.npy", np.zeros(3))
    np.save(tmp_path / "b.npy", np.zeros(4))
    with pytest.raises(DatasetError, match="different row counts"):
        convert([tmp_path / "a.npy", tmp_path / "b.npy"], tmp_path / "o", progress=False)
    np.save(tmp_path / "obj.npy", np.array([{}, 1], dtype=object))
    with pytest.raises(DatasetError, match="obj.npy"):
        convert(tmp_path / "obj.npy", tmp_path / "o", progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        convert(tmp_path / "missing.npy", tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_npy_larger_than_memory_budget(tmp_path, monkeypatch):
    """Chunked copy from a memmap: traced allocations stay near one chunk, far below the file size."""
    import symtrain.storage.convert as conv

    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(20000, 784))
    big[:] = 1.5
    big.flush()
    del big
    monkeypatch.setattr(conv, "CHUNK_BYTES", 2 << 20)
    tracemalloc.start()
    try:
        convert(tmp_path / "big.npy", tmp_path / "o", progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20 < (tmp_path / "big.npy").stat().st_size
    assert open_dataset(tmp_path / "o")["x"][-1, -1] == 1.5


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_streamed_member_by_member(tmp_path, compressed):
    x, y = _mnist_like(300)
    p = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(p, x=x, y=y)
    ds = open_dataset(convert_npz(p, tmp_path / "o", chunk_rows=64))
    assert ds.names == ["x", "y"]
    np.testing.assert_array_equal(ds["x"], x)
    np.testing.assert_array_equal(ds["y"], y)


def test_npz_bounded_memory(tmp_path):
    """Members are streamed from the zip: traced allocations stay near a chunk, not the member size."""
    p = tmp_path / "big.npz"
    np.savez(p, x=np.ones((5000, 784), np.float32), y=np.arange(5000))
    tracemalloc.start()
    try:
        convert_npz(p, tmp_path / "o", chunk_rows=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20 < 5000 * 784 * 4
    assert open_dataset(tmp_path / "o")["y"][-1] == 4999


def test_npz_errors(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros(3), y=np.zeros(4))
    with pytest.raises(DatasetError, match="different row counts"):
        convert(p, tmp_path / "o", progress=False)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="junk.npz"):
        convert(tmp_path / "junk.npz", tmp_path / "o", progress=False)


def test_theano_tutorial_pickle(tmp_path):
    """A generated mnist.pkl.gz: gzip pickle of ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))."""
    parts = (_mnist_like(120), _mnist_like(30), _mnist_like(40))
    p = tmp_path / "mnist.pkl.gz"
    with gzip.open(p, "wb") as f:
        pickle.dump(parts, f, protocol=2)
    out = convert(p, tmp_path / "mnist", dtype="y:int32", progress=False)
    assert sorted(q.name for q in out.iterdir()) == ["datasets.json", "test", "train", "valid"]
    for name, (x, y) in zip(("train", "valid", "test"), parts, strict=True):
        ds = open_dataset(out / name)
        np.testing.assert_array_equal(ds["x"], x)
        np.testing.assert_array_equal(ds["y"], y)
        assert ds.fields["y"].dtype == np.int32


def _py2_array(a: np.ndarray) -> bytes:
    """Protocol-2 opcodes as Python 2's cPickle writes an ndarray: the data is a py2 ``str`` (BINSTRING)."""
    a = np.ascontiguousarray(a)

    def s(b):
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)

    def i(n):
        return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)

    dt = a.dtype
    order = dt.str[:1].encode() if dt.itemsize > 1 else b"|"
    descr = (b"cnumpy\ndtype\n" + s(dt.str[1:].encode()) + i(0) + i(1) + b"\x87R("
             + i(3) + s(order) + b"NNN" + i(-1) + i(-1) + i(0) + b"tb")
    shape = b"(" + b"".join(i(d) for d in a.shape) + b"t"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R("
            + i(1) + shape + descr + b"\x89" + s(a.tobytes()) + b"tb")


def test_python2_pickle_latin1(tmp_path):
    """A Python-2 mnist.pkl.gz holds array bytes as py2 ``str``: it loads only with encoding='latin1'."""
    x = -np.arange(1, 7, dtype=np.float32).reshape(3, 2) / 3  # bytes >= 0x80: not ASCII
    y = np.arange(3, dtype=np.int64)
    pair = b"(" + _py2_array(x) + _py2_array(y) + b"t"
    stream = b"\x80\x02(" + pair + pair + pair + b"t."
    with pytest.raises(UnicodeDecodeError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pickle.loads(stream)  # Python 3's default ASCII decoding fails
    p = tmp_path / "mnist.pkl.gz"
    p.write_bytes(gzip.compress(stream))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core.* paths of py2-era pickles
        out = convert(p, tmp_path / "o", progress=False)
    np.testing.assert_array_equal(open_dataset(out / "valid")["x"], x)
    np.testing.assert_array_equal(open_dataset(out / "test")["y"], y)


def test_bad_pickles(tmp_path):
    p = tmp_path / "wrong.pkl"
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DatasetError, match=r"wrong.pkl.*expected \(\(train_x"):
        convert(p, tmp_path / "o", progress=False)
    (tmp_path / "junk.pkl.gz").write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(DatasetError, match="junk.pkl.gz.*not a readable pickle"):
        convert(tmp_path / "junk.pkl.gz", tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_csv_with_header_and_label(tmp_path):
    x = RNG.random((250, 4)).round(4)
    y = RNG.integers(0, 3, 250)
    p = tmp_path / "d.csv"
    lines = ["a,b,label,c,d"] + [",".join([*map(str, r[:2]), str(lab), *map(str, r[2:])])
                                 for r, lab in zip(x, y, strict=True)]
    p.write_text("\n".join(lines) + "\n")
    ds = open_dataset(convert_csv(p, tmp_path / "o", label_column="label", chunk_rows=40))
    np.testing.assert_allclose(ds["x"], x.astype(np.float32))
    np.testing.assert_array_equal(ds["y"], y)
    assert ds.metadata["label_column"] == "label"
    ds2 = open_dataset(convert_csv(p, tmp_path / "o2", label_column=2, dtype="float64"))
    assert ds2.fields["x"].dtype == np.float64


def test_csv_without_header_and_errors(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("1,2,3\n4,5,6\n")
    ds = open_dataset(convert(p, tmp_path / "o", progress=False))
    assert ds.rows == 2 and ds.fields["x"].shape == (3,) and ds.names == ["x"]
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,0\n4,x,1\n")
    with pytest.raises(DatasetError, match=r"bad.csv: lines 1-2"):
        convert_csv(bad, tmp_path / "b", label_column=-1, header=False)
    with pytest.raises(ConfigError, match="label-column"):
        convert(p, tmp_path / "b", label_column="zz", progress=False)
    frac = tmp_path / "frac.csv"
    frac.write_text("1,2,0.5\n")
    with pytest.raises(DatasetError, match="exactly"):
        convert_csv(frac, tmp_path / "b", label_column=2)
    assert not (tmp_path / "b").exists()


def test_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    x, y = _mnist_like(90)
    p = tmp_path / "d.h5"
    with h5py.File(p, "w") as f:
        f["x"] = x
        f.create_group("labels")["y"] = y
    ds = open_dataset(convert(p, tmp_path / "o", dtype="float16", progress=False))
    assert sorted(ds.names) == ["labels.y", "x"]
    np.testing.assert_array_equal(ds["x"], x.astype(np.float16))
    np.testing.assert_array_equal(ds["labels.y"], y)


def test_hdf5_missing_h5py(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "h5py":
            raise ImportError("no h5py")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    (tmp_path / "d.h5").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"pip install 'symtrain\[hdf5\]'"):
        convert(tmp_path / "d.h5", tmp_path / "o", progress=False)


def test_unknown_format(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match="unknown input format"):
        convert(tmp_path / "d.parquet", tmp_path / "o", progress=False)
