"""A chunk loader in a separate process, filling two staging sets held in shared memory.

Why a process: a Numba-compiled PyTensor step holds the GIL for its whole call, so a loader *thread*
only overlaps it partly; a worker process fills the next chunk truly in parallel (DESIGN invariant 5).
The worker is started with the ``spawn`` method (never ``fork``: the parent has threads and Numba), is
given paths and byte offsets (``FieldSource``), never a memmap, and imports only numpy and
``symtrain.stream.load`` -- not the graph library, and not the caller's ``__main__`` script unless the
``transform`` lives there.

The two staging sets live in ``multiprocessing.shared_memory`` blocks that the parent maps as
C-contiguous numpy arrays; ``wait()`` hands one set out and the stream installs it as the device buffers
with ``set_value(arr, borrow=True)`` (no copy). ``close()`` is idempotent, joins (or terminates) the
worker and unlinks the blocks; a ``weakref.finalize`` does the same at garbage collection and at
interpreter exit, and the multiprocessing resource tracker unlinks them if the parent is killed.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import os
import pickle
import signal
import sys
import traceback
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from symtrain.errors import ConfigError, StreamError
from symtrain.stream.load import FieldSource, Load, fill

_ALIGN = 64  # byte alignment of each field inside a staging block (cache line; numpy needs itemsize)
_POLL = 0.05  # seconds between liveness checks while waiting for the worker
_START_TIMEOUT = 60.0  # seconds for the worker to start and attach the blocks (a spawn costs ~1 s)
_JOIN_GRACE = 0.5  # seconds a closing worker gets to finish its current fill before it is terminated

Transform = Callable[[dict[str, np.ndarray], int], Any]


class WorkerError(Exception):
    """An exception raised in the loader process that could not be sent back as itself."""


def _layout(sources: Mapping[str, FieldSource], rows: int) -> tuple[dict[str, int], int]:
    """Byte offset of each field inside one staging block, and the block size (>= 1)."""
    offsets, pos = {}, 0
    for name, src in sources.items():
        offsets[name] = pos
        pos += -(-rows * src.row_bytes // _ALIGN) * _ALIGN
    return offsets, max(pos, 1)


def _arrays(buf: Any, sources: Mapping[str, FieldSource], rows: int, offsets: Mapping[str, int]
            ) -> dict[str, np.ndarray]:
    """The field arrays of one staging block, as C-contiguous views of ``buf``."""
    out = {}
    for name, src in sources.items():
        dtype = np.dtype(src.dtype)
        count = rows * int(np.prod(src.row_shape, dtype=np.int64))
        out[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=offsets[name]).reshape(rows, *src.row_shape)
    return out


def _pack_error(exc: BaseException) -> tuple[str, Any, str, str]:
    """(kind, payload, type name, traceback text) for an exception raised in the worker.

    The exception goes back as itself when its class, args and attributes pickle (rebuilt without calling
    ``__init__``, so classes such as ``DatasetError(path, problem)`` survive); otherwise as a message.
    """
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        payload = pickle.dumps((type(exc), exc.args, dict(getattr(exc, "__dict__", {}))))
        pickle.loads(payload)
        return "exc", payload, name, tb
    except Exception:
        return "msg", f"{name}: {exc}", name, tb


def _unpack_error(kind: str, payload: Any, name: str, tb: str) -> BaseException:
    """Rebuild the worker's exception in the parent, with the worker traceback attached as a note."""
    exc: BaseException | None = None
    if kind == "exc":
        try:
            cls, args, state = pickle.loads(payload)
            exc = cls.__new__(cls)
            exc.args = args
            exc.__dict__.update(state)
        except Exception:
            exc = None
    if exc is None:
        exc = WorkerError(payload if kind == "msg" else name)
    exc.add_note("Traceback in the loader process:\n" + tb.rstrip())
    return exc


def _worker(conn: Any, names: list[str], sources: dict[str, FieldSource], rows: int, transform: Any) -> None:
    """The loader process: attach both blocks, then fill one per request until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    blocks: list[shared_memory.SharedMemory] = []
    sets: list[dict[str, np.ndarray]] = []
    try:
        offsets, _ = _layout(sources, rows)
        for name in names:
            shm = shared_memory.SharedMemory(name=name)
            blocks.append(shm)
            sets.append(_arrays(shm.buf, sources, rows, offsets))
        if transform is not None:
            transform = pickle.loads(transform)
    except BaseException as exc:
        conn.send(("error", -1, *_pack_error(exc)))
        return
    conn.send(("ready", os.getpid()))
    scratch: dict[str, np.ndarray] = {}
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if msg is None:
                break
            index, load = msg
            try:
                fill(sources, load, sets[index], scratch)
                if transform is not None:
                    transform(sets[index], load.n_valid)
            except BaseException as exc:
                conn.send(("error", index, *_pack_error(exc)))
            else:
                conn.send(("done", index))
    finally:
        sets.clear()
        for shm in blocks:
            shm.close()
        conn.close()


@contextlib.contextmanager
def _without_main(payload: bytes | None) -> Iterator[None]:
    """Keep ``spawn`` from re-importing the caller's ``__main__`` in the worker (it would import the graph
    library and whatever else the script imports) unless the pickled transform refers to it."""
    main = sys.modules.get("__main__")
    if main is None or (payload is not None and b"__main__" in payload):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class _Resources:
    """Everything a ProcessLoader must release; kept apart from the loader so a finalizer can hold it."""

    def __init__(self) -> None:
        self.proc: Any = None
        self.conn: Any = None
        self.shms: list[shared_memory.SharedMemory] = []
        self.maps: list[mmap.mmap] = []

    def release(self) -> None:
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        if proc is not None:
            if proc.is_alive() and conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(None)
            proc.join(_JOIN_GRACE)
            if proc.is_alive():
                proc.terminate()
                proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
            with contextlib.suppress(ValueError):
                proc.close()
        if conn is not None:
            conn.close()
        for shm in self.shms:
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()  # the name goes now; the memory goes with the last mapping
        self.shms.clear()
        for m in self.maps:
            with contextlib.suppress(BufferError):
                m.close()  # BufferError: arrays handed out still use it; unmapped when they die
        self.maps.clear()


def _check_transform(transform: Any) -> bytes | None:
    if transform is None:
        return None
    if not callable(transform):
        raise ConfigError(f"transform must be a callable (arrays, n_valid), got {transform!r}")
    try:
        return pickle.dumps(transform)
    except Exception as exc:
        raise ConfigError(f"transform {transform!r} cannot be sent to the loader process ({exc}): use a "
                          "module-level function (or a functools.partial of one), or loader='thread'") from None


class ProcessLoader:
    """A ``Loader`` whose fills run in a spawned worker process, into two shared-memory staging sets.

    ``submit(load)`` sends the load to the worker and returns at once; ``wait()`` blocks until it is
    filled and returns that set (the other set is filled by the next ``submit``). A failure in the worker
    is raised as ``StreamError`` whose ``__cause__`` is the worker's exception (its traceback attached as
    a note); a worker that dies is detected within ``_POLL`` seconds. Use ``close()`` or ``with``.
    """

    def __init__(self, sources: Mapping[str, FieldSource], chunk_rows: int, transform: Transform | None = None):
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer) or chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        if not sources or not all(isinstance(s, FieldSource) for s in sources.values()):
            raise ConfigError("sources must be a non-empty mapping of field name -> FieldSource")
        self.sources = dict(sources)
        self.chunk_rows = int(chunk_rows)
        payload = _check_transform(transform)
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._sets: list[dict[str, np.ndarray]] = []
        self._free = 0  # the set the next submit fills
        self._pending: tuple[int, Load] | None = None
        self._closed = False
        try:
            self._start(payload)
        except BaseException:
            self.close()
            raise

    def _start(self, payload: bytes | None) -> None:
        offsets, size = _layout(self.sources, self.chunk_rows)
        for _ in range(2):
            shm = shared_memory.SharedMemory(create=True, size=size)
            self._res.shms.append(shm)
            # Map the block ourselves: arrays handed out may outlive close(), and an mmap with exports is
            # simply unmapped when they die (SharedMemory.close() would raise BufferError instead).
            m = mmap.mmap(shm._fd, size)
            self._res.maps.append(m)
            shm.close()
            self._sets.append(_arrays(m, self.sources, self.chunk_rows, offsets))
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._res.conn = parent
        proc = ctx.Process(target=_worker, name="symtrain-loader", daemon=True,
                           args=(child, [s.name for s in self._res.shms], self.sources, self.chunk_rows, payload))
        with _without_main(payload):
            proc.start()
        self._res.proc = proc
        child.close()
        msg = self._receive(_START_TIMEOUT, "starting")
        if msg[0] != "ready":
            cause = _unpack_error(*msg[2:])
            raise StreamError(f"loader process failed to start: {cause}") from cause
        self.pid = msg[1]

    def _receive(self, timeout: float | None, doing: str) -> tuple:
        """The worker's next message; StreamError if it dies (or, with a timeout, does not answer)."""
        conn, proc = self._res.conn, self._res.proc
        waited = 0.0
        while True:
            try:
                if conn.poll(_POLL):
                    return conn.recv()
            except (EOFError, OSError) as exc:
                proc.join(1.0)
                raise StreamError(f"loader process (pid {proc.pid}) closed its pipe while {doing}: "
                                  f"{_describe_exit(proc.exitcode)}") from exc
            if not proc.is_alive():
                if conn.poll(0):  # it may have answered just before exiting
                    continue
                raise StreamError(f"loader process (pid {proc.pid}) died while {doing}: "
                                  f"{_describe_exit(proc.exitcode)}") from ChildProcessError(
                                      f"exit code {proc.exitcode}")
            waited += _POLL
            if timeout is not None and waited >= timeout:
                raise StreamError(f"loader process (pid {proc.pid}) did not answer within {timeout:.0f} s "
                                  f"while {doing}")

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError("the loader is closed")

    def submit(self, load: Load) -> None:
        """Start filling the free staging set with ``load`` (returns at once)."""
        self._check_open()
        if not isinstance(load, Load):
            raise ConfigError(f"submit expects a Load, got {type(load).__name__}")
        if self._pending is not None:
            raise StreamError("submit() called twice without wait(): one fill at a time")
        if load.n_valid > self.chunk_rows:
            raise ConfigError(f"the load holds {load.n_valid} rows, the staging buffers {self.chunk_rows}")
        index = self._free
        try:
            self._res.conn.send((index, load))
        except (OSError, ValueError) as exc:
            proc = self._res.proc
            raise StreamError(f"loader process (pid {proc.pid}) is gone: "
                              f"{_describe_exit(proc.exitcode)}") from exc
        self._pending = (index, load)

    def wait(self) -> dict[str, np.ndarray]:
        """Block until the submitted fill is done and return its staging set; StreamError on failure."""
        self._check_open()
        if self._pending is None:
            raise StreamError("wait() called with no fill submitted")
        index, load = self._pending
        try:
            msg = self._receive(None, "filling a chunk")
        except StreamError:
            self._pending = None
            raise
        self._pending = None
        if msg[0] == "error":
            cause = _unpack_error(*msg[2:])
            first = load.ranges[0] if load.ranges else ()
            raise StreamError(f"chunk loader process failed on the load starting at rows {first} "
                              f"({load.n_valid} rows): {cause}") from cause
        self._free = 1 - index
        return self._sets[index]

    def close(self) -> None:
        """Stop and join the worker, unlink the shared memory; idempotent, safe on every exit path."""
        self._closed = True
        self._pending = None
        self._sets = []
        self._finalizer()

    def __enter__(self) -> ProcessLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pid {getattr(self, 'pid', '?')}"
        return f"<ProcessLoader {list(self.sources)} chunk_rows={self.chunk_rows} {state}>"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
