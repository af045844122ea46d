"""Test-suite settings: FAST_COMPILE (about a second to compile) and float32 unless a test asks otherwise.

Tests that need the default Numba mode pass ``mode="NUMBA"`` explicitly and carry the ``slow`` marker.
Set before the graph library is imported, so every compiled function in the suite sees them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

_FLAGS = "mode=FAST_COMPILE,floatX=float32"
for var in ("PYTENSOR_FLAGS", "AESARA_FLAGS"):
    os.environ[var] = ",".join(f for f in (os.environ.get(var, ""), _FLAGS) if f)


@pytest.fixture
def make_dataset(tmp_path):
    """Factory: write a small dataset of float32 features ``x`` and int64 labels ``y`` and return its path."""
    from symtrain.storage import write_dataset

    def make(rows: int = 1000, features: int = 8, classes: int = 3, seed: int = 0, name: str = "ds", **extra):
        rng = np.random.default_rng(seed)
        arrays = {"x": rng.standard_normal((rows, features)).astype(np.float32),
                  "y": rng.integers(0, classes, rows).astype(np.int64), **extra}
        return write_dataset(tmp_path / name, arrays)

    return make
