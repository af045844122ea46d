"""shuffle: a permutation of the input rows, deterministic by seed, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from symtrain.errors import ConfigError, DatasetError
from symtrain.storage import open_dataset, write_dataset
from symtrain.storage.shuffle import plan_buckets, shuffle_dataset

N = 40_000


@pytest.fixture(scope="module")
def sorted_ds(tmp_path_factory):
    """Label-ordered data (the case shuffle exists for); x row i holds i in every column."""
    d = tmp_path_factory.mktemp("shuf")
    x = np.repeat(np.arange(N, dtype=np.float32)[:, None], 16, axis=1)
    return write_dataset(d / "in", {"x": x, "y": np.arange(N, dtype=np.int64) * 10 // N})


def _rows(path):
    ds = open_dataset(path)
    return np.asarray(ds["x"][:, 0]).astype(np.int64), np.asarray(ds["y"])


def test_permutation_deterministic_by_seed(sorted_ds, tmp_path):
    a = shuffle_dataset(sorted_ds, tmp_path / "a", seed=5, memory_limit=1 << 20, progress=False)
    b = shuffle_dataset(sorted_ds, tmp_path / "b", seed=5, memory_limit=1 << 20, progress=False)
    c = shuffle_dataset(sorted_ds, tmp_path / "c", seed=6, memory_limit=1 << 20, progress=False)
    ia, ya = _rows(a)
    assert np.array_equal(np.sort(ia), np.arange(N))           # every row exactly once
    assert np.array_equal(ya, ia * 10 // N)                     # fields stay aligned row by row
    assert np.array_equal(ia, _rows(b)[0])                      # same seed, same order
    assert not np.array_equal(ia, _rows(c)[0])                  # another seed, another order
    assert open_dataset(a).metadata["shuffled"]["buckets"] > 1
    # well mixed: label-ordered input, yet every 1000-row window holds all ten labels
    assert all(len(set(ya[s:s + 1000])) == 10 for s in range(0, N, 1000))
    assert abs(np.corrcoef(np.arange(N), ia)[0, 1]) < 0.05
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bounded_memory(sorted_ds, tmp_path):
    size = N * (16 * 4 + 8)
    tracemalloc.start()
    try:
        shuffle_dataset(sorted_ds, tmp_path / "m", seed=1, memory_limit=1 << 20, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * (1 << 20) < size


def test_uniform_positions(tmp_path, monkeypatch):
    """Each of 4 rows lands in each position about equally often over many seeds, with 3 buckets and
    2-row scatter chunks forced (fsync skipped: durability is not what this measures)."""
    import os

    import symtrain.storage.shuffle as shuf

    monkeypatch.setattr(shuf, "plan_buckets", lambda rows, row_bytes, memory_limit: (3, 2))
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    path = write_dataset(tmp_path / "s", {"v": np.arange(4)})
    counts = np.zeros((4, 4))
    for seed in range(100):
        out = shuffle_dataset(path, tmp_path / f"o{seed}", seed, progress=False)
        counts[open_dataset(out)["v"], np.arange(4)] += 1
    assert counts.sum() == 400 and (counts.sum(axis=0) == 100).all()
    assert counts.min() > 10 and counts.max() < 42  # expected 25 each (sd 4.3)


def test_errors(sorted_ds, tmp_path):
    existing = write_dataset(tmp_path / "exists", {"v": np.arange(3)})
    with pytest.raises(DatasetError, match="already exists"):
        shuffle_dataset(sorted_ds, existing, seed=0, progress=False)
    with pytest.raises(ConfigError, match="differ from its input"):
        shuffle_dataset(sorted_ds, sorted_ds, seed=0, overwrite=True, progress=False)
    with pytest.raises(ConfigError, match="seed"):
        shuffle_dataset(sorted_ds, tmp_path / "x", seed=-1, progress=False)
    with pytest.raises(ConfigError, match="memory_limit"):
        shuffle_dataset(sorted_ds, tmp_path / "x", seed=0, memory_limit=10, progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        shuffle_dataset(tmp_path / "nope", tmp_path / "x", seed=0, progress=False)
    assert plan_buckets(10**9, 3136, 512 << 20)[0] > 30
