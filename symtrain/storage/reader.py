"""Opening a dataset: validate the manifest against every field file, then hand out read-only memmaps.

Nothing here ever opens a file for writing (``mode='r'``), so a bug or a stray slice assignment cannot
grow or corrupt the user's data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.errors import ConfigError, DatasetError
from symtrain.storage.manifest import FieldSpec, Manifest, read_manifest
from symtrain.storage.npyfile import check_size, read_header, read_into
from symtrain.storage.safeopen import open_regular
from symtrain.validate import check_int, check_path_arg

CHUNK_BYTES = 64 << 20  # how much of a field the tools (convert, inspect, legacy shared) handle at once


@dataclass(frozen=True)
class Field:
    """A field as stored: its spec plus the file and byte offset of row 0 (what a loader needs to read)."""

    spec: FieldSpec
    path: Path
    offset: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dtype(self) -> np.dtype:
        return self.spec.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    @property
    def row_bytes(self) -> int:
        return self.spec.row_bytes


def _validate_field(directory: Path, manifest: Manifest, spec: FieldSpec) -> Field:
    path = directory / spec.file
    header = read_header(path, root=directory)
    if header.dtype != spec.dtype:
        raise DatasetError(path, f"has dtype {header.dtype} but manifest.json says {spec.dtype}")
    expected = (manifest.rows, *spec.shape)
    if header.shape != expected:
        if header.shape[:1] != expected[:1] and header.shape[1:] == expected[1:]:
            raise DatasetError(path,
                               f"has {header.shape[0] if header.shape else 0} rows but manifest.json says "
                               f"{manifest.rows} (row counts of the fields differ)")
        raise DatasetError(path, f"has shape {header.shape} but manifest.json says {expected}")
    check_size(path, header)
    return Field(spec, path, header.offset)


class Dataset:
    """An opened dataset (or a row range of one): fields as read-only memmaps, plus manifest facts."""

    def __init__(self, path: Path, manifest: Manifest, fields: dict[str, Field], start: int = 0,
                 stop: int | None = None, maps: dict[str, np.ndarray] | None = None):
        self.path = path
        self.manifest = manifest
        self.fields = fields
        self.start = start
        self.stop = manifest.rows if stop is None else stop
        self._maps: dict[str, np.ndarray] = {} if maps is None else maps  # shared with splits

    @property
    def rows(self) -> int:
        """Rows in this dataset (or split)."""
        return self.stop - self.start

    def __len__(self) -> int:
        return self.rows

    @property
    def fingerprint(self) -> str:
        """Changes whenever any stored data changes; a split adds its row range."""
        base = self.manifest.fingerprint
        if self.start == 0 and self.stop == self.manifest.rows:
            return base
        return f"{base}[{self.start}:{self.stop}]"

    @property
    def metadata(self) -> dict[str, Any]:
        return self.manifest.metadata

    @property
    def names(self) -> list[str]:
        return list(self.fields)

    def field(self, name: str) -> Field:
        try:
            return self.fields[name]
        except KeyError:
            raise ConfigError(f"{self.path}: no field {name!r}; fields are {self.names}") from None

    def memmap(self, name: str) -> np.ndarray:
        """The whole field file as a read-only memmap (all rows, ignoring the split)."""
        if name not in self._maps:
            f = self.field(name)
            shape = (self.manifest.rows, *f.shape)
            if self.manifest.rows == 0 or f.row_bytes == 0:
                arr = np.zeros(shape, dtype=f.dtype)
                arr.flags.writeable = False
            else:
                try:  # mapped from a checked descriptor: a FIFO swapped in since opening cannot block
                    with open_regular(f.path, root=self.path) as fh:
                        arr = np.memmap(fh, dtype=f.dtype, mode="r", offset=f.offset, shape=shape)
                    arr.filename = str(f.path.absolute())  # a descriptor has no name; streaming needs it
                except (OSError, ValueError) as exc:
                    raise DatasetError(f.path, f"cannot be memory-mapped ({exc})") from None
            self._maps[name] = arr
        return self._maps[name]

    def __getitem__(self, name: str) -> np.ndarray:
        """The rows of this dataset (or split) of field ``name``, as a read-only memmap view (no copy)."""
        return self.memmap(name)[self.start:self.stop]

    def read_rows(self, name: str, start: int = 0, stop: int | None = None, out: np.ndarray | None = None
                  ) -> np.ndarray:
        """Copy rows [start, stop) of this split of field ``name`` into an owned C-contiguous array (``out``
        reused when given) by reading the file: bounded memory, no file pages mapped into the process."""
        f = self.field(name)
        stop = self.rows if stop is None else stop
        if not 0 <= start <= stop <= self.rows:
            raise ConfigError(f"{self.path}: read_rows({start}, {stop}) is outside 0..{self.rows}")
        n = stop - start
        if out is None:
            out = np.empty((n, *f.shape), f.dtype)
        else:
            if out.dtype != f.dtype or out.shape[1:] != f.shape or len(out) < n or not out.flags.c_contiguous:
                raise ConfigError(f"read_rows: out must be C-contiguous {f.dtype} with rows of shape "
                                  f"{f.shape} and at least {n} rows")
            out = out[:n]
        return read_into(f.path, f.offset + (self.start + start) * f.row_bytes, out)

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def split(self, start: int, stop: int | None = None) -> Dataset:
        """Rows ``[start, stop)`` of this dataset as a new Dataset sharing the same files (no copy)."""
        stop = self.rows if stop is None else stop
        for arg, value in (("start", start), ("stop", stop)):
            check_int(f"{self.path}: split {arg}", value, expected="an integer row index")
        if not 0 <= start <= stop <= self.rows:
            raise ConfigError(f"{self.path}: split({start}, {stop}) is outside 0 <= start <= stop <= "
                              f"{self.rows}")
        return Dataset(self.path, self.manifest, self.fields, self.start + int(start), self.start + int(stop),
                       self._maps)

    def select(self, names: Sequence[str]) -> Dataset:
        """The same rows with only the named fields."""
        return Dataset(self.path, self.manifest, {n: self.field(n) for n in names}, self.start, self.stop,
                       self._maps)

    def close(self) -> None:
        """Drop the memmaps this object made (views handed out keep their own mapping alive)."""
        self._maps.clear()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        desc = ", ".join(f"{n}: {f.dtype}{list(f.shape)}" for n, f in self.fields.items())
        rng = "" if (self.start, self.stop) == (0,
                                                self.manifest.rows) else f" rows {self.start}:{self.stop} of"
        return f"<Dataset {self.path}{rng} {self.rows} rows {{{desc}}}>"


def open_dataset(path: str | Path, fields: Sequence[str] | None = None) -> Dataset:
    """Open and validate a dataset directory; fields come back as read-only memmaps.

    Raises DatasetError naming the file for a missing or corrupt manifest, a missing field file, a
    .npy header that disagrees with the manifest, truncation or trailing bytes, or mismatched row counts.
    """
    directory = check_path_arg("path", path)
    manifest = read_manifest(directory)
    names = list(manifest.fields) if fields is None else list(fields)
    for n in names:
        if n not in manifest.fields:
            raise ConfigError(f"{directory}: no field {n!r}; fields are {list(manifest.fields)}")
    checked = {n: _validate_field(directory, manifest, manifest.fields[n]) for n in names}
    return Dataset(directory, manifest, checked)
