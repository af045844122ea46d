"""History: what ``fit`` returns and checkpoints (per-epoch metrics, validations, the best, why it
stopped)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

_TAILED = ("epochs", "validations")


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

    def to_checkpoint(self, tail: int) -> dict[str, Any]:
        """The bounded form a checkpoint stores: the last ``tail`` epochs and validations plus their totals
        (``epochs_total``, ``validations_total``); the older ones are read back from metrics.jsonl."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in _TAILED}
        out["epoch_numbers"] = 1  # records number epochs from 1 (checkpoints of earlier versions: from 0)
        for k in _TAILED:
            entries = getattr(self, k)
            out[k] = entries[-tail:] if tail else []
            out[f"{k}_total"] = len(entries)
        return out

    @classmethod
    def from_checkpoint(cls, d: dict[str, Any],
                        logged: dict[str, list[dict]] | None) -> tuple[History, list[str]]:
        """Rebuild a History from :meth:`to_checkpoint` output (or a full :meth:`to_dict`), taking the
        entries older than the tail from ``logged`` (see ``metrics.history_records``). Returns it and the
        names of the lists that could not be completed (the log is missing or shorter)."""
        if "epochs_total" in d and d.get("epoch_numbers") != 1:  # an earlier symtrain's: epochs from 0
            d, logged = _from_zero_based(d), _from_zero_based(logged) if logged else logged
        h = cls.from_dict(d)
        incomplete = []
        for k in _TAILED:
            total = d.get(f"{k}_total")
            tail = list(d.get(k, []))
            missing = 0 if total is None else total - len(tail)
            if missing <= 0:
                continue
            older = (logged or {}).get(k, [])
            if len(older) < missing:
                incomplete.append(k)
                continue
            setattr(h, k, older[:missing] + tail)
        return h, incomplete

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def _renumber(rec: Any) -> Any:
    if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) and not isinstance(rec["epoch"], bool):
        return {**rec, "epoch": rec["epoch"] + 1}
    return rec


def _from_zero_based(d: dict[str, Any]) -> dict[str, Any]:
    """History data written when epochs were numbered from 0, renumbered from 1."""
    out = dict(d)
    for k in (*_TAILED, "skipped_steps"):
        if isinstance(out.get(k), list):
            out[k] = [_renumber(r) for r in out[k]]
    if isinstance(out.get("best"), dict):
        out["best"] = _renumber(out["best"])
    return out
