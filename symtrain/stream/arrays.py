"""Plain arrays as a stream source: ``ChunkStream({"x": memmap_or_ndarray, ...})``.

A C-contiguous ``np.memmap`` (or ``np.load(..., mmap_mode="r")``; not copy-on-write mode 'c', whose
changes the file does not hold) is read from its file by path and byte
offset, exactly like a dataset field, so memory stays bounded (the caller's mapping is never touched);
any other array is gathered from memory (thread loader only). The same checks as a dataset apply:
equal row counts, streamable dtypes, at least one row.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from symtrain.errors import ConfigError
from symtrain.stream.load import FieldSource, _read_ranges, file_identity
from symtrain.stream.transform import check_streamable

_SAMPLE_ROWS = 64  # rows hashed into the fingerprint (evenly spaced, always the first and last)


def _file_offset(arr: np.memmap) -> int | None:
    """Byte offset in ``arr.filename`` of ``arr[0]``; None if ``arr`` is not a plain view of its mapping."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or getattr(arr, "filename", None) is None or not arr.flags.c_contiguous:
        return None
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError):
        return None
    start = int(arr.offset) - int(arr.offset) % mmap.ALLOCATIONGRANULARITY
    return start + (arr.ctypes.data - base)


def _source(name: str, arr: np.ndarray) -> FieldSource:
    dtype, row_shape = arr.dtype.str, tuple(int(d) for d in arr.shape[1:])
    if isinstance(arr, np.memmap) and getattr(arr, "mode", "r") != "c":
        # mode 'c' (copy-on-write): the caller's changes live only in its private pages, the file would
        # give other rows: such a memmap is gathered from memory like any array
        offset = _file_offset(arr)
        if offset is not None:
            path = os.fspath(arr.filename)
            try:
                identity = file_identity(os.stat(path))
            except OSError as exc:
                raise ConfigError(f"{path}: the file behind field {name!r} cannot be read: {exc}") from None
            return FieldSource(name=name, path=path, offset=offset, dtype=dtype, row_shape=row_shape,
                               identity=identity)
    return FieldSource(name=name, path=f"<array {name}>", offset=0, dtype=dtype, row_shape=row_shape,
                       array=arr)


class ArraySet:
    """The Dataset face ChunkStream needs (rows, start, fingerprint, field sources) over plain arrays."""

    path = "<arrays>"
    start = 0

    def __init__(self, arrays: Mapping[str, Any], fields: Sequence[str] | None = None):
        if not isinstance(arrays, Mapping) or not arrays:
            raise ConfigError("ChunkStream over arrays needs a non-empty dict field name -> array")
        names = list(arrays) if fields is None else list(fields)
        self.arrays: dict[str, np.ndarray] = {}
        for name in names:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"array field names must be non-empty strings, got {name!r}")
            if name not in arrays:
                raise ConfigError(f"no array for field {name!r}; fields are {list(arrays)}")
            arr = arrays[name]
            if not isinstance(arr, np.ndarray):
                raise ConfigError(f"field {name!r}: expected a numpy array or memmap, got "
                                  f"{type(arr).__name__}")
            if arr.ndim == 0:
                raise ConfigError(f"field {name!r}: a 0-d array has no rows to stream")
            check_streamable("arrays", name, arr.dtype)
            self.arrays[name] = arr
        counts = {n: a.shape[0] for n, a in self.arrays.items()}
        if len(set(counts.values())) > 1:
            raise ConfigError(f"the arrays have different row counts {counts}: every field needs one row per "
                              "example")
        self.rows = next(iter(counts.values()))
        self.sources = {n: _source(n, a) for n, a in self.arrays.items()}
        self.fingerprint = self._fingerprint()

    @property
    def fields(self) -> dict[str, FieldSource]:
        return self.sources

    def field(self, name: str) -> FieldSource:
        """The FieldSource of ``name`` (ConfigError naming the fields otherwise)."""
        try:
            return self.sources[name]
        except KeyError:
            raise ConfigError(f"arrays: no field {name!r}; fields are {list(self.sources)}") from None

    def _fingerprint(self) -> str:
        """Shapes, dtypes and a hash of up to 64 evenly spaced rows (cheap; catches most changed data)."""
        h = hashlib.sha256()
        idx = np.unique(np.linspace(0, max(self.rows - 1, 0), min(self.rows, _SAMPLE_ROWS)).astype(np.int64))
        for name, arr in self.arrays.items():
            h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
            src = self.sources[name]
            if not self.rows:
                continue
            if src.array is not None:
                h.update(np.ascontiguousarray(arr[idx]).tobytes())
                continue
            # read the sample with pread: touching the caller's mapping would map whole page-cache folios
            # into it (tens of MiB of RssFile for 64 rows)
            sample = src.empty(len(idx))
            for k, i in enumerate(idx):
                _read_ranges(src, ((int(i), int(i) + 1),), sample[k:k + 1])
            h.update(sample.tobytes())
        return "arrays:" + h.hexdigest()[:32]

    def close(self) -> None:
        """Nothing to release (the caller owns the arrays)."""
