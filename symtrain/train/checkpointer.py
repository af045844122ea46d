"""The Checkpointer callback: decides when ``fit`` writes a checkpoint (the writing is in checkpoint.py).

Every ``every_steps`` steps, at the end of every ``every_epochs``-th epoch (and the last one), on a new
best validation (to ``checkpoints/best``, kept apart from the rotation), on an interrupting signal, and
once more when the run ends if the last one is not at the final cursor. Only the newest ``keep`` are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from symtrain.train.callbacks import Callback
from symtrain.validate import check_int

if TYPE_CHECKING:
    from symtrain.train.contracts import TrainerLike
    from symtrain.train.history import History


class Checkpointer(Callback):
    """Writes checkpoints through ``trainer.save_checkpoint``; put it after every callback with state."""

    def __init__(self, every_steps: int | None = None, every_epochs: int | None = 1, best: bool = True):
        self.every_steps = check_int("checkpoint_every_steps", every_steps, 1, allow_none=True)
        self.every_epochs = check_int("checkpoint_every_epochs", every_epochs, 1, allow_none=True)
        self.best = bool(best)
        self.last_cursor: tuple[int, int] | None = None

    def _save(self, trainer: TrainerLike, reason: str) -> None:
        cursor = trainer.cursor()
        if reason != "best" and self.last_cursor == cursor:
            return
        trainer.save_checkpoint(reason)
        if reason != "best":
            self.last_cursor = cursor

    def on_fit_begin(self, trainer: TrainerLike) -> None:
        self.last_cursor = trainer.cursor() if trainer.resumed else None

    def on_step_end(self, trainer: TrainerLike, step: int, metrics: Mapping[str, float]) -> None:
        if trainer.stop_reason == "interrupted":
            self._save(trainer, "interrupt")
        elif self.every_steps and trainer.global_step % self.every_steps == 0:
            self._save(trainer, "steps")

    def on_validation_end(self, trainer: TrainerLike, metrics: Mapping[str, float]) -> None:
        if self.best and trainer.improved:
            self._save(trainer, "best")

    def on_epoch_end(self, trainer: TrainerLike, epoch: int, metrics: Mapping[str, float]) -> None:
        if trainer.stop_reason == "interrupted":
            self._save(trainer, "interrupt")
        elif self.every_epochs and ((epoch + 1) % self.every_epochs == 0 or epoch + 1 == trainer.epochs):
            self._save(trainer, "epoch")

    def on_fit_end(self, trainer: TrainerLike, history: History) -> None:
        if trainer.stop_reason in ("completed", "early_stopping"):
            self._save(trainer, "final")
