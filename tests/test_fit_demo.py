"""The demo end to end on a small build (2000 train rows, one epoch, FAST_COMPILE): data, inspect,
out-of-core training with validation and checkpoints, test accuracy, run directory, plot."""

from __future__ import annotations

import re

import pytest


def test_demo_small(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from symtrain.demo import main

    assert main(["--out", str(tmp_path / "demo"), "--rows", "2000", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    acc = float(re.search(r"test accuracy: ([\d.]+)% on the (\d+) real held-out", out)[1])
    assert acc > 60  # two short epochs here; the full demo reaches >= 95%
    run = tmp_path / "demo" / "run"
    assert f"run directory: {run}" in out
    assert (run / "checkpoints" / "best").is_dir() and (run / "metrics.csv").is_file()
    if "learning curves: " + str(run / "curves.png") in out:
        assert (run / "curves.png").is_file()
