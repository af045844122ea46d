"""The callback interface: hooks ``fit`` calls around epochs, chunks, steps, validations and checkpoints.

Every built-in feature (progress bar, metrics log, early stopping, checkpoints) is a Callback, so a user's
own callback sees exactly what they see. Hooks receive the running :class:`~symtrain.train.trainer.Trainer`
(cursor, history, ``request_stop``) and return nothing. See docs/callbacks.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from symtrain.train.contracts import ChunkLike, TrainerLike
    from symtrain.train.history import History


class Callback:
    """Base class: override the hooks you need; every hook is a no-op by default.

    Order of calls in one epoch: ``on_epoch_begin``, then per chunk ``on_chunk_begin``, ``on_step_end``
    after each step, ``on_chunk_end``; ``on_validation_end`` after each validation (also mid-epoch when
    validating every N steps); ``on_epoch_end`` after the epoch's last step (and the accumulation flush).
    ``on_checkpoint`` follows every checkpoint written. A callback that must survive a resume returns its
    state from ``state_dict`` (JSON-serialisable) and takes it back in ``load_state_dict``.
    """

    #: key under which ``state_dict`` is stored in a checkpoint (default: the class name)
    state_key: str | None = None

    def on_fit_begin(self, trainer: TrainerLike) -> None:
        """Before the first step (after a resume has restored the cursor)."""

    def on_epoch_begin(self, trainer: TrainerLike, epoch: int) -> None:
        """Before the first chunk of ``epoch`` (also a resumed, partly done epoch)."""

    def on_chunk_begin(self, trainer: TrainerLike, chunk: ChunkLike) -> None:
        """A chunk's rows are in the device buffers; ``chunk.indices`` are about to be stepped."""

    def on_step_end(self, trainer: TrainerLike, step: int, metrics: Mapping[str, float]) -> None:
        """After global step ``step`` (0-based); ``metrics`` are the step's outputs as floats."""

    def on_chunk_end(self, trainer: TrainerLike, chunk: ChunkLike) -> None:
        """After the last step on ``chunk``."""

    def on_validation_end(self, trainer: TrainerLike, metrics: Mapping[str, float]) -> None:
        """After a validation pass; ``trainer.improved`` says whether it set a new best."""

    def on_epoch_end(self, trainer: TrainerLike, epoch: int, metrics: Mapping[str, float]) -> None:
        """After ``epoch`` (``metrics``: its mean training metrics plus the last validation's ``val_*``)."""

    def on_checkpoint(self, trainer: TrainerLike, path: Path, reason: str) -> None:
        """After a checkpoint was published at ``path``; ``reason`` is "steps", "epoch", "best", "interrupt"
        or "final"."""

    def on_fit_end(self, trainer: TrainerLike, history: History) -> None:
        """Once, on every exit from ``fit`` that is not an immediate abort (also after an error)."""

    def state_dict(self) -> dict | None:
        """JSON-serialisable state saved in checkpoints (None: nothing to save)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned (called on resume before ``on_fit_begin``)."""


def state_key(callback: Callback) -> str:
    return callback.state_key or type(callback).__name__


class CallbackList:
    """Calls a hook on each callback in order."""

    def __init__(self, callbacks: list[Callback]):
        keys = [state_key(c) for c in callbacks if c.state_dict() is not None]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            from symtrain.errors import ConfigError

            raise ConfigError(f"callbacks: two callbacks save state under the same key {dup}; give each a "
                              "distinct `state_key`")
        self.callbacks = list(callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def state(self) -> dict[str, dict]:
        out = {}
        for cb in self.callbacks:
            s = cb.state_dict()
            if s is not None:
                out[state_key(cb)] = s
        return out

    def load_state(self, states: Mapping[str, dict]) -> None:
        for cb in self.callbacks:
            key = state_key(cb)
            if key in states and cb.state_dict() is not None:
                cb.load_state_dict(states[key])


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda t, e, m: print(e, m))``."""

    def __init__(self, **hooks: Any):
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                from symtrain.errors import ConfigError

                raise ConfigError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)
