"""Best-score tracking and early stopping, with the Deep Learning Tutorials' patience semantics.

DLT rule (``patience`` counted in steps): a validation score that beats the best by more than the
relative ``improvement_threshold`` raises the patience to ``max(patience, step * patience_increase)``;
training stops once ``patience <= step``. Plain rule (``wait``): stop after ``wait`` validations in a row
without a new best. Both may be combined; either one stops. State is checkpointed (see fit's resume).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from symtrain.errors import ConfigError
from symtrain.train.callbacks import Callback
from symtrain.validate import check_int

if TYPE_CHECKING:
    from symtrain.train.contracts import TrainerLike

BEST_MODES = ("min", "max")


def check_best_mode(mode: Any) -> str:
    if mode not in BEST_MODES:
        raise ConfigError(f"mode must be 'min' (lower is better) or 'max', got {mode!r}")
    return mode


def better(score: float, best: float | None, mode: str, rel: float = 0.0) -> bool:
    """``score`` beats ``best`` by more than ``rel * |best|`` in direction ``mode`` (NaN never does)."""
    if not math.isfinite(score):
        return False
    if best is None:
        return True
    margin = rel * abs(best)
    return score < best - margin if mode == "min" else score > best + margin


class EarlyStopping(Callback):
    """Stop training when the monitored validation metric stops improving.

    ``monitor``: a key of the validation metrics (``"loss"``, ``"error"``, ``"accuracy"``...).
    ``patience``: DLT patience in steps (None: off). ``patience_increase`` / ``improvement_threshold``:
    DLT's 2 and 0.995 by default (a significant improvement is one below ``best * 0.995`` for positive
    scores). ``wait``: stop after this many validations without any new best (None: off).
    """

    state_key = "early_stopping"

    def __init__(self, monitor: str = "loss", mode: str = "min", *, patience: int | None = None,
                 patience_increase: float = 2.0, improvement_threshold: float = 0.995,
                 wait: int | None = None):
        if patience is None and wait is None:
            raise ConfigError("EarlyStopping needs patience (DLT steps) or wait (validations), or both")
        patience = check_int("patience", patience, 1, allow_none=True)
        wait = check_int("wait", wait, 1, allow_none=True)
        if not (isinstance(patience_increase, int | float) and patience_increase >= 1):
            raise ConfigError(f"patience_increase must be a number >= 1, got {patience_increase!r}")
        if not (isinstance(improvement_threshold, int | float) and 0 < improvement_threshold <= 1):
            raise ConfigError(f"improvement_threshold must be in (0, 1], got {improvement_threshold!r}")
        self.monitor = monitor
        self.mode = check_best_mode(mode)
        self.patience_increase = float(patience_increase)
        self.improvement_threshold = float(improvement_threshold)
        self.wait = wait
        self.patience = patience
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_validations = 0
        self.stopped_at: int | None = None

    # the pure rule, usable without fit -------------------------------------------------------------
    def update(self, score: float, step: int) -> bool:
        """Record a validation ``score`` taken after global step ``step`` (0-based); True if a new best."""
        score = float(score)
        if self.patience is not None and better(score, self.best, self.mode, 1 - self.improvement_threshold):
            self.patience = max(self.patience, int(step * self.patience_increase))
        if better(score, self.best, self.mode):
            self.best, self.best_step, self.bad_validations = score, step, 0
            return True
        self.bad_validations += 1
        return False

    def should_stop(self, step: int) -> bool:
        """True when training should stop after global step ``step``."""
        if self.patience is not None and self.patience <= step:
            return True
        return self.wait is not None and self.bad_validations >= self.wait

    def reason(self) -> str:
        if self.wait is not None and self.bad_validations >= self.wait:
            return f"no improvement of {self.monitor!r} in {self.bad_validations} validations"
        return (f"patience exhausted ({self.patience} steps) without significant improvement of "
                f"{self.monitor!r}")

    # as a callback ---------------------------------------------------------------------------------
    def on_fit_begin(self, trainer: TrainerLike) -> None:
        if self.stopped_at is not None:  # resumed from a run that had already stopped early: stay stopped
            trainer.request_stop("early_stopping",
                                 f"{self.reason()} (at step {self.stopped_at + 1}, before the resume)")

    def on_validation_end(self, trainer: TrainerLike, metrics: Mapping[str, float]) -> None:
        if self.monitor not in metrics:
            raise ConfigError(f"EarlyStopping: monitor={self.monitor!r} is not among the validation metrics "
                              f"{sorted(metrics)}")
        self.update(metrics[self.monitor], trainer.global_step - 1)
        self._check(trainer)

    def on_step_end(self, trainer: TrainerLike, step: int, metrics: Mapping[str, float]) -> None:
        if self.patience is not None:
            self._check(trainer)

    def _check(self, trainer: TrainerLike) -> None:
        step = trainer.global_step - 1
        if self.stopped_at is None and self.should_stop(step):
            self.stopped_at = step
            trainer.request_stop("early_stopping", self.reason())

    def state_dict(self) -> dict:
        return {"patience": self.patience, "best": self.best, "best_step": self.best_step,
                "bad_validations": self.bad_validations, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        self.patience = state["patience"]
        self.best = state["best"]
        self.best_step = state["best_step"]
        self.bad_validations = state["bad_validations"]
        self.stopped_at = state["stopped_at"]
