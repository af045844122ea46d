"""The dataset manifest: ``manifest.json`` naming the fields, their dtypes and per-row shapes, the row
count, a content fingerprint and free-form user metadata. Versioned so newer formats are refused clearly."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.errors import DatasetError
from symtrain.storage.npyfile import check_dtype
from symtrain.storage.safeopen import read_regular_text

FORMAT_NAME = "symtrain-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KiB; more is not a manifest (or holds absurd metadata)
MAX_ROWS = 1 << 40  # ~1.1e12 rows: beyond any dataset on one machine, far below int64 plan arithmetic
MAX_DATALESS_ROWS = 1 << 24  # rows of zero bytes each: no file size bounds them, so a hard cap does
MAX_ROW_BYTES = 1 << 32  # 4 GiB per row of one field: larger rows cannot fit a chunk buffer anyway
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class FieldSpec:
    """One field: its name, the dtype of its rows and the shape of one row."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.npy"

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype.str, "shape": list(self.shape), "file": self.file}


@dataclass(frozen=True)
class Manifest:
    """The parsed, validated content of manifest.json."""

    rows: int
    fields: dict[str, FieldSpec]
    fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "rows": self.rows,
            "fields": {name: spec.to_json() for name, spec in self.fields.items()},
            "fingerprint": self.fingerprint,
            "created": self.created,
            "metadata": self.metadata,
        }


def field_hasher(spec: FieldSpec) -> Any:
    """The running hash of one field: its name, dtype and row shape, then its data bytes in row order."""
    h = hashlib.sha256()
    h.update(f"{spec.name}|{spec.dtype.str}|{spec.shape}".encode())
    return h


def combine_fingerprint(digests: dict[str, bytes], rows: int) -> str:
    """The dataset fingerprint from each field's digest (manifest order) and the row count."""
    h = hashlib.sha256()
    for name, digest in digests.items():
        h.update(name.encode() + b"=" + digest)
    h.update(str(rows).encode())
    return h.hexdigest()[:32]


def check_field_name(name: object, where: str | Path) -> str:
    """Field names become file names: keep them to a safe character set."""
    if not isinstance(name, str) or not _FIELD_NAME.match(name) or name in (".", ".."):
        raise DatasetError(where, f"field name {name!r} is not allowed: use letters, digits, '_', '-', '.'")
    return name


def parse_field(name: str, raw: Any, where: Path) -> FieldSpec:
    if not isinstance(raw, dict):
        raise DatasetError(where, f"field {name!r} must be an object with 'dtype' and 'shape'")
    if "dtype" not in raw:
        raise DatasetError(where, f"field {name!r} has no 'dtype'")
    if not isinstance(raw["dtype"], str):
        raise DatasetError(where,
                           f"field {name!r} has an invalid dtype {raw['dtype']!r}: expected a string like "
                           "'<f4'")
    try:
        dtype = np.dtype(raw["dtype"])
    except Exception as exc:  # numpy raises TypeError, ValueError, SyntaxError... for odd strings
        raise DatasetError(where, f"field {name!r} has an invalid dtype {raw['dtype']!r} ({exc})") from None
    check_dtype(dtype, where)
    shape = raw.get("shape")
    if not isinstance(shape, list) or any(type(d) is not int or d < 0 for d in shape) or len(shape) > 31:
        raise DatasetError(where,
                           f"field {name!r} has an invalid shape {shape!r}: expected a list of ints >= 0")
    spec = FieldSpec(check_field_name(name, where), dtype, tuple(shape))
    if spec.row_bytes > MAX_ROW_BYTES:
        raise DatasetError(where,
                           f"field {name!r} has rows of {spec.row_bytes} bytes (shape {shape!r}), more "
                           f"than the {MAX_ROW_BYTES} bytes a row may hold")
    if raw.get("file", spec.file) != spec.file:
        raise DatasetError(where, f"field {name!r} names file {raw.get('file')!r}, expected {spec.file!r}")
    return spec


def check_rows_hold_data(rows: int, fields: dict[str, FieldSpec], where: str | Path) -> None:
    """Bound the rows of a dataset whose rows hold no bytes: no file size limits their count otherwise."""
    if rows > MAX_DATALESS_ROWS and all(spec.row_bytes == 0 for spec in fields.values()):
        raise DatasetError(where, f"every field has zero bytes per row, yet it claims {rows} rows (at most "
                           f"{MAX_DATALESS_ROWS} rows without data are accepted)")


def read_manifest(directory: str | Path) -> Manifest:
    """Load and validate ``directory/manifest.json``; every problem is a DatasetError naming the file."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.exists():
        raise DatasetError(directory, "does not exist")
    if not directory.is_dir():
        hint = ""
        if directory.suffix == ".npz":
            hint = ": .npz archives cannot be memory-mapped; convert with `symtrain convert IN.npz OUT`"
        elif directory.suffix == ".npy":
            hint = ": a lone .npy is not a dataset; make one with `symtrain convert IN.npy OUT`"
        raise DatasetError(directory, "is not a dataset directory" + hint)
    text = read_regular_text(path, MAX_MANIFEST_BYTES, root=directory,
                             missing="is missing: not a symtrain dataset (or an unfinished write)")
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DatasetError(path, f"is not valid JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise DatasetError(path, "must hold a JSON object")
    if raw.get("format") != FORMAT_NAME:
        raise DatasetError(path, f"is not a symtrain dataset manifest (format is {raw.get('format')!r})")
    version = raw.get("format_version")
    if type(version) is not int or version < 1:
        raise DatasetError(path, f"has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise DatasetError(
            path,
            f"was written in format version {version}, newer than this symtrain reads ({FORMAT_VERSION}); "
            "upgrade symtrain")
    rows = raw.get("rows")
    if type(rows) is not int or not 0 <= rows <= MAX_ROWS:
        raise DatasetError(path, f"has an invalid row count {rows!r} (expected an integer in 0..{MAX_ROWS})")
    fields_raw = raw.get("fields")
    if not isinstance(fields_raw, dict) or not fields_raw:
        raise DatasetError(path, "must list at least one field under 'fields'")
    fields = {name: parse_field(name, spec, path) for name, spec in fields_raw.items()}
    check_rows_hold_data(rows, fields, path)
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise DatasetError(path, "has no fingerprint")
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DatasetError(path, "'metadata' must be a JSON object")
    created = raw.get("created", "")
    return Manifest(rows, fields, fingerprint, metadata, version, created if isinstance(created, str) else "")


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write manifest.json and fsync it (the caller renames the directory into place afterwards)."""
    path = directory / MANIFEST
    data = json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
