"""Learning curves of a run directory as a PNG (``symtrain plot RUN_DIR``); matplotlib is optional."""

from __future__ import annotations

import math
from pathlib import Path

from symtrain.errors import ConfigError
from symtrain.train.metrics import JSONL, read_metrics

PNG = "curves.png"
_SKIP = {"kind", "epoch", "step", "time", "rows", "seconds", "wait_share"}


def _num(v: object) -> float:
    try:
        return float(v)  # "nan"/"inf" strings from the log become floats again
    except (TypeError, ValueError):
        return math.nan


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw training loss (per logging interval) and every validation metric against the global step.

    Left panel: the metrics named like the training loss (train and validation); right panel: the other
    validation metrics (error, accuracy, ...). Writes ``out`` (default ``RUN_DIR/curves.png``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / JSONL).is_file():
        raise ConfigError(f"{run_dir}: no {JSONL} here; is this a run directory written by fit(run_dir=...)?")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'symtrain[plot]'") from None
    records = read_metrics(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    if not train and not valid:
        raise ConfigError(f"{run_dir / JSONL}: no training or validation records to plot yet")
    train_keys = sorted({k for r in train for k in r} - _SKIP)
    valid_keys = sorted({k for r in valid for k in r} - _SKIP)
    shared_keys = [k for k in valid_keys if k in train_keys]
    other_keys = [k for k in valid_keys if k not in train_keys]
    fig, axes = plt.subplots(1, 2 if other_keys else 1, figsize=(11 if other_keys else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for k in train_keys:
        ax.plot([r["step"] for r in train], [_num(r.get(k)) for r in train], label=f"train {k}", alpha=0.8)
    for k in shared_keys:
        ax.plot([r["step"] for r in valid], [_num(r.get(k)) for r in valid], "o-", label=f"valid {k}")
    ax.set_xlabel("step")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if other_keys:
        ax2 = axes[0, 1]
        for k in other_keys:
            ax2.plot([r["step"] for r in valid], [_num(r.get(k)) for r in valid], "o-", label=f"valid {k}")
        ax2.set_xlabel("step")
        ax2.set_title("validation")
        ax2.grid(alpha=0.3)
        ax2.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / PNG
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
