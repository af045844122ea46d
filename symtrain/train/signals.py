"""Graceful interruption: the first SIGINT/SIGTERM asks training to stop after the current step (and
checkpoint); a second one aborts at once by raising KeyboardInterrupt (the previous checkpoint stays valid,
since checkpoints are published atomically).

Handlers are installed only in the main thread (Python delivers signals there; elsewhere the trainer
simply runs without them) and the previous handlers are restored on exit.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulInterrupt:
    """Context manager; ``requested`` is the name of the first signal received (or None)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulInterrupt:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = name
            log.warning("%s received: finishing the current step, then checkpointing and stopping "
                        "(send it again to abort at once)", name)
            return
        log.warning("%s received again: aborting now; the last checkpoint written stays valid", name)
        self.restore()
        raise KeyboardInterrupt(f"{name} received twice")

    def restore(self) -> None:
        """Put back the handlers that were installed before (idempotent)."""
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def __exit__(self, *exc: object) -> None:
        self.restore()
