"""The demo's training half on the real digits only (no enlargement), FAST_COMPILE, two epochs."""

from __future__ import annotations

import pytest


def test_train_digits_small(tmp_path):
    pytest.importorskip("sklearn")
    from symtrain.storage.digits import build_digits
    from symtrain.train.digits_demo import train_digits

    build_digits(tmp_path / "digits", progress=False)
    r = train_digits(tmp_path / "digits", tmp_path / "run", epochs=2, chunk_rows=512, progress=False)
    assert r["history"].stop_reason == "completed" and len(r["history"].epochs) == 2
    assert r["test_rows"] > 300 and r["test_accuracy"] > 0.6  # two short epochs; the demo itself reaches >= 95%
    assert (tmp_path / "run" / "checkpoints" / "best").is_dir()
    pytest.importorskip("matplotlib")
    assert r["plot"].is_file()
