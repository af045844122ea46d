"""One buffer fill as data, and the function that performs it: one copy from the file into the buffer.

Pure numpy (no graph library), so a loader *process* can import it. A ``Load`` names absolute file rows
and the order they take in the buffer. ``fill`` performs it in one copy: in file order (no permutation)
with ``os.preadv`` straight into the staging array; shuffled by mapping the load's row span for the
duration of one gather (``mmap``, ``np.take(..., mode='clip')`` into the staging array, unmap), so no
scratch copy is made and no file-backed RSS outlives the fill: ``RssFile`` rises by at most the span of
one fill while it is gathered (the kernel maps whole page-cache folios, so gathering in smaller steps
and dropping pages between them did not lower that peak) and falls back when it is unmapped.
``mode='raise'`` would go through a
temporary (1.6-3.4x slower); the indices are checked when the Load is built instead.
Fields given as in-memory arrays (``FieldSource.array``) are gathered from the array.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from symtrain.errors import ConfigError, DatasetError

_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)  # Linux: which signal announces a lease break
_READ_BLOCK = 1 << 20  # bytes per read of the unmapped gather (stays in cache for the scatter)
_PREAD_MAX = 1 << 30  # bytes per preadv call; Linux caps a single read at about 2 GiB anyway


@dataclass(frozen=True)
class FieldSource:
    """What a loader needs to read a field without holding a memmap object (picklable).

    ``offset`` is the byte offset of row 0 of the *file* (a split's rows are addressed by absolute row).
    ``identity`` (device, inode, size, mtime_ns) of the file when the stream was set up: a file replaced or
    rewritten since is refused at the next read instead of silently streaming other rows (None: no check).
    ``array``: the rows as an in-memory array (``path`` is then only a label; thread loaders only).
    """

    name: str
    path: str
    offset: int
    dtype: str
    row_shape: tuple[int, ...]
    identity: tuple[int, int, int, int] | None = None
    array: np.ndarray | None = field(default=None, compare=False, repr=False)  # in-memory rows (no file)

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
        out[name] = FieldSource(name=name, path=str(f.path), offset=int(f.offset),
                                dtype=np.dtype(f.dtype).str,
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
    ``epoch``, ``number``: where the plan puts this fill (what a transform's random generator is keyed on).
    """

    ranges: tuple[tuple[int, int], ...]
    perm: np.ndarray | None
    n_valid: int
    epoch: int = 0
    number: int = 0

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
        if (self.ranges, self.n_valid, self.epoch, self.number) != (other.ranges, other.n_valid, other.epoch,
                                                                    other.number):
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
            raise DatasetError(path, f"short read: wanted {want} bytes at byte {offset}, "
                               f"the file ended after "
                               f"{done} (truncated or replaced after the dataset was opened?)")
        done += got


def _open_source(src: FieldSource) -> int:
    """Reopen a field file for one fill (O_NONBLOCK: a FIFO never blocks); a vanished file was replaced."""
    try:
        return os.open(src.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        gone = "no longer exists: removed or replaced after the dataset was opened"
        raise DatasetError(src.path, gone) from exc
    except OSError as exc:
        raise DatasetError(src.path, f"cannot be opened for reading: {exc.strerror or exc}") from exc


def _read_ranges(src: FieldSource, ranges: tuple[tuple[int, int], ...], dst: np.ndarray) -> None:
    """Read the rows of ``ranges`` back to back into the contiguous array ``dst``."""
    row_bytes = src.row_bytes
    if row_bytes == 0 or not ranges:
        return
    raw = memoryview(dst.reshape(-1).view(np.uint8))
    fd = _open_source(src)
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
        raise DatasetError(src.path, f"short read: the file shrank from {was} to {now[2]} bytes "
                           "after the dataset "
                           "was opened (truncated or replaced?)")
    raise DatasetError(src.path, "was replaced or modified after the dataset was opened; its rows are "
                       "no longer "
                       "the ones the stream was set up with (reopen the dataset)")


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
            raise ConfigError(f"fill: staging array of field {name!r} holds {arr.shape[0]} rows, "
                              f"the load {rows}")
        if not arr.flags.c_contiguous or not arr.flags.writeable or isinstance(arr, np.memmap):
            raise ConfigError(f"fill: staging array of field {name!r} must be an owned, writable, "
                              "C-contiguous array (never a memmap)")


def _sub_ranges(ranges: tuple[tuple[int, int], ...], lo: int, hi: int) -> tuple[tuple[int, int], ...]:
    """The file row ranges holding positions ``lo:hi`` of the concatenated ``ranges``."""
    out, pos = [], 0
    for a, b in ranges:
        n = b - a
        s, e = max(lo - pos, 0), min(hi - pos, n)
        if s < e:
            out.append((a + s, a + e))
        pos += n
    return tuple(out)


def _gather_file(src: FieldSource, rows: np.ndarray, dst: np.ndarray) -> None:
    """``dst[i] = file row rows[i]``: map the rows' span for this gather only, copy once, unmap.

    The mapping is used only under a read lease (``_lease``): nobody can truncate the file (or open it for
    writing) until the gather is done, so a truncation can never fault (SIGBUS kills the process). Where
    no lease is granted (the file is open for writing somewhere -- a memmap opened 'r+' --, another
    owner's file, a filesystem without leases) the rows' runs are read with pread and gathered: two
    copies, but a truncation is a short-read DatasetError.
    """
    rb = src.row_bytes
    if rb == 0 or len(rows) == 0:
        return
    first, last = int(rows.min()), int(rows.max()) + 1
    fd = _open_source(src)
    try:
        leased = _lease(fd)  # before the checks: from here on the file cannot shrink under the mapping
        st = os.fstat(fd)
        if src.identity is not None:
            _check_identity(src, file_identity(st))
        start, stop = src.offset + first * rb, src.offset + last * rb
        if st.st_size < stop:  # a mapping past the end would fault (SIGBUS) instead of reading short
            raise DatasetError(src.path, f"short read: rows up to {last} need {stop} bytes, the file has "
                               f"{st.st_size} (truncated or replaced after the dataset was opened?)")
        if not leased:
            _gather_by_reads(fd, src, rows, dst)
            return
        base = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            m = mmap.mmap(fd, stop - base, prot=mmap.PROT_READ, offset=base)
        except (OSError, ValueError) as exc:
            raise DatasetError(src.path, f"cannot map bytes {start}..{stop}: {exc}") from exc
        try:
            span = np.frombuffer(m, np.uint8, count=stop - start, offset=start - base)
            span = span.view(np.dtype(src.dtype)).reshape(last - first, *src.row_shape)
            np.take(span, rows - first, axis=0, out=dst, mode="clip")
            del span
        finally:
            m.close()
    finally:
        os.close(fd)  # also releases the lease: a truncation waiting for it proceeds now


def _lease(fd: int) -> bool:
    """Take a read lease on ``fd`` (Linux): until it is released, truncating the file or opening it for
    writing waits (a non-blocking open fails). False if refused. The lease break is announced with
    SIGURG (ignored unless handled) instead of SIGIO, whose default action would end the process."""
    try:
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except (OSError, AttributeError, ValueError):
        return False
    return True


def _gather_by_reads(fd: int, src: FieldSource, rows: np.ndarray, dst: np.ndarray) -> None:
    """``dst[i] = file row rows[i]`` without a mapping: pread runs of consecutive rows into a small reused
    block (cache-sized), then scatter its rows to their places in ``dst``."""
    rb = src.row_bytes
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    cuts = np.flatnonzero(np.diff(srt) != 1) + 1  # runs of consecutive file rows
    bounds = [0, *cuts.tolist(), len(srt)]
    per = max(1, min(len(rows), _READ_BLOCK // rb))
    block = src.empty(per)
    raw = memoryview(block.reshape(-1).view(np.uint8))
    for a, b in zip(bounds[:-1], bounds[1:]):
        for lo in range(a, b, per):
            hi = min(lo + per, b)
            _pread_into(fd, raw[:(hi - lo) * rb], src.offset + int(srt[lo]) * rb, src.path)
            dst[order[lo:hi]] = block[:hi - lo]


def fill(sources: Mapping[str, FieldSource], load: Load, out: Mapping[str, np.ndarray],
         scratch: dict | None = None, lo: int = 0, hi: int | None = None, zero_tail: bool = True) -> None:
    """Perform positions ``lo:hi`` of ``load`` (default: all) into ``out[name][lo:hi]``; zero the rest.

    One copy per row: file order is read with ``os.preadv``, a permutation is gathered from a mapping of
    the load's span. ``scratch`` is accepted for compatibility (unused). ``zero_tail``: zero the rows
    ``n_valid:`` of ``out`` (no step may see rows of a previous chunk). DatasetError names the file on a
    failed or short read.
    """
    n = load.n_valid
    hi = n if hi is None else hi
    if not 0 <= lo <= hi <= n:
        raise ConfigError(f"fill: positions {lo}:{hi} are outside the load's 0:{n}")
    check_out(sources, out, n)
    rows = None
    for name, src in sources.items():
        dst = out[name]
        if hi > lo:
            if load.perm is None and src.array is None:
                _read_ranges(src, _sub_ranges(load.ranges, lo, hi), dst[lo:hi])
            else:
                if rows is None:
                    rows = load.rows()[lo:hi]  # file rows in buffer order
                if src.array is not None:
                    np.take(src.array, rows, axis=0, out=dst[lo:hi], mode="clip")
                else:
                    _gather_file(src, rows, dst[lo:hi])
        if zero_tail and dst.shape[0] > n:
            dst[n:] = 0  # no step may ever see rows of a previous chunk


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
