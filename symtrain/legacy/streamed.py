"""``symtrain.shared``: a shared variable whose graph value is a fixed-capacity buffer over file data.

For a memmap (``np.load(path, mmap_mode='r')``, ``np.memmap``, a dataset field ``ds['x']``) it returns a
``StreamedSharedVariable``: in graphs it is a tensor variable whose value is a device buffer of at most
``chunk_rows`` rows (owned memory, never the memmap); ``symtrain.function`` fills that buffer with the
chunk each call needs. As *data* it stands for the whole array: ``get_value(borrow=True)`` returns the
read-only memmap (so ``.shape[0]`` is the full row count), ``var.shape`` is the full shape, and
``get_value()`` copies the whole array only when it is at most ``max_load_bytes``.

A plain ndarray (or anything else) goes to ``backend.shared`` unchanged: no streaming (a large one
gets a one-time warning saying how to stream it instead).

The buffer holds whatever chunk the last call needed, so a graph over a streamed variable is compiled
only by ``symtrain.function``: ``pytensor.function`` or ``.eval()`` over it raises a ConfigError instead
of silently reading the loaded chunk (or an empty buffer) as if it were rows 0.., and a file replaced or
rewritten after ``symtrain.shared`` is refused at the next load, as ``ChunkStream`` does.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from symtrain import backend
from symtrain.backend import TensorSharedVariable, pt
from symtrain.errors import ConfigError, StreamError
from symtrain.storage.reader import CHUNK_BYTES
from symtrain.stream.load import FieldSource, file_identity
from symtrain.validate import check_int

DEFAULT_MAX_LOAD_BYTES = 256 << 20
LARGE_IN_MEMORY_BYTES = 64 << 20  # an in-memory array above this given to symtrain.shared gets a warning
_compiling = threading.local()
_warned_in_memory = False


class InMemoryDataWarning(UserWarning):
    """symtrain.shared got a large in-memory array: it is held in RAM, not streamed from its file."""


@contextmanager
def compiling_streamed() -> Iterator[None]:
    """Let the graph library reach streamed variables' buffers (only symtrain.function compiles them)."""
    _compiling.depth = getattr(_compiling, "depth", 0) + 1
    try:
        yield
    finally:
        _compiling.depth -= 1


def _warn_in_memory(value: Any) -> None:
    """Warn once per process when a large in-memory array reaches symtrain.shared (it is not streamed)."""
    global _warned_in_memory
    nbytes = getattr(value, "nbytes", 0)
    if _warned_in_memory or not isinstance(value, np.ndarray) or nbytes <= LARGE_IN_MEMORY_BYTES:
        return
    _warned_in_memory = True
    warnings.warn(
        f"symtrain.shared got an in-memory {value.dtype}{list(value.shape)} array of {nbytes / 2**20:.0f} "
        "MiB: it is held in RAM, not streamed. To stream it, pass the read-only memmap itself, "
        "symtrain.shared(numpy.load(path, mmap_mode='r')), without numpy.asarray(..., dtype=floatX), which "
        "copies (and may upcast) the file into memory; cast in the graph (T.cast) if the dtype must change",
        InMemoryDataWarning, stacklevel=3)



def find_memmap(arr: Any) -> np.memmap | None:
    """The np.memmap an array's memory belongs to (itself, or up its ``.base`` chain), else None."""
    seen = 0
    while isinstance(arr, np.ndarray) and seen < 64:
        if isinstance(arr, np.memmap) and getattr(arr, "_mmap", None) is not None:
            return arr
        arr, seen = arr.base, seen + 1
    return None


def memmap_source(arr: np.ndarray, name: str) -> FieldSource:
    """Where the rows of a (view of a) read-only memmap live in its file, for the chunk loader.

    The view must keep rows contiguous (a row range of the file); np.memmap views keep the *original*
    ``offset``, so the position is recovered from the mapping's address.
    """
    owner = find_memmap(arr)
    mm = getattr(owner, "_mmap", None)
    filename = getattr(owner, "filename", None)
    if mm is None or filename is None:
        raise ConfigError(f"value: the memmap for {name!r} has no open file mapping (closed or zero-sized)")
    if not arr.flags.c_contiguous or arr.ndim == 0:
        raise ConfigError(f"value: the memmap view for {name!r} is not C-contiguous rows of its file "
                          "(e.g. a column selection or a step); pass the whole array or a row range "
                          "such as mm[1000:5000]")
    try:
        info = os.stat(filename)
    except OSError as exc:
        raise ConfigError(f"value: the file behind {name!r} ({filename}) cannot be read: "
                          f"{exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"value: the file behind {name!r} ({filename}) is not a regular file")
    base_addr = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    map_start = owner.offset - owner.offset % mmap.ALLOCATIONGRANULARITY
    offset = map_start + (arr.ctypes.data - base_addr)
    need = offset + arr.nbytes
    size = info.st_size
    if need > size or len(mm) > size - map_start:
        raise ConfigError(f"value: {filename} holds {size} bytes but the array for {name!r} needs {need} "
                          "(the file changed after it was mapped?)")
    return FieldSource(name=name, path=str(filename), offset=int(offset), dtype=arr.dtype.str,
                       row_shape=tuple(int(s) for s in arr.shape[1:]), identity=file_identity(info))


class ChunkSource:
    """Chunks pulled in order from a generator or a callable that returns one (sequential only).

    Rows are re-chunked to the buffer capacity. Going back (a window before the current position)
    restarts the callable and skips forward; a one-shot generator cannot go back (StreamError).
    """

    def __init__(self, value: Callable[[], Iterable] | Iterator, name: str, rows: int | None):
        self.factory = value if callable(value) and not isinstance(value, Iterator) else None
        self.name = name
        self.rows = rows
        self._it: Iterator | None = None
        self._pending: np.ndarray | None = None
        self._pos = 0  # global row of the first row of _pending / next row to come
        first = self._next_chunk(restart=True) if self.factory else self._first_from(value)
        if first is None:
            raise ConfigError(f"value: the chunk generator for {name!r} yielded no rows")
        self.dtype, self.row_shape = first.dtype, first.shape[1:]
        self._pending = first

    def _first_from(self, it: Iterator) -> np.ndarray | None:
        self._it = iter(it)
        return self._next_chunk(restart=False)

    def _next_chunk(self, restart: bool) -> np.ndarray | None:
        if restart:
            if self.factory is None:
                raise StreamError(f"the generator-backed shared variable {self.name!r} was given a one-shot "
                                  "generator and cannot go back to earlier rows; pass a callable that "
                                  "returns a fresh iterator (e.g. a generator function) to allow restarts")
            self._it = iter(self.factory())
            self._pos = 0
        try:
            chunk = next(self._it)
        except StopIteration:
            return None
        except Exception as exc:
            raise StreamError(f"the chunk generator of {self.name!r} failed: {exc}") from exc
        chunk = np.asarray(chunk)
        if chunk.ndim == 0:
            raise ConfigError(f"value: the chunk generator for {self.name!r} yielded a scalar, not rows")
        if hasattr(self, "dtype") and (chunk.dtype != self.dtype or chunk.shape[1:] != self.row_shape):
            raise ConfigError(f"value: the chunk generator for {self.name!r} yielded {chunk.dtype}"
                              f"{list(chunk.shape[1:])} rows after {self.dtype}{list(self.row_shape)} rows")
        return chunk

    def read(self, start: int, out: np.ndarray) -> int:
        """Copy rows from ``start`` into ``out`` (up to its length); return how many rows there were."""
        if start < self._pos:
            self._pending = self._next_chunk(restart=True)
        want, got = out.shape[0], 0
        while got < want:
            if self._pending is None or len(self._pending) == 0:
                self._pending = self._next_chunk(restart=False)
                if self._pending is None:
                    self.rows = self._pos if self.rows is None else self.rows
                    if self._pos != self.rows:
                        raise StreamError(f"the chunk generator of {self.name!r} ended after {self._pos} "
                                          f"rows but rows={self.rows} was given")
                    break
            chunk = self._pending
            skip = min(max(start - self._pos, 0), len(chunk))
            take = min(len(chunk) - skip, want - got)
            out[got:got + take] = chunk[skip:skip + take]
            got += take
            self._pos += skip + take
            self._pending = chunk[skip + take:]
        out[got:] = 0
        return got


class RowsView:
    """What ``get_value(borrow=True)`` returns for a generator-backed variable: shape, dtype, no data."""

    def __init__(self, var: StreamedSharedVariable):
        self._var = var

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._var.rows, *self._var.row_shape)

    @property
    def dtype(self) -> np.dtype:
        return self._var.dtype

    @property
    def ndim(self) -> int:
        return 1 + len(self._var.row_shape)

    def __len__(self) -> int:
        return self._var.rows

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise ConfigError(f"{self._var.name!r} is generator-backed: its rows are not held anywhere; "
                          "use .shape / len() for its size")


class StreamState:
    """The streaming facts of one variable, shared by its clones (they share the container too)."""

    def __init__(self, data: np.ndarray | None, source: FieldSource | ChunkSource, rows: int | None,
                 chunk_rows: int, max_load_bytes: int):
        self.data = data  # the read-only memmap (None for a generator)
        self.source = source
        self.rows = rows
        self.requested_rows = chunk_rows  # chunk_rows as asked; the capacity never exceeds the data
        self.chunk_rows = min(chunk_rows, rows) if rows else chunk_rows
        self.max_load_bytes = max_load_bytes
        self.window: tuple[int, int] | None = None  # (first global row, rows) currently in the buffer
        self.owner: object | None = None  # the loader whose staging array is installed
        self.rows_var = backend.shared(np.int64(rows if rows is not None else -1), name=f"{source.name}/rows")
        self.member_of: list = []  # the loading groups (symtrain.legacy.function.Group) using this variable


class StreamedSharedVariable(TensorSharedVariable):
    """A tensor shared variable whose graph value is a chunk buffer and whose data is a whole file."""

    _stream: StreamState

    @property
    def container(self) -> Any:
        """The buffer's container, for symtrain.function's compile only (see the module doc)."""
        if getattr(_compiling, "depth", 0) == 0:
            raise ConfigError(
                f"{self.name or 'a symtrain.shared variable'!r} is streamed: its value is a buffer holding "
                "the one chunk of rows the last symtrain.function call needed, so a graph over it cannot be "
                "compiled or evaluated by pytensor.function / .eval() (it would read that chunk, or nothing, "
                "as rows 0..). Compile with symtrain.function([index], ..., givens={x: var[index * bs:(index "
                "+ 1) * bs]}); read rows directly from var.get_value(borrow=True), the read-only memmap; "
                "var.shape is the whole data's shape")
        return self.__dict__["_container"]

    @container.setter
    def container(self, value: Any) -> None:
        self.__dict__["_container"] = value

    def clone(self, **kwargs: Any) -> StreamedSharedVariable:
        with compiling_streamed():
            cp = super().clone(**kwargs)
        cp._stream = self._stream
        return cp

    # -- the data it stands for ---------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows of the whole data (a ConfigError for a generator whose length is not known yet)."""
        rows = self._stream.rows
        if rows is None:
            raise ConfigError(f"{self.name!r} is generator-backed and its row count is not known until the "
                              "generator is exhausted; pass rows=N to symtrain.shared")
        return rows

    @property
    def row_shape(self) -> tuple[int, ...]:
        src = self._stream.source
        return tuple(src.row_shape)

    @property
    def dtype_np(self) -> np.dtype:
        return np.dtype(self.type.dtype)

    @property
    def capacity(self) -> int:
        """Rows of the device buffer (chunk_rows, or fewer when the whole data is smaller)."""
        return self._stream.chunk_rows

    @property
    def shape(self):
        """The symbolic shape of the whole data (rows first), not of the buffer."""
        return pt.stack([self._stream.rows_var, *[pt.constant(d, dtype="int64") for d in self.row_shape]])

    def get_value(self, borrow: bool = False, return_internal_type: bool = False) -> Any:
        """borrow=True: the read-only memmap (the generator's RowsView); borrow=False: a copy of all rows,
        refused (ConfigError) above max_load_bytes."""
        st = self._stream
        if borrow:
            return st.data if st.data is not None else RowsView(self)
        if st.data is None:
            raise ConfigError(f"{self.name!r} is generator-backed: get_value() cannot load its rows; "
                              "use get_value(borrow=True).shape for its size")
        if st.data.nbytes > st.max_load_bytes:
            raise ConfigError(
                f"get_value(): {self.name!r} is streamed from {st.source.path} and holds {st.data.nbytes} "
                f"bytes, more than max_load_bytes={st.max_load_bytes}; loading it whole would defeat "
                "streaming. Use get_value(borrow=True) for the read-only memmap (its .shape[0] is the row "
                "count), or raise max_load_bytes in symtrain.shared")
        return np.array(st.data)

    def set_value(self, new_value: Any, borrow: bool = False) -> None:
        """Point the variable at new file data (a read-only memmap with the same dtype and row shape)."""
        if find_memmap(new_value) is None:
            raise ConfigError(f"set_value: {self.name!r} is streamed; give it a read-only memmap "
                              "(np.load(path, mmap_mode='r') or a dataset field), not "
                              f"{type(new_value).__name__}. For in-memory data use backend.shared.")
        if new_value.dtype != self.dtype_np or tuple(new_value.shape[1:]) != self.row_shape:
            raise ConfigError(f"set_value: {self.name!r} holds {self.dtype_np}{list(self.row_shape)} rows, "
                              f"the new data is {new_value.dtype}{list(new_value.shape[1:])}")
        st = self._stream
        st.source = memmap_source(new_value, st.source.name)
        st.data = new_value
        st.rows = int(new_value.shape[0])
        st.chunk_rows = min(st.requested_rows, st.rows) if st.rows else st.requested_rows
        st.rows_var.set_value(np.int64(st.rows))
        st.window = None
        st.owner = None
        for group in st.member_of:
            group.reset()

    def install(self, arr: np.ndarray, window: tuple[int, int] | None, owner: object | None) -> None:
        """Make ``arr`` (owned, C-contiguous) the buffer value; it holds rows ``window``."""
        self.__dict__["_container"].value = arr
        self._stream.window = window
        self._stream.owner = owner


def _default_chunk_rows(row_bytes: int) -> int:
    rows = CHUNK_BYTES // max(row_bytes, 1)
    return max(1024, rows // 1024 * 1024)


def _check_positive(value: Any, what: str) -> int:
    """``value`` as an int >= 1 (ConfigError naming ``what``)."""
    return check_int(what, value, 1, expected="a positive integer")


def shared(value: Any, chunk_rows: int | None = None, name: str | None = None, borrow: bool = False,
           max_load_bytes: int = DEFAULT_MAX_LOAD_BYTES, rows: int | None = None, **kwargs: Any) -> Any:
    """Drop-in for ``theano.shared`` that streams file data.

    ``value``: a read-only memmap / dataset field (streamed), a generator or a callable returning an
    iterator of row chunks (streamed, sequential; ``rows`` gives its length up front), or anything else
    (an ndarray, a scalar): exactly ``backend.shared(value, name=name, borrow=borrow, **kwargs)``.
    ``chunk_rows``: rows of the device buffer (default: about 64 MiB of rows).
    """
    is_gen = isinstance(value, Iterator) or (callable(value) and not isinstance(value, np.ndarray))
    if not is_gen and find_memmap(value) is None:
        _warn_in_memory(value)
        return backend.shared(value, name=name, borrow=borrow, **kwargs)
    if kwargs:
        raise ConfigError(f"symtrain.shared: {sorted(kwargs)} are not supported for streamed (file or "
                          "generator) data")
    max_load_bytes = _check_positive(max_load_bytes, "max_load_bytes")
    label = name or "streamed"
    if is_gen:
        if rows is not None:
            rows = _check_positive(rows, "rows")
        source: FieldSource | ChunkSource = ChunkSource(value, label, rows)
        data, dtype, row_shape = None, source.dtype, tuple(source.row_shape)
    else:
        if value.ndim == 0:
            raise ConfigError("value: a 0-d memmap has no rows to stream")
        if value.flags.writeable:
            value = value.view()
            value.flags.writeable = False  # never write through to the user's file
        source = memmap_source(value, label)
        data, dtype, row_shape = value, value.dtype, tuple(value.shape[1:])
        rows = int(value.shape[0])
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    cap = _default_chunk_rows(row_bytes) if chunk_rows is None else _check_positive(chunk_rows, "chunk_rows")
    var_type = pt.TensorType(str(np.dtype(dtype)), shape=(None,) * (1 + len(row_shape)))
    empty = np.zeros((0, *row_shape), dtype=dtype)
    var = StreamedSharedVariable(type=var_type, value=empty, strict=False, name=name)
    var._stream = StreamState(data, source, rows, cap, max_load_bytes)
    return var
