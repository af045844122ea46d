"""The thread loader: fills one of two staging sets in a background thread while the step runs.

numpy and ``os.preadv`` release the GIL while copying, so a thread overlaps well with the C backend; a
Numba-compiled step holds the GIL for the whole call (see docs/streaming.md for the measured overlap and
the process loader). Failures are re-raised in the caller as StreamError with the cause; ``close()``
joins the thread on every exit path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np

from symtrain.errors import ConfigError, StreamError
from symtrain.stream.load import FieldSource, Load, fill

Transform = Callable[[dict[str, np.ndarray], int], None]


class ThreadLoader:
    """A Loader (see ``symtrain.stream.load.Loader``) backed by one daemon thread and two staging sets."""

    def __init__(self, sources: Mapping[str, FieldSource], chunk_rows: int, transform: Transform | None = None):
        if not sources:
            raise ConfigError("ThreadLoader: no fields to load")
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer) or chunk_rows < 1:
            raise ConfigError(f"ThreadLoader: chunk_rows must be a positive integer, got {chunk_rows!r}")
        self.sources = dict(sources)
        self.chunk_rows = int(chunk_rows)
        self.transform = transform
        self._sets = [{n: s.empty(self.chunk_rows) for n, s in self.sources.items()} for _ in range(2)]
        self._free = 0  # the set the next submit() fills
        self._cond = threading.Condition()
        self._job: tuple[Load, int] | None = None
        self._busy = False  # a submitted fill not yet handed out by wait()
        self._done = False
        self._error: BaseException | None = None
        self._failed_load: Load | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="symtrain-loader", daemon=True)
        self._thread.start()

    def submit(self, load: Load) -> None:
        """Start filling the free staging set with ``load`` (returns at once)."""
        if load.n_valid > self.chunk_rows:
            raise ConfigError(f"ThreadLoader: load of {load.n_valid} rows exceeds chunk_rows={self.chunk_rows}")
        with self._cond:
            if self._closed:
                raise StreamError("ThreadLoader: submit() after close()")
            if self._busy:
                raise StreamError("ThreadLoader: submit() called again before wait() returned the previous fill")
            self._busy, self._done, self._error = True, False, None
            self._job = (load, self._free)
            self._cond.notify_all()

    def wait(self) -> dict[str, np.ndarray]:
        """Block until the submitted fill is done and return its staging set; StreamError on failure."""
        with self._cond:
            if not self._busy:
                raise StreamError("ThreadLoader: wait() without a submitted load")
            while not self._done:
                if not self._thread.is_alive():
                    self._busy = False
                    raise StreamError("ThreadLoader: the loader thread died without finishing the fill")
                self._cond.wait(0.25)  # a bounded wait keeps Ctrl-C responsive
            self._busy = False
            if self._error is not None:
                error, self._error = self._error, None
                raise StreamError(f"loading rows {_describe(self._failed_load)} failed: {error}") from error
            out = self._sets[self._free]
            self._free ^= 1
            return out

    def close(self) -> None:
        """Stop and join the thread (after at most the fill in progress); idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> ThreadLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        scratch: dict = {}
        while True:
            with self._cond:
                while self._job is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                load, which = self._job
                self._job = None
            error = None
            try:
                out = self._sets[which]
                fill(self.sources, load, out, scratch)
                if self.transform is not None:
                    self.transform(out, load.n_valid)
            except BaseException as exc:  # handed to the caller of wait(), never lost in the thread
                error = exc
            with self._cond:
                self._error, self._failed_load, self._done = error, load, True
                self._cond.notify_all()


def _describe(load: Load | None) -> str:
    if load is None:
        return "?"
    ranges = ", ".join(f"{a}:{b}" for a, b in load.ranges[:4]) + (" ..." if len(load.ranges) > 4 else "")
    return f"[{ranges}]"
