"""The thread loader: N threads fill one of two staging sets in the background while the step runs.

numpy and ``os.preadv`` release the GIL while copying, so threads overlap well with the C backend; a
Numba-compiled step holds the GIL for the whole call (see docs/streaming.md for the measured overlap and
the process loader). With ``workers=N`` each thread fills its own contiguous share of a fill's pieces
(and runs the transform on them), which helps when the transform releases the GIL (numpy on large
arrays). Failures are re-raised in the caller as StreamError with the cause; ``close()`` joins the
threads with a bounded wait on every exit path (a thread stuck in a transform is left behind, daemonic,
with a warning, instead of hanging the exit).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from symtrain.errors import ConfigError, StreamError
from symtrain.stream.load import FieldSource, Load
from symtrain.stream.transform import as_loader_transform, describe_error, fill_part, split_pieces
from symtrain.validate import check_int

JOIN_TIMEOUT = 2.0  # seconds close() waits for the threads before leaving a stuck one behind


def check_workers(workers: object) -> int:
    """``workers`` as a positive int (ConfigError otherwise)."""
    return check_int("workers", workers, 1, 64)


def whole_fill(n_valid: int, workers: int) -> list[tuple[int, int]]:
    """Without a transform: the fill cut into ``workers`` nearly equal position ranges."""
    step = -(-n_valid // workers) if n_valid else 0
    return [(a, min(a + step, n_valid)) for a in range(0, n_valid, step)] if step else []


class ThreadLoader:
    """A Loader (``symtrain.stream.load.Loader``) backed by ``workers`` daemon threads, two staging sets.

    ``transform``: an ``Augment`` (from ChunkStream) or a plain ``fn(arrays, n_valid)`` run on the whole
    filled set (one worker only).
    """

    def __init__(self, sources: Mapping[str, FieldSource], chunk_rows: int, transform: Any = None,
                 workers: int = 1):
        if not sources:
            raise ConfigError("ThreadLoader: no fields to load")
        check_int("ThreadLoader: chunk_rows", chunk_rows, 1, expected="a positive integer")
        self.sources = dict(sources)
        self.chunk_rows = int(chunk_rows)
        self.workers = check_workers(workers)
        self.transform = as_loader_transform(transform, self.sources)
        if self.transform is not None:
            self.transform.pieces(0, self.workers)  # a loader-level transform refuses workers > 1 here
        buffers = self.transform.buffer_sources if self.transform is not None else self.sources
        self._sets = [{n: s.empty(self.chunk_rows) for n, s in buffers.items()} for _ in range(2)]
        self._free = 0  # the set the next submit() fills
        self._cond = threading.Condition()
        self._jobs: list[tuple[Load, int, list[tuple[int, int]]] | None] = [None] * self.workers
        self._left = 0  # workers still busy with the submitted fill
        self._busy = False  # a submitted fill not yet handed out by wait()
        self._error: BaseException | None = None
        self._failed_load: Load | None = None
        self._closed = False
        names = ([f"symtrain-loader-{k}" for k in range(self.workers)] if self.workers > 1
                 else ["symtrain-loader"])
        # Started by the first submit(), not here: a Ctrl-C landing inside the constructor (a thread start
        # can take long on a loaded machine) would otherwise leave threads that no caller can close.
        self._threads = [threading.Thread(target=self._run, args=(k,), name=names[k], daemon=True)
                         for k in range(self.workers)]

    def submit(self, load: Load) -> None:
        """Start filling the free staging set with ``load`` (returns at once)."""
        if load.n_valid > self.chunk_rows:
            raise ConfigError(f"ThreadLoader: load of {load.n_valid} rows exceeds "
                              f"chunk_rows={self.chunk_rows}")
        if self.transform is not None:
            parts = split_pieces(self.transform.pieces(load.n_valid, self.workers), self.workers)
        else:
            parts = [[p] for p in whole_fill(load.n_valid, self.workers)]
            parts += [[] for _ in range(self.workers - len(parts))]
        with self._cond:
            if self._closed:
                raise StreamError("ThreadLoader: submit() after close()")
            if self._busy:
                raise StreamError("ThreadLoader: submit() called again before wait() returned the "
                                  "previous fill")
            self._busy, self._error, self._failed_load = True, None, None
            self._left = self.workers
            self._jobs = [(load, self._free, parts[k]) for k in range(self.workers)]
            self._cond.notify_all()
        for t in self._threads:
            if t.ident is None:  # never started (first fill); close() skips threads not started yet
                t.start()

    def wait(self) -> dict[str, np.ndarray]:
        """Block until the submitted fill is done and return its staging set; StreamError on failure."""
        with self._cond:
            if not self._busy:
                raise StreamError("ThreadLoader: wait() without a submitted load")
            while self._left:
                if not all(t.is_alive() for t in self._threads):
                    self._busy = False
                    raise StreamError("ThreadLoader: a loader thread died without finishing the fill")
                self._cond.wait(0.25)  # a bounded wait keeps Ctrl-C responsive
            self._busy = False
            if self._error is not None:
                error, self._error = self._error, None
                where = _describe(self._failed_load)
                raise StreamError(f"loading rows {where} failed: {describe_error(error)}") from error
            out = self._sets[self._free]
            self._free ^= 1
            return out

    def close(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop and join the threads, waiting at most ``timeout`` seconds in all; idempotent.

        A thread still busy after that (a transform that never returns) is left running as a daemon and
        named in a RuntimeWarning: an exit path never hangs on it.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        me = threading.current_thread()
        deadline = _now() + timeout
        stuck = []
        for t in self._threads:
            if t.is_alive() and t is not me:
                t.join(max(deadline - _now(), 0.0))
                if t.is_alive():
                    stuck.append(t.name)
        if stuck:
            warnings.warn(f"loader thread(s) {stuck} still busy (a transform that does not return?) after "
                          f"{timeout:.1f} s; left behind as daemon threads", RuntimeWarning, stacklevel=2)

    def __enter__(self) -> ThreadLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, k: int) -> None:
        scratch: dict = {}
        while True:
            with self._cond:
                while self._jobs[k] is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                load, which, pieces = self._jobs[k]
                self._jobs[k] = None
            error = None
            try:
                fill_part(self.sources, load, self._sets[which], self.transform, pieces, scratch,
                          zero_tail=k == 0)
            except BaseException as exc:  # handed to the caller of wait(), never lost in the thread
                error = exc
            with self._cond:
                if error is not None and self._error is None:
                    self._error, self._failed_load = error, load
                self._left -= 1
                self._cond.notify_all()


def _now() -> float:
    import time

    return time.monotonic()


def _describe(load: Load | None) -> str:
    if load is None:
        return "?"
    ranges = ", ".join(f"{a}:{b}" for a, b in load.ranges[:4]) + (" ..." if len(load.ranges) > 4 else "")
    return f"[{ranges}]"
