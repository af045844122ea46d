"""One buffer fill as data, and the function that performs it: contiguous reads, then a permutation.

Pure numpy (no graph library), so a loader *process* can import it. A ``Load`` names absolute file rows
and the order they take in the buffer; ``fill`` reads them with ``os.preadv`` into reused scratch arrays
(never a memmap held across chunks, so no file-backed RSS builds up) and gathers them into the staging
arrays with ``np.take(..., mode='clip')`` (``mode='raise'`` goes through a temporary: 1.6-3.4x slower).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from symtrain.errors import ConfigError, DatasetError

_PREAD_MAX = 1 << 30  # bytes per preadv call; Linux caps a single read at about 2 GiB anyway


@dataclass(frozen=True)
class FieldSource:
    """What a loader needs to read a field without holding a memmap object (picklable).

    ``offset`` is the byte offset of row 0 of the *file* (a split's rows are addressed by absolute row).
    ``identity`` (device, inode, size, mtime_ns) of the file when the stream was set up: a file replaced or
    rewritten since is refused at the next read instead of silently streaming other rows (None: no check).
    """

    name: str
    path: str
    offset: int
    dtype: str
    row_shape: tuple[int, ...]
    identity: tuple[int, int, int, int] | None = None

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def empty(self, rows: int) -> np.ndarray:
        """An owned C-contiguous array for ``rows`` rows of this field, zero-filled."""
        return np.zeros((rows, *self.row_shape), dtype=np.dtype(self.dtype))


def sources_of(dataset: Any, fields: list[str] | None = None) -> dict[str, FieldSource]:
    """The FieldSource of every (or every named) field of an opened ``symtrain.storage.Dataset``."""
    names = list(dataset.fields) if fields is None else list(fields)
    out = {}
    for name in names:
        f = dataset.field(name)
        try:
            identity = file_identity(os.stat(f.path))
        except OSError as exc:
            raise DatasetError(f.path, f"cannot be read: {exc.strerror or exc}") from exc
        out[name] = FieldSource(name=name, path=str(f.path), offset=int(f.offset), dtype=np.dtype(f.dtype).str,
                                row_shape=tuple(int(s) for s in f.shape), identity=identity)
    return out


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is replaced (device, inode) or rewritten in place (size, mtime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, eq=False)
class Load:
    """One buffer fill, a pure function of the plan.

    ``ranges``: absolute file rows ``[start, stop)``, read contiguously, in order.
    ``perm``: the order of rows in the buffer, as indices into the concatenated ranges (None = as read).
    ``n_valid``: rows valid in the buffer after the fill (== total rows of ``ranges``); the rest are zeroed.
    """

    ranges: tuple[tuple[int, int], ...]
    perm: np.ndarray | None
    n_valid: int

    def __post_init__(self) -> None:
        total = 0
        for start, stop in self.ranges:
            if not 0 <= start < stop:
                raise ConfigError(f"Load: bad row range [{start}, {stop})")
            total += stop - start
        if total != self.n_valid:
            raise ConfigError(f"Load: n_valid={self.n_valid} but the ranges hold {total} rows")
        if self.perm is not None:
            perm = self.perm
            if perm.ndim != 1 or len(perm) != total or perm.dtype.kind not in "iu":
                raise ConfigError(f"Load: perm must be an integer vector of {total} indices, got "
                                  f"{perm.dtype} {perm.shape}")
            if total and (perm.min() < 0 or perm.max() >= total):  # fill's mode='clip' would hide these
                raise ConfigError(f"Load: perm indices must lie in 0..{total - 1}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Load):
            return NotImplemented
        if self.ranges != other.ranges or self.n_valid != other.n_valid:
            return False
        if self.perm is None or other.perm is None:
            return self.perm is None and other.perm is None
        return bool(np.array_equal(self.perm, other.perm))

    __hash__ = object.__hash__

    def rows(self, start: int = 0) -> np.ndarray:
        """The rows this fill puts in the buffer, in buffer order, relative to ``start`` (a split's row 0)."""
        read = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in self.ranges]) if self.ranges \
            else np.zeros(0, dtype=np.int64)
        return (read if self.perm is None else read[self.perm]) - start


def _pread_into(fd: int, buf: memoryview, offset: int, path: str) -> None:
    """Fill ``buf`` from ``fd`` at ``offset`` exactly; a short read is a DatasetError naming the file."""
    done, want = 0, len(buf)
    while done < want:
        try:
            got = os.preadv(fd, [buf[done:done + _PREAD_MAX]], offset + done)
        except OSError as exc:
            raise DatasetError(path, f"read of {want} bytes at byte {offset} failed: {exc}") from exc
        if got == 0:
            raise DatasetError(path, f"short read: wanted {want} bytes at byte {offset}, the file ended after "
                               f"{done} (truncated or replaced after the dataset was opened?)")
        done += got


def _read_ranges(src: FieldSource, ranges: tuple[tuple[int, int], ...], dst: np.ndarray) -> None:
    """Read the rows of ``ranges`` back to back into the contiguous array ``dst``."""
    row_bytes = src.row_bytes
    if row_bytes == 0 or not ranges:
        return
    raw = memoryview(dst.reshape(-1).view(np.uint8))
    try:
        fd = os.open(src.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DatasetError(src.path, f"cannot be opened for reading: {exc.strerror or exc}") from exc
    try:
        if src.identity is not None:
            _check_identity(src, file_identity(os.fstat(fd)))
        pos = 0
        for start, stop in ranges:
            nbytes = (stop - start) * row_bytes
            _pread_into(fd, raw[pos:pos + nbytes], src.offset + start * row_bytes, src.path)
            pos += nbytes
    finally:
        os.close(fd)


def _check_identity(src: FieldSource, now: tuple[int, int, int, int]) -> None:
    """DatasetError if the file is no longer the one the stream was set up with."""
    if now == src.identity:
        return
    was = src.identity[2]
    if now[2] < was:
        raise DatasetError(src.path, f"short read: the file shrank from {was} to {now[2]} bytes after the dataset "
                           "was opened (truncated or replaced?)")
    raise DatasetError(src.path, "was replaced or modified after the dataset was opened; its rows are no longer "
                       "the ones the stream was set up with (reopen the dataset)")


def _scratch_for(scratch: dict | None, src: FieldSource, rows: int) -> np.ndarray:
    """A reused contiguous array of at least ``rows`` rows for ``src`` (grown, never shrunk)."""
    dtype = np.dtype(src.dtype)
    if scratch is None:
        return np.empty((rows, *src.row_shape), dtype=dtype)
    arr = scratch.get(src.name)
    if arr is None or arr.shape[0] < rows or arr.dtype != dtype or arr.shape[1:] != src.row_shape:
        arr = np.empty((rows, *src.row_shape), dtype=dtype)
        scratch[src.name] = arr
    return arr[:rows]


def check_out(sources: Mapping[str, FieldSource], out: Mapping[str, np.ndarray], rows: int) -> None:
    """Raise ConfigError unless ``out`` has, per field, an owned C-contiguous array of >= rows rows."""
    for name, src in sources.items():
        arr = out.get(name)
        if arr is None:
            raise ConfigError(f"fill: no staging array for field {name!r}")
        if arr.dtype != np.dtype(src.dtype) or arr.shape[1:] != src.row_shape:
            raise ConfigError(f"fill: staging array of field {name!r} is {arr.dtype}{list(arr.shape[1:])}, "
                              f"the field is {np.dtype(src.dtype)}{list(src.row_shape)}")
        if arr.shape[0] < rows:
            raise ConfigError(f"fill: staging array of field {name!r} holds {arr.shape[0]} rows, the load {rows}")
        if not arr.flags.c_contiguous or not arr.flags.writeable or isinstance(arr, np.memmap):
            raise ConfigError(f"fill: staging array of field {name!r} must be an owned, writable, "
                              "C-contiguous array (never a memmap)")


def fill(sources: Mapping[str, FieldSource], load: Load, out: Mapping[str, np.ndarray],
         scratch: dict | None = None) -> None:
    """Perform ``load``: read its ranges contiguously, permute into ``out[name][:n_valid]``, zero the rest.

    ``scratch`` (a dict kept by the caller across fills) holds the reused read arrays; without it each
    call allocates. Raises DatasetError naming the file on a failed or short read.
    """
    n = load.n_valid
    check_out(sources, out, n)
    for name, src in sources.items():
        dst = out[name]
        if load.perm is None:
            _read_ranges(src, load.ranges, dst[:n])
        else:
            tmp = _scratch_for(scratch, src, n)
            _read_ranges(src, load.ranges, tmp)
            np.take(tmp, load.perm, axis=0, out=dst[:n], mode="clip")
        if dst.shape[0] > n:
            dst[n:] = 0  # no step may ever see rows of a previous chunk


class ValidRows:
    """Adapts a user transform ``fn(arrays)`` to the loader's ``(arrays, n_valid)``: it sees valid rows only.

    ``fn`` gets, per field, a view of the filled rows and changes them in place (picklable if ``fn`` is).
    """

    def __init__(self, fn: Callable[[dict[str, np.ndarray]], None]):
        self.fn = fn

    def __call__(self, arrays: dict[str, np.ndarray], n_valid: int) -> None:
        result = self.fn({name: arr[:n_valid] for name, arr in arrays.items()})
        if result is not None:
            raise TypeError(f"transform {getattr(self.fn, '__name__', self.fn)!r} returned a value; it must "
                            "modify the arrays it is given in place and return None")


class Loader(Protocol):
    """Fills one of its two staging sets (A and B, allocated once) in the background.

    ``wait()`` hands out one set; the stream installs it into the device shared variables with
    ``set_value(arr, borrow=True)``; the next ``submit()`` fills the other set, never the one in use.
    An optional ``transform(arrays, n_valid)`` runs on the filled set inside the loader.
    Constructor: ``Loader(sources, chunk_rows, transform=None)``.
    """

    def submit(self, load: Load) -> None:
        """Start filling the free staging set (returns at once)."""
        ...

    def wait(self) -> dict[str, np.ndarray]:
        """Block until filled; return that set (C-contiguous, field dtype, chunk_rows rows).

        Raises StreamError from the cause on failure."""
        ...

    def close(self) -> None:
        """Join / release everything; idempotent."""
        ...
