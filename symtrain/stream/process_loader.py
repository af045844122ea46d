"""A chunk loader in a separate process, filling two staging sets held in shared memory.

Why a process: a Numba-compiled PyTensor step holds the GIL for its whole call, so a loader *thread*
only overlaps it partly; a worker process fills the next chunk truly in parallel.
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

import ast
import contextlib
import importlib.machinery
import importlib.util
import mmap
import multiprocessing as mp
import os
import pickle
import pickletools
import signal
import sys
import threading
import time
import traceback
import types
import weakref
from collections.abc import Iterator, Mapping
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.errors import ConfigError, StreamError
from symtrain.stream.load import FieldSource, Load
from symtrain.stream.prefetch import check_workers, whole_fill
from symtrain.stream.transform import as_loader_transform, describe_error, fill_part, split_pieces
from symtrain.validate import check_int

_ALIGN = 64  # byte alignment of each field inside a staging block (cache line; numpy needs itemsize)
_POLL = 0.05  # seconds between liveness checks while waiting for the worker
_START_TIMEOUT = 60.0  # seconds for the worker to start and attach the blocks (a spawn costs ~1 s)
_JOIN_GRACE = 0.5  # seconds a closing worker gets to finish its current fill before it is terminated
_KILL_WAIT = 5.0  # seconds to reap a SIGKILLed worker (bounded: an exit path never hangs)
IN_WORKER_ENV = "SYMTRAIN_LOADER_WORKER"  # set in loader processes (a nested loader start is refused)


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
        flat = np.frombuffer(buf, dtype=dtype, count=count, offset=offsets[name])
        out[name] = flat.reshape(rows, *src.row_shape)
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


def _load_script_modules(modules: list[tuple[str, str]]) -> None:
    """Import, under their own names, the modules loaded from a path (a ``symtrain train`` script)."""
    for name, path in modules:
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {name!r} from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def _watch_parent(parent: int) -> None:
    """End this worker once its parent is gone, even inside a transform that never returns (a closed pipe
    is only noticed between fills). Polls ``getppid``: a parent-death signal would follow the parent
    *thread* that started the worker, not the process."""
    while os.getppid() == parent:
        time.sleep(_POLL * 10)
    os.kill(os.getpid(), signal.SIGKILL)


def _worker(conn: Any, names: list[str], sources: dict[str, FieldSource], rows: int, transform: Any,
            modules: list[tuple[str, str]], parent: int) -> None:
    """The loader process: attach both blocks, then fill its share of one per request until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    threading.Thread(target=_watch_parent, args=(parent,), name="symtrain-parent-watch", daemon=True).start()
    os.environ[IN_WORKER_ENV] = "1"
    blocks: list[shared_memory.SharedMemory] = []
    sets: list[dict[str, np.ndarray]] = []
    try:
        if transform is not None:
            _load_script_modules(modules)
            transform = pickle.loads(transform)
        buffers = transform.buffer_sources if transform is not None else sources
        offsets, _ = _layout(buffers, rows)
        for name in names:
            shm = shared_memory.SharedMemory(name=name)
            blocks.append(shm)
            sets.append(_arrays(shm.buf, buffers, rows, offsets))
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
            index, load, pieces, zero_tail = msg
            try:
                fill_part(sources, load, sets[index], transform, pieces, scratch, zero_tail)
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
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.shms: list[shared_memory.SharedMemory] = []
        self.maps: list[mmap.mmap] = []

    def release(self) -> None:
        """Stop every worker (bounded: ask, terminate, kill), unlink the blocks, unmap what can be."""
        procs, conns = self.procs, self.conns
        self.procs, self.conns = [], []
        for proc, conn in zip(procs, conns):
            if proc.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    conn.send(None)
        deadline = time.monotonic() + _JOIN_GRACE
        for proc in procs:
            proc.join(max(deadline - time.monotonic(), 0.0))
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 2.0
        for proc in procs:
            proc.join(max(deadline - time.monotonic(), 0.0))
            if proc.is_alive():
                proc.kill()
                proc.join(_KILL_WAIT)  # SIGKILL cannot be refused; bounded all the same
            with contextlib.suppress(ValueError):
                proc.close()
        for conn in conns:
            conn.close()
        for shm in self.shms:
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()  # the name goes now; the memory goes with the last mapping
        self.shms.clear()
        for m in self.maps:
            with contextlib.suppress(BufferError):
                m.close()  # BufferError: arrays handed out still use it; unmapped when they die
        self.maps.clear()


def _check_transform(transform: Any) -> tuple[bytes | None, list[tuple[str, str]]]:
    """The pickled transform, and the path-loaded modules the worker must import first to unpickle it."""
    if transform is None:
        return None, []
    fn = getattr(transform, "fn", transform)
    try:
        payload = pickle.dumps(transform)
    except Exception as exc:
        raise ConfigError(f"transform {fn!r} cannot be sent to the loader process ({exc}): use a "
                          "module-level function (or a functools.partial of one), or loader='thread'"
                          ) from None
    names = {arg for op, arg, _ in pickletools.genops(payload) if isinstance(arg, str)}
    if "__main__" in names:
        _check_main_guard(fn)
    modules = []
    for name in sorted(names):
        mod = sys.modules.get(name)
        path = getattr(mod, "__file__", None)
        if mod is None or not path or name == "__main__" or "." in name:
            continue
        spec = getattr(mod, "__spec__", None)
        if spec is not None and spec.name == name and _importable(name):
            continue
        modules.append((name, str(path)))
    return payload, modules


def _importable(name: str) -> bool:
    """True if a fresh interpreter would find top-level module ``name`` (on sys.path or built in)."""
    if name in sys.builtin_module_names or importlib.machinery.FrozenImporter.find_spec(name) is not None:
        return True
    try:
        return importlib.machinery.PathFinder.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _check_main_guard(fn: Any) -> None:
    """A transform defined in the ``__main__`` script makes the worker import that script: refuse the
    script unless its top-level code is under ``if __name__ == "__main__":`` (else it would run again)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if os.environ.get(IN_WORKER_ENV):
        raise ConfigError("a loader process is starting another loader process: the script that defines the "
                          "transform runs its training code on import; put it under "
                          "`if __name__ == \"__main__\":`")
    if not path:
        raise ConfigError(f"transform {fn!r} is defined interactively (in __main__ without a file), which a "
                          "loader process cannot import: define it in a module, or use loader='thread'")
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return  # cannot tell; multiprocessing's own bootstrapping check still applies
    if not any(_is_main_guard(node) for node in tree.body):
        raise ConfigError(f"{path}: transform {getattr(fn, '__name__', fn)!r} is defined in this script, "
                          "which "
                          "each loader process imports to find it; the script has no "
                          "`if __name__ == \"__main__\":` guard, so every worker would run the training "
                          "again: put the script's training code under that guard, move the transform into "
                          "a module, or use loader='thread'")


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    parts = [node.test.left, *node.test.comparators]
    return (any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts)
            and any(isinstance(p, ast.Constant) and p.value == "__main__" for p in parts))


class ProcessLoader:
    """A ``Loader`` whose fills run in ``workers`` spawned processes, into two shared-memory staging sets.

    ``submit(load)`` sends each worker its share of the load and returns at once; ``wait()`` blocks until
    every share is filled and returns that set (the other set is filled by the next ``submit``). A
    failure in a worker is raised as ``StreamError`` whose ``__cause__`` is the worker's exception (its
    traceback attached as a note); a worker that dies is detected within ``_POLL`` seconds. Use
    ``close()`` or ``with``. ``transform``: an ``Augment`` or a plain ``fn(arrays, n_valid)`` (one worker).
    """

    def __init__(self, sources: Mapping[str, FieldSource], chunk_rows: int, transform: Any = None,
                 workers: int = 1):
        check_int("chunk_rows", chunk_rows, 1, expected="a positive integer")
        self.sources = dict(sources)
        self.chunk_rows = int(chunk_rows)
        self.workers = check_workers(workers)
        self.transform = as_loader_transform(transform, self.sources)
        payload, modules = self.check(self.sources, self.transform, self.workers)
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._sets: list[dict[str, np.ndarray]] = []
        self._free = 0  # the set the next submit fills
        self._pending: tuple[int, Load] | None = None
        self._closed = False
        self.pids: list[int] = []
        try:
            self._start(payload, modules)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def check(sources: Mapping[str, FieldSource], transform: Any, workers: int = 1
              ) -> tuple[bytes | None, list[tuple[str, str]]]:
        """ConfigError now (before any process starts) for what a worker could not do: in-memory fields,
        a transform that does not pickle, one defined in an unguarded ``__main__`` script. Returns the
        pickled transform and the path-loaded modules a worker imports first."""
        if not sources or not all(isinstance(s, FieldSource) for s in sources.values()):
            raise ConfigError("sources must be a non-empty mapping of field name -> FieldSource")
        in_memory = [n for n, s in sources.items() if s.array is not None]
        if in_memory:
            raise ConfigError(f"loader='process' reads fields from files, but {in_memory} are in-memory "
                              "arrays, copy-on-write (mode 'c') memmaps or memmap views that are not "
                              "C-contiguous: pass C-contiguous "
                              "np.memmap/np.load(..., mmap_mode='r') arrays, or use loader='thread'")
        transform = as_loader_transform(transform, sources)
        if transform is not None:
            transform.pieces(0, workers)  # a loader-level transform refuses workers > 1 here
        return _check_transform(transform)

    @property
    def pid(self) -> int:
        """The first worker's pid."""
        return self.pids[0]

    def _start(self, payload: bytes | None, modules: list[tuple[str, str]]) -> None:
        buffers = self.transform.buffer_sources if self.transform is not None else self.sources
        offsets, size = _layout(buffers, self.chunk_rows)
        for _ in range(2):
            shm = shared_memory.SharedMemory(create=True, size=size)
            self._res.shms.append(shm)
            # Map the block ourselves: arrays handed out may outlive close(), and an mmap with exports is
            # simply unmapped when they die (SharedMemory.close() would raise BufferError instead).
            m = mmap.mmap(shm._fd, size)
            self._res.maps.append(m)
            shm.close()
            self._sets.append(_arrays(m, buffers, self.chunk_rows, offsets))
        ctx = mp.get_context("spawn")
        for k in range(self.workers):
            parent, child = ctx.Pipe()
            self._res.conns.append(parent)
            proc = ctx.Process(target=_worker, daemon=True,
                               name="symtrain-loader" if self.workers == 1 else f"symtrain-loader-{k}",
                               args=(child, [s.name for s in self._res.shms], self.sources, self.chunk_rows,
                                     payload, modules, os.getpid()))
            with _without_main(payload):
                proc.start()
            self._res.procs.append(proc)
            child.close()
        for k in range(self.workers):
            msg = self._receive(k, _START_TIMEOUT, "starting")
            if msg[0] != "ready":
                cause = _unpack_error(*msg[2:])
                raise StreamError(f"loader process failed to start: {cause}") from cause
            self.pids.append(msg[1])

    def _receive(self, k: int, timeout: float | None, doing: str) -> tuple:
        """Worker ``k``'s next message; StreamError if it dies (or, with a timeout, does not answer)."""
        conn, proc = self._res.conns[k], self._res.procs[k]
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
        if self.transform is not None:
            parts = split_pieces(self.transform.pieces(load.n_valid, self.workers), self.workers)
        else:
            parts = [[p] for p in whole_fill(load.n_valid, self.workers)]
            parts += [[] for _ in range(self.workers - len(parts))]
        index = self._free
        for k, conn in enumerate(self._res.conns):
            try:
                conn.send((index, load, parts[k], k == 0))
            except (OSError, ValueError) as exc:
                proc = self._res.procs[k]
                self._closed = True  # the other workers may hold a share of this fill: unusable now
                raise StreamError(f"loader process (pid {proc.pid}) is gone: "
                                  f"{_describe_exit(proc.exitcode)}") from exc
        self._pending = (index, load)

    def wait(self) -> dict[str, np.ndarray]:
        """Block until the submitted fill is done and return its staging set; StreamError on failure."""
        self._check_open()
        if self._pending is None:
            raise StreamError("wait() called with no fill submitted")
        index, load = self._pending
        failure: tuple | None = None
        try:
            for k in range(self.workers):
                msg = self._receive(k, None, "filling a chunk")
                if msg[0] == "error" and failure is None:
                    failure = msg
        except StreamError:
            self._pending = None
            self._closed = True  # a worker is gone: the others' replies can no longer be matched up
            raise
        finally:
            self._pending = None
        if failure is not None:
            cause = _unpack_error(*failure[2:])
            first = load.ranges[0] if load.ranges else ()
            raise StreamError(f"chunk loader process failed on the load starting at rows {first} "
                              f"({load.n_valid} rows): {describe_error(cause)}") from cause
        self._free = 1 - index
        return self._sets[index]

    def close(self) -> None:
        """Stop and join the workers (bounded), unlink the shared memory; idempotent, on every exit path."""
        self._closed = True
        self._pending = None
        self._sets = []
        self._finalizer()

    def __enter__(self) -> ProcessLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pids {self.pids}"
        return (f"<ProcessLoader {list(self.sources)} chunk_rows={self.chunk_rows} workers={self.workers} "
                f"{state}>")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
