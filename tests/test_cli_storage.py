"""The storage subcommands through symtrain.cli.main: output, exit codes, one-line errors."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest

from symtrain.cli import main
from symtrain.storage import open_dataset, write_dataset


@pytest.fixture
def ds(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    return write_dataset(tmp_path / "d", {"x": x, "y": np.arange(20) % 3})


def test_inspect_text_and_json(ds, capsys):
    assert main(["inspect", str(ds)]) == 0
    out = capsys.readouterr().out
    assert "20 rows" in out and "float32" in out and open_dataset(ds).fingerprint in out
    assert "values {0: 7, 1: 7, 2: 6}" in out
    assert main(["inspect", str(ds), "--json", "--check", "--verify"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["rows"] == 20 and rep["verify"]["ok"] and rep["nonfinite"] == {}
    assert rep["fields"]["x"]["stats"]["max"] == 39.0


def test_inspect_check_fails_on_nan(tmp_path, capsys):
    x = np.ones((10, 3), np.float32)
    x[4, 1] = np.nan
    p = write_dataset(tmp_path / "n", {"x": x})
    assert main(["inspect", str(p), "--check"]) == 1
    assert "field 'x' has 1 rows with NaN/inf, first rows [4]" in capsys.readouterr().out


def test_inspect_error_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", x=np.zeros(2))
    assert main(["inspect", str(tmp_path / "a.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a.npz" in err and "symtrain convert" in err


def test_convert_and_shuffle(tmp_path, capsys):
    parts = tuple((np.full((n, 4), n, np.float64), np.arange(n)) for n in (30, 10, 12))
    pkl = tmp_path / "mnist.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        pickle.dump(parts, f)
    assert main(["-q", "convert", str(pkl), str(tmp_path / "m"), "--dtype", "float32"]) == 0
    train = open_dataset(tmp_path / "m" / "train")
    assert train.rows == 30 and train.fields["x"].dtype == np.float32
    assert main(["-q", "shuffle", str(tmp_path / "m" / "train"), str(tmp_path / "s"), "--seed", "3",
                 "--memory", "4M"]) == 0
    assert sorted(open_dataset(tmp_path / "s")["y"].tolist()) == list(range(30))
    assert main(["-q", "shuffle", str(tmp_path / "m" / "train"), str(tmp_path / "s"), "--seed", "3"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["-q", "shuffle", str(tmp_path / "m" / "train"), str(tmp_path / "s"), "--seed", "4",
                 "--overwrite"]) == 0


def test_convert_csv_label_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("f1,f2,target\n0.5,1,2\n1.5,2,0\n")
    assert main(["-q", "convert", str(p), str(tmp_path / "o"), "--label-column", "target"]) == 0
    ds = open_dataset(tmp_path / "o")
    assert ds["y"].tolist() == [2, 0] and ds["x"].tolist() == [[0.5, 1.0], [1.5, 2.0]]


def test_convert_bad_dtype_is_one_line(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros(3))
    assert main(["convert", str(tmp_path / "a.npy"), str(tmp_path / "o"), "--dtype", "x:blah"]) == 2
    assert "--dtype" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_datasets_digits(tmp_path, capsys):
    assert main(["-q", "datasets", "digits", str(tmp_path / "dg"), "--rows", "50", "--seed", "4"]) == 0
    assert open_dataset(tmp_path / "dg" / "train").rows == 50
    assert main(["-q", "datasets", "digits", str(tmp_path / "dg")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "dg"), "--no-stats"]) == 0
    out = capsys.readouterr().out
    assert out.index("/train:") < out.index("/valid:") < out.index("/test:")


def test_datasets_without_name_prints_help(capsys):
    assert main(["datasets"]) == 2
    assert "digits" in capsys.readouterr().out
