"""Smoke test of every example script as `symtrain train` runs it: tiny digits-shaped data, one or two
epochs, FAST_COMPILE; the loss must be finite and (where validation exists) a best recorded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Setting default_update is deprecated:DeprecationWarning")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["logistic_regression", "mlp", "convnet", "denoising_autoencoder", "gradient_accumulation"]


@pytest.fixture(scope="module")
def digits_like(tmp_path_factory):
    from symtrain.storage import write_dataset

    tmp = tmp_path_factory.mktemp("ex")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 200).astype(np.int64)
    x = (rng.random((200, 784)) * 0.3).astype(np.float32)
    x[np.arange(200), y * 70] = 1.0  # a learnable signal
    return write_dataset(tmp / "train",
                         {"x": x[:160], "y": y[:160]}), write_dataset(tmp / "valid",
                                                                      {"x": x[160:], "y": y[160:]})


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_trains(name, digits_like, tmp_path):
    from symtrain.train.commands import run_script

    train, valid = digits_like
    if name == "convnet":  # FAST_COMPILE runs im2col in Python (~0.7 s a step): a few steps suffice here
        from symtrain.storage import open_dataset

        train = open_dataset(train).split(0, 48)
    h = run_script(EXAMPLES / f"{name}.py", train, tmp_path / "run", valid=valid, epochs=2,
                   stream_options={"batch_size": 16, "chunk_rows": 64}, fit_options={"progress": False})
    assert h.stop_reason in ("completed", "early_stopping") and h.global_step >= 6
    assert all(math.isfinite(v) for e in h.epochs for k, v in e.items() if k == "loss")
    assert h.best is not None and (tmp_path / "run" / "metrics.jsonl").is_file()
