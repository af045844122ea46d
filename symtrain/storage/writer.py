"""Incremental, bounded-memory, atomic dataset writing.

``DatasetWriter`` takes batches of rows with ``append``, streams them to one ``.npy`` per field under a
hidden temporary directory, and only on ``close()`` writes the final headers and manifest, fsyncs and
renames the directory into place. An exception (or a killed process) leaves the target untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.atomic import fsync_dir, partial_name, publish_dir, remove_stale_leftovers
from symtrain.errors import ConfigError, DatasetError, SchemaError
from symtrain.storage.manifest import (
    FORMAT_NAME,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_ROW_BYTES,
    MAX_ROWS,
    FieldSpec,
    Manifest,
    check_field_name,
    check_rows_hold_data,
    combine_fingerprint,
    field_hasher,
    write_manifest,
)
from symtrain.storage.npyfile import byte_view, check_dtype, header_bytes, reserved_header_size
from symtrain.storage.safeopen import read_regular_text
from symtrain.validate import check_path_writable

Schema = Mapping[str, tuple[Any, tuple[int, ...]]]


def owned_entries(path: Path) -> set[str] | None:
    """The names symtrain wrote inside dataset directory ``path`` (manifest + field files), None if not
    ours."""
    try:
        raw = json.loads(read_regular_text(path / MANIFEST, MAX_MANIFEST_BYTES, root=path))
    except (DatasetError, ValueError, RecursionError):
        return None
    if not isinstance(raw,
                      dict) or raw.get("format") != FORMAT_NAME or not isinstance(raw.get("fields"), dict):
        return None
    return {MANIFEST, *(f"{name}.npy" for name in raw["fields"] if isinstance(name, str))}


def foreign_entries(path: Path, owned: set[str]) -> list[str]:
    """Entries of directory ``path`` that are not in ``owned``: what symtrain must never delete."""
    return sorted(entry.name for entry in path.iterdir() if entry.name not in owned)


def check_replaceable(path: Path) -> None:
    """``overwrite`` replaces only a symtrain dataset holding nothing else, or an empty directory.

    A dataset directory that also holds files symtrain did not write (notes, a nested run) is refused:
    replacing the directory would delete them.
    """
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise DatasetError(path, "exists and is not a dataset directory; refusing to replace it")
    if not any(path.iterdir()):
        return
    owned = owned_entries(path)
    if owned is None:
        raise DatasetError(path, "exists and is not a symtrain dataset (no valid manifest.json); refusing to "
                           "replace it even with overwrite")
    foreign = foreign_entries(path, owned)
    if foreign:
        raise DatasetError(path, f"holds files symtrain did not write ({', '.join(foreign[:5])}"
                           f"{', ...' if len(foreign) > 5 else ''}); refusing to replace it even with "
                           "overwrite: move them away first")


def _schema_from(schema: Schema, where: Path) -> dict[str, FieldSpec]:
    if not isinstance(schema, Mapping) or not schema:
        raise ConfigError("schema must be a non-empty mapping of field name -> (dtype, row shape)")
    out = {}
    for name, value in schema.items():
        try:
            dtype, shape = value
            dtype = np.dtype(dtype)
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"schema entry for {name!r} must be (dtype, row_shape), got {value!r} "
                              f"({exc})") from None
        if any(d < 0 for d in shape):
            raise ConfigError(f"schema entry for {name!r} has a negative dimension in {shape}")
        spec = FieldSpec(check_field_name(name, where), check_dtype(dtype, where), shape)
        if spec.row_bytes > MAX_ROW_BYTES:
            raise ConfigError(f"schema entry for {name!r}: rows of {spec.row_bytes} bytes exceed "
                              f"{MAX_ROW_BYTES}")
        out[name] = spec
    return out


class DatasetWriter:
    """Write a dataset one batch of rows at a time; use as a context manager (commits unless an error)."""

    def __init__(self, path: str | Path, schema: Schema | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() or self.path.is_symlink():
            if not overwrite:
                raise DatasetError(self.path,
                                   "already exists; pass overwrite=True (or --overwrite) to replace it")
            check_replaceable(self.path)
        fields = _schema_from(schema, self.path) if schema is not None else None  # before making any parent
        check_path_writable(self.path, create_parents=True)
        remove_stale_leftovers(self.path)
        self.overwrite = overwrite
        self.metadata = dict(metadata or {})
        self.rows = 0
        self.fields: dict[str, FieldSpec] | None = None
        self._files: dict[str, Any] = {}
        self._hashes: dict[str, Any] = {}
        self._offsets: dict[str, int] = {}
        self._tmp: Path | None = None
        self._done = False
        if fields is not None:
            self._start(fields)

    def _start(self, fields: dict[str, FieldSpec]) -> None:
        self.fields = fields
        self._tmp = partial_name(self.path)
        try:
            self._tmp.mkdir()
            for name, spec in fields.items():
                f = open(self._tmp / spec.file, "wb")
                self._files[name] = f
                size = reserved_header_size(spec.dtype, spec.shape)
                f.write(header_bytes(spec.dtype, (0, *spec.shape), total=size))
                self._offsets[name] = size
                self._hashes[name] = field_hasher(spec)
        except OSError as exc:
            raise self._failed("creating the dataset files", exc) from exc

    def _failed(self, doing: str, exc: OSError) -> DatasetError:
        """Abort (drop the partial directory) and describe an I/O failure such as a full disk
        (ENOSPC/EFBIG)."""
        self.abort()
        return DatasetError(self.path,
                            f"{doing} failed: {exc.strerror or exc}; nothing was written to the target "
                            "(an existing dataset there is unchanged)")

    def append(self, batch: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """Append rows: one array per field, all with the same number of rows; dtypes must match exactly."""
        if self._done:
            raise ConfigError(f"writer for {self.path} is already closed")
        data = dict(batch or {}, **fields)
        if self.fields is None:
            if not data:
                raise SchemaError("append() needs at least one field")
            arrays = {k: np.asarray(v) for k, v in data.items()}
            for k, a in arrays.items():
                if a.ndim == 0:
                    raise SchemaError(f"field {k!r}: expected an array of rows, got a scalar")
            self._start(_schema_from({k: (a.dtype, a.shape[1:]) for k, a in arrays.items()}, self.path))
        assert self.fields is not None
        if set(data) != set(self.fields):
            missing, extra = sorted(set(self.fields) - set(data)), sorted(set(data) - set(self.fields))
            raise SchemaError(f"{self.path}: append() fields do not match the schema (missing {missing}, "
                              f"unexpected {extra})")
        n = None
        arrays = {}
        for name, spec in self.fields.items():
            a = np.asarray(data[name])
            if a.dtype != spec.dtype:
                raise SchemaError(
                    f"{self.path}: field {name!r} has dtype {a.dtype}, the schema says {spec.dtype}; "
                    f"cast it first (e.g. a.astype('{spec.dtype}'))")
            if a.ndim == 0 or a.shape[1:] != spec.shape:
                raise SchemaError(f"{self.path}: field {name!r} rows have shape "
                                  f"{a.shape[1:] if a.ndim else ()}, the schema says {spec.shape}")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise SchemaError(f"{self.path}: fields have different row counts in one append ({name!r} "
                                  f"has {a.shape[0]}, expected {n})")
            arrays[name] = np.ascontiguousarray(a)
        for name, a in arrays.items():
            buf = byte_view(a)
            try:
                self._files[name].write(buf)
            except OSError as exc:
                raise self._failed(f"writing field {name!r}", exc) from exc
            self._hashes[name].update(buf)
        self.rows += int(n or 0)

    def close(self) -> Path:
        """Finish: final headers, manifest, fsync, rename into place. Returns the dataset path."""
        if self._done:
            return self.path
        if self.fields is None:
            raise SchemaError(f"{self.path}: nothing was appended and no schema was given; cannot write an "
                              "empty dataset without fields")
        try:
            assert self._tmp is not None
            if self.rows > MAX_ROWS:
                raise DatasetError(self.path,
                                   f"{self.rows} rows are more than the {MAX_ROWS} a dataset may hold")
            check_rows_hold_data(self.rows, self.fields, self.path)
            for name, spec in self.fields.items():
                f = self._files[name]
                f.seek(0)
                f.write(header_bytes(spec.dtype, (self.rows, *spec.shape), total=self._offsets[name]))
                f.flush()
                os.fsync(f.fileno())
                f.close()
            fingerprint = combine_fingerprint({n: h.digest() for n, h in self._hashes.items()}, self.rows)
            manifest = Manifest(
                rows=self.rows, fields=self.fields, fingerprint=fingerprint, metadata=self.metadata,
                created=datetime.now(UTC).isoformat(timespec="seconds"))
            write_manifest(self._tmp, manifest)
            fsync_dir(self._tmp)
            if self.overwrite:
                check_replaceable(self.path)
            try:
                publish_dir(self._tmp, self.path, overwrite=self.overwrite)
            except FileExistsError:
                raise DatasetError(self.path,
                                   "appeared while writing (another writer?); not replaced") from None
        except OSError as exc:
            raise self._failed("finishing the dataset", exc) from exc
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the target is left as it was."""
        for f in self._files.values():
            if not f.closed:
                f.close()
        if self._tmp is not None and self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._done = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dataset(path: str | Path, arrays: Mapping[str, Any] | Iterable[Mapping[str, Any]],
                  metadata: Mapping[str, Any] | None = None, overwrite: bool = False,
                  batch_rows: int = 65536) -> Path:
    """Write in-memory arrays (a mapping of field -> array) or an iterable of such batches as a dataset."""
    if isinstance(arrays, Mapping):
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        lengths = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise SchemaError(f"{path}: fields have different row counts: {lengths}")
        n = next(iter(lengths.values()), 0) or 0
        schema = {k: (a.dtype, a.shape[1:]) for k, a in arrays.items()}
        for k, a in arrays.items():
            if a.ndim == 0:
                raise SchemaError(f"field {k!r}: expected an array of rows, got a scalar")
        with DatasetWriter(path, schema, metadata, overwrite) as w:
            for s in range(0, n, batch_rows):
                w.append({k: a[s:s + batch_rows] for k, a in arrays.items()})
        return Path(path)
    if not isinstance(arrays, Iterable) or isinstance(arrays, str | bytes):
        raise ConfigError(f"arrays must be a mapping field -> array or an iterable of such batches, got "
                          f"{type(arrays).__name__}")
    with DatasetWriter(path, None, metadata, overwrite) as w:
        for batch in arrays:
            w.append(batch)
    return Path(path)
