"""History: what ``fit`` returns and checkpoints (per-epoch metrics, validations, the best, why it stopped)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class History:
    """The record of a run; JSON-serialisable so that a resumed run continues the same history.

    ``epochs``: one dict per finished epoch (``epoch``, ``step`` = global steps done, mean training
    metrics, the epoch's last ``val_*`` metrics). ``validations``: every validation (``epoch``, ``step``,
    metrics). ``best``: the best validation (``score``, ``epoch``, ``step``, ``metrics``) or None.
    ``stop_reason``: "completed", "early_stopping", "interrupted", or "" while running.
    """

    epochs: list[dict] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    best: dict | None = None
    stop_reason: str = ""
    message: str = ""
    global_step: int = 0
    skipped_steps: list[dict] = field(default_factory=list)
    resumed_from: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"

    def metric(self, name: str) -> list[float]:
        """The per-epoch values of ``name`` (e.g. "loss" or "val_loss"), NaN where an epoch lacks it."""
        return [float(e.get(name, float("nan"))) for e in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)
