"""The digits builder: real held-out splits, enlarged train rows, determinism, atomic output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symtrain.errors import ConfigError, DatasetError
from symtrain.storage import open_dataset

pytest.importorskip("numba")  # absent from the Aesara test venv, which runs only backend tests
pytest.importorskip("sklearn")

from symtrain.storage.digits import (  # noqa: E402
    FEATURES,
    build_digits,
    digits_is_current,
    load_originals,
    split_indices,
)

ROWS = 3000


@pytest.fixture(scope="module")
def originals():
    return load_originals()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "d"
    build_digits(out, rows=ROWS, seed=1, chunk_rows=1000, progress=False)
    return out


def test_layout_and_types(built):
    assert sorted(p.name for p in built.iterdir()) == ["digits.json", "test", "train", "valid"]
    meta = json.loads((built / "digits.json").read_text())
    assert meta["seed"] == 1 and meta["rows"] == ROWS and "load_digits" in meta["source"]
    for name, rows in meta["splits"].items():
        ds = open_dataset(built / name)
        assert ds.rows == rows and ds.metadata["split"] == name
        assert ds.fields["x"].dtype == np.float32 and ds.fields["x"].shape == (FEATURES,)
        assert ds.fields["y"].dtype == np.int64 and ds.fields["y"].shape == ()
        x = np.asarray(ds["x"])
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert sorted(set(ds["y"].tolist())) == list(range(10))
    assert meta["splits"]["train"] == ROWS
    assert 340 <= meta["splits"]["test"] <= 380 and 160 <= meta["splits"]["valid"] <= 200


def test_held_out_splits_are_real_and_disjoint(built, originals):
    images, labels = originals
    idx = split_indices(labels, 1)
    assert not set(idx["test"]) & set(idx["train"]) and not set(idx["valid"]) & set(idx["train"])
    assert len(idx["test"]) + len(idx["valid"]) + len(idx["train"]) == len(labels)
    for name in ("test", "valid"):
        ds = open_dataset(built / name)
        np.testing.assert_array_equal(ds["x"], images[idx[name]].reshape(-1, FEATURES))
        np.testing.assert_array_equal(ds["y"], labels[idx[name]])
    train = open_dataset(built / "train")
    n_real = len(idx["train"])
    np.testing.assert_array_equal(train["x"][:n_real], images[idx["train"]].reshape(-1, FEATURES))
    # distorted rows differ from every original, and no test image leaks into train
    test_set = {r.tobytes() for r in images[idx["test"]].reshape(-1, FEATURES)}
    assert not any(r.tobytes() in test_set for r in np.asarray(train["x"]))
    assert not np.array_equal(train["x"][n_real:n_real + 5], train["x"][:5])


def test_distorted_rows_are_learnable(built):
    """A nearest-class-mean classifier fit on distorted rows only still recognises the real test images."""
    train, test = open_dataset(built / "train"), open_dataset(built / "test")
    n_real = len(split_indices(load_originals()[1], 1)["train"])
    x, y = np.asarray(train["x"][n_real:]), np.asarray(train["y"][n_real:])
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    tx = np.asarray(test["x"])
    pred = np.argmin(((tx[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == np.asarray(test["y"])).mean() > 0.8


def test_deterministic_and_independent_of_chunking(built, tmp_path):
    again = build_digits(tmp_path / "again", rows=ROWS, seed=1, chunk_rows=777, progress=False)
    for name in ("train", "valid", "test"):
        assert open_dataset(again / name).fingerprint == open_dataset(built / name).fingerprint
    other = build_digits(tmp_path / "other", rows=200, seed=2, progress=False)
    assert open_dataset(other / "test").fingerprint != open_dataset(built / "test").fingerprint
    assert open_dataset(other / "train").rows == 200


def test_is_current_and_overwrite(built, tmp_path):
    assert digits_is_current(built, ROWS, 1)
    assert not digits_is_current(built, ROWS, 2) and not digits_is_current(built, ROWS + 1, 1)
    assert not digits_is_current(tmp_path / "missing", ROWS, 1)
    with pytest.raises(DatasetError, match="already exists"):
        build_digits(built, rows=ROWS, seed=1, progress=False)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="refusing"):
        build_digits(user, rows=10, overwrite=True, progress=False)
    small = build_digits(tmp_path / "s", rows=10, progress=False)
    build_digits(small, rows=20, overwrite=True, progress=False)
    assert open_dataset(small / "train").rows == 20
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kwargs,match", [({"rows": 0}, "rows"), ({"rows": 2.5}, "rows"),
                                          ({"seed": -1}, "seed"),
                                          ({"chunk_rows": 0}, "chunk_rows")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_digits(tmp_path / "d", progress=False, **kwargs)
    assert not (tmp_path / "d").exists()
