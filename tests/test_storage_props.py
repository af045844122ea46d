"""Property tests: writer/reader round trips over arbitrary dtypes, row shapes and appends; fuzzed
manifests and .npy headers make open_dataset raise only DatasetError/ConfigError."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from symtrain.errors import ConfigError, DatasetError
from symtrain.storage import DatasetWriter, open_dataset, write_dataset

DTYPES = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                   hnp.floating_dtypes(), hnp.complex_number_dtypes())
SETTINGS = settings(max_examples=int(os.environ.get("SYMTRAIN_FUZZ_EXAMPLES", "40")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def scratch():
    """A scratch directory; fsync is a no-op here (durability is not what these properties test, and
    hundreds of fsyncs would dominate the runtime)."""
    d = Path(tempfile.mkdtemp(prefix="symtrain-props-"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)
        yield d
    shutil.rmtree(d, ignore_errors=True)


def _fresh(scratch: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=scratch)) / "ds"


@st.composite
def datasets(draw):
    """A schema of 1-3 fields, and 0-4 appends of 0-6 rows each."""
    names = draw(st.lists(st.sampled_from(["x", "y", "w", "img"]), min_size=1, max_size=3, unique=True))
    schema = {n: (draw(DTYPES), draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))
              for n in names}
    batches = []
    for k in draw(st.lists(st.integers(0, 6), max_size=4)):
        batches.append({n: draw(hnp.arrays(dt, (k, *shape))) for n, (dt, shape) in schema.items()})
    return schema, batches


@SETTINGS
@given(datasets())
def test_round_trip(scratch, case):
    schema, batches = case
    path = _fresh(scratch)
    with DatasetWriter(path, schema, metadata={"k": [1, "two"]}) as w:
        for b in batches:
            w.append(b)
    ds = open_dataset(path)
    rows = sum(len(next(iter(b.values()))) for b in batches)
    assert ds.rows == rows and ds.metadata == {"k": [1, "two"]}
    for name, (dt, shape) in schema.items():
        expect = (np.concatenate([b[name] for b in batches], dtype=dt) if batches  # keeps the byte order
                  else np.zeros((0, *shape), dt))
        got = ds[name]
        assert got.dtype == dt and got.shape == (rows, *shape)
        assert got.tobytes() == expect.tobytes()  # to the bit, NaN payloads included
        plain = np.load(path / f"{name}.npy", mmap_mode="r") if rows and np.prod(shape) else None
        if plain is not None:
            assert plain.tobytes() == expect.tobytes()
    again = _fresh(scratch)
    write_dataset(again,
                  {n: (np.concatenate([b[n] for b in batches], dtype=d) if batches else np.zeros((0, *s), d))
                          for n, (d, s) in schema.items()})
    assert open_dataset(again).fingerprint == ds.fingerprint  # batching does not change the fingerprint


@pytest.fixture(scope="module")
def template(scratch):
    return write_dataset(scratch / "template", {"x": np.arange(12, dtype=np.float32).reshape(6, 2),
                                                "y": np.arange(6)})


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                              max_size=3),
                    max_leaves=12)


@st.composite
def manifests(draw):
    """Valid-looking manifests with some values replaced by fuzz."""
    raw = {"format": "symtrain-dataset", "format_version": 1, "rows": 6, "fingerprint": "abc",
           "fields": {"x": {"dtype": "<f4", "shape": [2], "file": "x.npy"},
                      "y": {"dtype": "<i8", "shape": [], "file": "y.npy"}}, "metadata": {}}
    for key in draw(st.lists(st.sampled_from(sorted(raw)), max_size=3, unique=True)):
        raw[key] = draw(JSON)
    for field in draw(st.lists(st.sampled_from(["x", "y"]), max_size=2, unique=True)):
        if isinstance(raw.get("fields"), dict) and isinstance(raw["fields"].get(field), dict):
            sub = draw(st.sampled_from(["dtype", "shape", "file"]))
            raw["fields"][field][sub] = draw(JSON | st.sampled_from(["<f8", "|O", "V0", "<U3", "f4,f4",
                                                                     "(2,)f4"])
                                             | st.lists(st.integers(-2, 2**62), max_size=3))
    if draw(st.booleans()):
        return json.dumps(raw).encode()
    text = json.dumps(raw).encode()
    cut = draw(st.integers(0, len(text)))
    return text[:cut] + draw(st.binary(max_size=8))


@SETTINGS
@given(manifests())
def test_fuzzed_manifest(scratch, template, content):
    path = _fresh(scratch)
    shutil.copytree(template, path)
    (path / "manifest.json").write_bytes(content)
    try:
        ds = open_dataset(path)
    except (DatasetError, ConfigError):
        return
    for name in ds.names:  # accepted: the data must really be readable as declared
        np.asarray(ds[name])


@SETTINGS
@given(st.data())
def test_fuzzed_npy_header(scratch, template, data):
    path = _fresh(scratch)
    shutil.copytree(template, path)
    f = path / "x.npy"
    raw = bytearray(f.read_bytes())
    header_len = 10 + int.from_bytes(raw[8:10], "little")
    mode = data.draw(st.sampled_from(["flip", "splice", "truncate", "replace"]))
    if mode == "flip":
        for i in data.draw(st.lists(st.integers(0, header_len - 1), min_size=1, max_size=6)):
            raw[i] = data.draw(st.integers(0, 255))
    elif mode == "splice":
        body = data.draw(st.sampled_from([
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 2), }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (6, 2), }",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (6, 2), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (7, 2), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-6, 2), }",
            "{'descr': 'O', 'fortran_order': False, 'shape': (6, 2), }",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 99999999999999999999), }",
            "{'descr': '<f4', 'shape': (6, 2), }", "[1, 2, 3]", "{'descr': '<f4'", "((((((((((", "",
        ]) | st.text(max_size=60))
        encoded = body.encode("utf-8", "replace")[:header_len - 11]
        raw[10:header_len] = (encoded + b" " * (header_len - 11 - len(encoded)) + b"\n")
    elif mode == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        raw[:header_len] = data.draw(st.binary(min_size=0, max_size=header_len + 8))
    f.write_bytes(bytes(raw))
    try:
        ds = open_dataset(path)
    except (DatasetError, ConfigError) as exc:
        assert "x.npy" in str(exc) or "manifest" in str(exc)
        return
    np.asarray(ds["x"])
    assert os.path.getsize(f) == ds.fields["x"].offset + 6 * 8
