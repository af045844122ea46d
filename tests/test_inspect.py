"""inspect: summary facts, chunked statistics against numpy, NaN/inf scan, fingerprint verification."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symtrain.errors import DatasetError
from symtrain.storage import open_dataset, write_dataset
from symtrain.storage.inspect import check_finite, field_stats, inspect_path, recompute_fingerprint


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((501, 6)) * 3 + 1).astype(np.float32)
    y = rng.integers(0, 4, 501)
    return write_dataset(tmp_path / "d", {"x": x, "y": y}), x, y


def test_stats_match_numpy_across_chunks(data):
    path, x, y = data
    ds = open_dataset(path)
    st = field_stats(ds, "x", chunk_bytes=24 * 7)  # 7 rows per chunk
    x64 = x.astype(np.float64)
    assert st["count"] == x.size and st["nonfinite"] == 0
    assert st["min"] == x.min() and st["max"] == x.max()
    assert st["mean"] == pytest.approx(x64.mean(), rel=1e-12)
    assert st["std"] == pytest.approx(x64.std(), rel=1e-10)
    hist = field_stats(ds, "y", chunk_bytes=64)["histogram"]
    assert hist == {str(k): int(v) for k, v in zip(*np.unique(y, return_counts=True), strict=True)}


def test_check_finds_injected_nan(data, tmp_path):
    _, x, y = data
    x = x.copy()
    x[17, 2], x[400, 0] = np.nan, -np.inf
    path = write_dataset(tmp_path / "nan", {"x": x, "y": y})
    bad = check_finite(open_dataset(path), chunk_bytes=100)
    assert bad == {"x": {"rows": 2, "first_rows": [17, 400]}}
    st = field_stats(open_dataset(path), "x")
    assert st["nonfinite"] == 2 and np.isfinite(st["mean"])
    assert check_finite(open_dataset(path).split(100, 501)) == {"x": {"rows": 1, "first_rows": [400]}}


def test_verify_detects_changed_data(data):
    path, _, _ = data
    ds = open_dataset(path)
    assert recompute_fingerprint(ds, chunk_bytes=1000) == ds.fingerprint
    with open(path / "x.npy", "r+b") as f:  # same size, one byte flipped: only the fingerprint can tell
        f.seek(-5, 2)
        b = f.read(1)
        f.seek(-5, 2)
        f.write(bytes([b[0] ^ 1]))
    ds = open_dataset(path)
    assert recompute_fingerprint(ds) != ds.fingerprint
    rep = inspect_path(path, verify=True)[0]
    assert rep["verify"]["ok"] is False


def test_report_is_json_serialisable_and_finds_groups(tmp_path):
    (tmp_path / "grp").mkdir()
    for name in ("test", "train"):
        write_dataset(tmp_path / "grp" / name, {"x": np.zeros((3, 2), np.float32)})
    reps = inspect_path(tmp_path / "grp", check=True, verify=True)
    assert [r["path"].rsplit("/", 1)[1] for r in reps] == ["train", "test"]
    json.dumps(reps)
    with pytest.raises(DatasetError, match="neither a dataset"):
        inspect_path(tmp_path)
