"""Fuzzing the two parsers that read untrusted bytes: ``.npy`` headers and ``manifest.json``.

tests/test_storage_props.py mutates a real dataset (bit flips, splices, truncation). This file adds
generated headers and manifests aimed at the parser's edges: truncated magic, every version byte, a length
field that lies, huge/negative/non-integer dims, odd descr values, non-dict literals, deep JSON nesting,
huge numbers, non-UTF-8 bytes and unreadable manifest paths. The only acceptable failure is a
DatasetError (or ConfigError) naming the file; anything accepted must satisfy the header's invariants.
"""

from __future__ import annotations

import itertools
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from symtrain.errors import ConfigError, DatasetError
from symtrain.storage.manifest import FORMAT_NAME, read_manifest
from symtrain.storage.npyfile import SUPPORTED_KINDS, check_size, read_header

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
MAGIC = b"\x93NUMPY"
_n = itertools.count()

DESCRS = st.sampled_from([
    "'<f4'", "'>i8'", "'|b1'", "'<c16'", "'|S3'", "'<U2'", "'|V8'", "'<M8[s]'", "'O'", "'|O'", "'V0'", "'S0'",
    "'f4,f4'", "'(2,)f4'", "'<f99'", "'xyz'", "''", "[('a', '<f4')]", "[('a', '<f4', (2,))]", "None", "4",
    "{}",
    "[]", "'<V2147483648'", "b'<f4'", "'\\udcff'",
])
DIMS = st.one_of(st.integers(-3, 10), st.integers(2**31 - 2, 2**31 + 2), st.integers(2**62, 2**64 + 5),
                 st.just(10**40), st.sampled_from(["1.5", "True", "'3'", "None", "(2,)", "-0"]))
SHAPES = st.one_of(
    st.lists(DIMS, max_size=4).map(lambda ds: "(" + "".join(f"{d}, " for d in ds) + ")"),
    st.sampled_from(["[2, 3]", "3", "None", "()", "(,)", "(1, 2", "{'a': 1}"]),
)
FORTRAN = st.sampled_from(["False", "True", "0", "1", "'no'", "None"])


@st.composite
def header_bodies(draw):
    kind = draw(st.sampled_from(["dict", "dict", "dict", "missing-key", "extra-key", "literal", "text"]))
    if kind == "literal":
        return draw(st.sampled_from(["[1, 2, 3]", "1", "'descr'", "None", "(((((", "{'descr': '<f4'",
                                     "{" * 200 + "}" * 200, "[" * 5000 + "]" * 5000, "lambda: 0",
                                     "__import__('os')"]))
    if kind == "text":
        return draw(st.text(max_size=80))
    entries = {"descr": draw(DESCRS), "fortran_order": draw(FORTRAN), "shape": draw(SHAPES)}
    if kind == "missing-key":
        entries.pop(draw(st.sampled_from(sorted(entries))))
    if kind == "extra-key":
        entries["extra"] = "1"
    return "{" + "".join(f"'{k}': {v}, " for k, v in entries.items()) + "}"


@st.composite
def valid_npy(draw):
    """A real .npy written by numpy (any supported dtype, small shape, version 1/2/3), sometimes cut short."""
    import io

    dtype = np.dtype(draw(st.sampled_from(["<f4", ">f8", "|b1", "<i2", "<c8", "|S3", "<U2", "|V4",
                                           "<M8[s]"])))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(shape, dtype),
                              version=draw(st.sampled_from([(1, 0), (2, 0), (3, 0)])))
    raw = buf.getvalue()
    if draw(st.integers(0, 3)) == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


@st.composite
def npy_files(draw):
    """Whole files: magic (maybe truncated), version, a length field (maybe lying), body, padding, data."""
    if draw(st.integers(0, 3)) == 0:
        return draw(valid_npy())
    magic = MAGIC if draw(st.integers(0,
                                      9)) else MAGIC[:draw(st.integers(0, 5))] + draw(st.binary(max_size=3))
    version = draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (0, 0), (4, 0), (255, 255)]))
    body = draw(header_bodies()).encode("utf-8", "surrogatepass") + b"\n"
    fmt = "<H" if version[0] == 1 else "<I"
    true_len = len(body)
    length = draw(st.one_of(st.just(true_len), st.just(true_len), st.integers(0, 2**16 - 1),
                            st.just(2**20 + 1), st.just(2**32 - 1)))
    try:
        packed = struct.pack(fmt, length)
    except struct.error:
        packed = struct.pack("<I", length)
    data = draw(st.binary(max_size=64))
    return magic + bytes(version) + packed + body + data


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@SETTINGS
@given(npy_files())
def test_crafted_npy_headers(scratch, content):
    path = scratch / f"f{next(_n)}.npy"
    path.write_bytes(content)
    try:
        try:
            header = read_header(path)
        except (DatasetError, ConfigError) as exc:
            assert str(path) in str(exc)
            event("npy: refused")
            return
        event("npy: header accepted")
        # accepted: the invariants every reader relies on
        assert (header.dtype.kind in SUPPORTED_KINDS and not header.dtype.hasobject
                and header.dtype.itemsize > 0)
        assert header.dtype.fields is None and header.dtype.subdtype is None
        assert isinstance(header.shape, tuple) and all(isinstance(d, int) and d >= 0 for d in header.shape)
        assert 10 <= header.offset <= len(content)
        try:
            check_size(path, header)
        except DatasetError as exc:
            assert str(path) in str(exc)
            return
        event("npy: header and size accepted")
        arr = np.load(path, mmap_mode="r") if header.nbytes else None  # numpy agrees with what we accepted
        if arr is not None:
            assert arr.shape == header.shape and arr.dtype == header.dtype
    finally:
        path.unlink()


def test_npy_edge_headers_by_hand(scratch):
    """The classic crashers, each named: every one is a DatasetError naming the file."""
    def npy(body: str, version=(1, 0), length=None) -> bytes:
        raw = body.encode() + b"\n"
        n = len(raw) if length is None else length
        return MAGIC + bytes(version) + (struct.pack("<H", n) if version[0] == 1
                                         else struct.pack("<I", n)) + raw

    cases = {
        "empty": b"", "magic-only": MAGIC, "magic-truncated": MAGIC[:4], "no-length": MAGIC + b"\x01\x00",
        "length-lies": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", length=4000),
        "huge-v2-length": npy("{}", version=(2, 0), length=2**31),
        "negative-dim": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2), }"),
        "float-dim": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1.5, 2), }"),
        "huge-dims": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2**62, 2**62), }"),
        "object": npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"),
        "bad-descr": npy("{'descr': 'not-a-dtype', 'fortran_order': False, 'shape': (2,), }"),
        "structured": npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }"),
        "non-dict": npy("[1, 2, 3]"),
        "code": npy("__import__('os').system('false')"),
        "fortran": npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }"),
        "unknown-version": npy("{}", version=(9, 9)),
    }
    for name, content in cases.items():
        path = scratch / f"edge-{name}.npy"
        path.write_bytes(content)
        with pytest.raises(DatasetError) as info:
            header = read_header(path)
            check_size(path, header)  # huge dims parse but can never match the file's size
        assert str(path) in str(info.value), name


# ----- manifest.json --------------------------------------------------------------------------------------

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.just(10**40) | st.floats() | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=8)
FIELD_DTYPES = st.sampled_from(["<f4", "|O", "V0", "S0", "<U0", "<V2147483648", "f4,f4", "(2,)f4", "<M8[D]",
                                "<m8", "float32", "<f16", "", "garbage", "O8"]) | st.text(max_size=6) | VALUES
FIELD_SHAPES = st.lists(st.integers(-2, 2**64), max_size=4) | VALUES


@st.composite
def manifest_bytes(draw):
    if draw(st.integers(0, 2)) == 0:
        return mutated_manifest(draw)
    fields = draw(st.dictionaries(st.text(max_size=10) | st.sampled_from(["x", "..", "a/b", "x.npy", "_"]),
                                  st.fixed_dictionaries({"dtype": FIELD_DTYPES, "shape": FIELD_SHAPES},
                                                        optional={"file": st.text(max_size=8)}) | VALUES,
                                  max_size=3))
    raw = {"format": draw(st.sampled_from([FORMAT_NAME, FORMAT_NAME, "other"]) | VALUES),
           "format_version": draw(st.sampled_from([1, 1, 2, 0, -1, 1.0, True, "1"]) | VALUES),
           "rows": draw(st.integers(-1, 10) | st.just(2**70) | VALUES), "fields": fields,
           "fingerprint": draw(st.sampled_from(["abc", ""]) | VALUES), "metadata": draw(VALUES)}
    text = json.dumps(raw, allow_nan=True).encode()
    how = draw(st.sampled_from(["as-is", "as-is", "truncate", "latin1", "deep"]))
    if how == "truncate":
        text = text[:draw(st.integers(0, len(text)))]
    elif how == "latin1":
        text = text.replace(b'"', b'"\xff', 1)
    elif how == "deep":
        text = b"[" * 200000 + b"]" * 200000
    return text


def mutated_manifest(draw) -> bytes:
    """A valid manifest with 0-2 values swapped for edge values (so some are accepted and checked)."""
    raw = {"format": FORMAT_NAME, "format_version": 1, "rows": draw(st.integers(0, 2**63)),
           "fingerprint": "f",
           "fields": {"x": {"dtype": "<f4", "shape": [2], "file": "x.npy"},
                      "y": {"dtype": "|b1", "shape": []}},
           "metadata": {"k": draw(VALUES)}}
    wheres = draw(st.lists(st.sampled_from(["rows", "format_version", "x.dtype", "x.shape", "y.file", "name",
                                            "fields"]), max_size=2, unique=True))
    for where in sorted(wheres, key=lambda w: w == "fields"):  # replacing "fields" last keeps the paths valid
        if where in ("rows", "format_version"):
            raw[where] = draw(st.sampled_from([2**70, -1, 0, 1.0, True, None, "1", 2]))
        elif where == "x.dtype":
            raw["fields"]["x"]["dtype"] = draw(FIELD_DTYPES)
        elif where == "x.shape":
            raw["fields"]["x"]["shape"] = draw(FIELD_SHAPES)
        elif where == "y.file":
            raw["fields"]["y"]["file"] = draw(st.sampled_from(["../y.npy", "/etc/passwd", "y.npy", "x.npy"]))
        elif where == "fields":
            raw["fields"] = draw(st.sampled_from([{}, [], None, {"x": None}]))
        else:
            raw["fields"][draw(st.sampled_from(["..", "a/b", ".hidden", "x" * 200, "ok-name.v2"]))] = {
                "dtype": "<f4", "shape": []}
    return json.dumps(raw).encode()


@SETTINGS
@given(manifest_bytes())
def test_crafted_manifests(scratch, content):
    d = scratch / f"m{next(_n)}"
    d.mkdir()
    (d / "manifest.json").write_bytes(content)
    try:
        m = read_manifest(d)
    except (DatasetError, ConfigError) as exc:
        assert str(d) in str(exc)
        event("manifest: refused")
        return
    event("manifest: accepted")
    assert m.format_version == 1 and isinstance(m.rows, int) and m.rows >= 0 and m.fields
    for name, spec in m.fields.items():
        assert spec.file == f"{name}.npy" and "/" not in name and all(isinstance(s, int) and s >= 0
                                                                        for s in spec.shape)


def test_unreadable_manifest_paths(scratch):
    """manifest.json that is a directory, a dangling or looping symlink, or a FIFO-free special file."""
    cases = {}
    d = scratch / "m-dir"
    (d / "manifest.json").mkdir(parents=True)
    cases["directory"] = d
    d = scratch / "m-loop"
    d.mkdir()
    os.symlink("manifest.json", d / "manifest.json")
    cases["symlink-loop"] = d
    d = scratch / "m-dangling"
    d.mkdir()
    os.symlink("nowhere.json", d / "manifest.json")
    cases["dangling"] = d
    for name, path in cases.items():
        with pytest.raises(DatasetError) as info:
            read_manifest(path)
        assert "manifest.json" in str(info.value), name
