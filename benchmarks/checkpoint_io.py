"""What a checkpoint costs: snapshot + write + fsync of the demo MLP's state, and reading it back.

    .venv/bin/python -m benchmarks.checkpoint_io    # docs/checkpoints.md, "Cost"
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.train.checkpoint import checkpoint_name, load_latest, snapshot, write_checkpoint


def checkpoint_io(repeats: int = 10) -> None:
    """Time writing and reading back the demo MLP's state (784-256-10 + Adam moments, 2.3 MiB)."""
    class _Var:
        def __init__(self, value: np.ndarray):
            self.value = value

        def get_value(self, borrow: bool = False) -> np.ndarray:
            return self.value

    rng = np.random.default_rng(0)
    variables: dict[str, Any] = {"adam/t": _Var(np.asarray(5, np.int64))}
    for name, shape in {"W1": (784, 256), "b1": (256,), "W2": (256, 10), "b2": (10,)}.items():
        for slot in ("", "/adam/m", "/adam/v"):
            variables[name + slot] = _Var(rng.standard_normal(shape).astype(np.float32))
    size = sum(v.value.nbytes for v in variables.values())
    with tempfile.TemporaryDirectory() as d:
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            cursor = {"epoch": 0, "step_in_epoch": i, "global_step": i, "steps_per_epoch": 99}
            meta = {"epochs": 1, "cursor": cursor,
                    "stream": {"plan": {}, "fingerprint": "", "fields": [], "rows": 1}}
            write_checkpoint(Path(d) / checkpoint_name(0, i), snapshot(variables), meta)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_latest(d)
        read = time.perf_counter() - t0
    times.sort()
    print(f"state {size / 2**20:.1f} MiB: snapshot+write+fsync median {times[len(times) // 2] * 1e3:.1f} ms "
          f"(min {times[0] * 1e3:.1f}), read+verify {read * 1e3:.1f} ms")


if __name__ == "__main__":
    checkpoint_io()
