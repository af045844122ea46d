"""Looking inside datasets: layout facts, chunked statistics, a non-finite scan and fingerprint verification.

Everything reads the field files in bounded chunks (``chunk_bytes`` at a time), so inspecting a dataset
larger than RAM costs one chunk of memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.errors import DatasetError
from symtrain.storage.manifest import MANIFEST, combine_fingerprint, field_hasher
from symtrain.storage.npyfile import read_header
from symtrain.storage.reader import CHUNK_BYTES, Dataset, open_dataset
from symtrain.storage.safeopen import open_regular

STATS_CHUNK_BYTES = CHUNK_BYTES // 4  # statistics hold a few float64 copies of a chunk
MAX_LABELS = 1000  # histogram only for integer columns with at most this many distinct values
FIRST_ROWS = 5


def _chunks(ds: Dataset, name: str, chunk_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) in chunks of about ``chunk_bytes``, read into one reused buffer (not mapped)."""
    f = ds.field(name)
    step = max(1, min(ds.rows, chunk_bytes // max(1, f.row_bytes)))
    buf = np.empty((step, *f.shape), f.dtype)
    for s in range(0, ds.rows, step):
        yield s, ds.read_rows(name, s, min(s + step, ds.rows), out=buf)


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress,
                leave=False)


def find_datasets(path: str | Path) -> list[Path]:
    """``path`` itself when it is a dataset, else its sub-directories that are (e.g. OUT/train, OUT/test)."""
    path = Path(path)
    if not path.is_dir() or (path / MANIFEST).exists():
        return [path]
    order = {"train": 0, "valid": 1, "test": 2}
    children = sorted((p for p in path.iterdir() if p.is_dir() and (p / MANIFEST).exists()
                       and not p.name.startswith(".")), key=lambda p: (order.get(p.name, 3), p.name))
    if not children:
        raise DatasetError(path, f"is neither a dataset (no {MANIFEST}) nor a directory of datasets")
    return children


def summary(ds: Dataset) -> dict[str, Any]:
    """Fields, rows, dtypes, bytes, fingerprint and metadata, straight from the validated manifest."""
    fields = {n: {"dtype": str(f.dtype), "shape": list(f.shape), "row_bytes": f.row_bytes,
                  "bytes": f.row_bytes * ds.rows, "file": str(f.path)} for n, f in ds.fields.items()}
    return {"path": str(ds.path), "rows": ds.rows, "format_version": ds.manifest.format_version,
            "fingerprint": ds.fingerprint, "created": ds.manifest.created,
            "bytes": sum(v["bytes"] for v in fields.values()), "fields": fields, "metadata": ds.metadata}


def field_stats(ds: Dataset, name: str, chunk_bytes: int = STATS_CHUNK_BYTES) -> dict[str, Any]:
    """min/max/mean/std over all finite values of a numeric field (merged chunk by chunk, Chan et al.),
    the count of non-finite values, and a value histogram for integer/bool columns (one value per row)."""
    f = ds.field(name)
    kind = f.dtype.kind
    if kind not in "biuf":
        return {"skipped": f"no statistics for dtype {f.dtype}"}
    count, mean, m2 = 0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    nonfinite = 0
    hist: dict[int, int] | None = {} if (kind in "biu" and f.shape == ()) else None
    for _, chunk in _chunks(ds, name, chunk_bytes):
        a = np.asarray(chunk).reshape(-1)
        if kind == "f":
            finite = np.isfinite(a)
            if not finite.all():
                nonfinite += int(a.size - np.count_nonzero(finite))
                a = a[finite]
        if a.size == 0:
            continue
        a64 = a.astype(np.float64)
        n = a64.size
        cm = float(a64.mean())
        cm2 = float(((a64 - cm) ** 2).sum())
        delta = cm - mean
        total = count + n
        mean += delta * n / total
        m2 += cm2 + delta * delta * count * n / total
        count = total
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        if hist is not None:
            values, counts = np.unique(a, return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                hist[int(v)] = hist.get(int(v), 0) + c
            if len(hist) > MAX_LABELS:
                hist = None
    out: dict[str, Any] = {"count": count, "nonfinite": nonfinite}
    if count:
        out.update(min=lo, max=hi, mean=mean, std=math.sqrt(m2 / count))
    if hist is not None:
        out["histogram"] = {str(k): hist[k] for k in sorted(hist)}
    return out


def check_finite(ds: Dataset, chunk_bytes: int = STATS_CHUNK_BYTES, first: int = FIRST_ROWS,
                 progress: bool = False) -> dict[str, dict[str, Any]]:
    """Rows holding NaN or +-inf, per float/complex field: {field: {"rows": count, "first_rows": [...]}}."""
    bad: dict[str, dict[str, Any]] = {}
    with _bar(sum(f.row_bytes * ds.rows for f in ds.fields.values() if f.dtype.kind in "fc"),
              "check", progress) as bar:
        for name, f in ds.fields.items():
            if f.dtype.kind not in "fc":
                continue
            rows_bad, first_rows = 0, []
            for s, chunk in _chunks(ds, name, chunk_bytes):
                a = np.asarray(chunk).reshape(len(chunk), -1)
                row_bad = ~np.isfinite(a).all(axis=1)
                hits = np.flatnonzero(row_bad)
                rows_bad += len(hits)
                first_rows.extend((hits[:first - len(first_rows)] + s + ds.start).tolist())
                bar.update(a.nbytes)
            if rows_bad:
                bad[name] = {"rows": rows_bad, "first_rows": first_rows}
    return bad


def recompute_fingerprint(ds: Dataset, chunk_bytes: int = STATS_CHUNK_BYTES,
                          progress: bool = False) -> str:
    """Hash every stored byte of every field exactly as the writer did (whole files, not just a split)."""
    rows = ds.manifest.rows
    digests = {}
    buf = bytearray(max(1, chunk_bytes))
    total = sum(spec.row_bytes * rows for spec in ds.manifest.fields.values())
    with _bar(total, "verify", progress) as bar:
        for name, spec in ds.manifest.fields.items():
            h = field_hasher(spec)
            path = ds.path / spec.file
            header = read_header(path, root=ds.path)
            remaining = spec.row_bytes * rows
            with open_regular(path, root=ds.path) as fh:
                fh.seek(header.offset)
                view = memoryview(buf)
                while remaining:
                    got = fh.readinto(view[:min(len(buf), remaining)])
                    if not got:
                        raise DatasetError(path, "ended before the data its header declares (truncated?)")
                    h.update(view[:got])
                    remaining -= got
                    bar.update(got)
            digests[name] = h.digest()
    return combine_fingerprint(digests, rows)


def inspect_path(path: str | Path, *, stats: bool = True, check: bool = False, verify: bool = False,
                 chunk_bytes: int = STATS_CHUNK_BYTES, progress: bool = False) -> list[dict[str, Any]]:
    """One report per dataset found at ``path`` (a dataset, or a directory of datasets)."""
    reports = []
    for p in find_datasets(path):
        with open_dataset(p) as ds:
            rep = summary(ds)
            if stats:
                for name in ds.names:
                    rep["fields"][name]["stats"] = field_stats(ds, name, chunk_bytes)
            if check:
                rep["nonfinite"] = check_finite(ds, chunk_bytes, progress=progress)
            if verify:
                actual = recompute_fingerprint(ds, chunk_bytes, progress=progress)
                rep["verify"] = {"stored": ds.manifest.fingerprint, "actual": actual,
                                 "ok": actual == ds.manifest.fingerprint}
            reports.append(rep)
    return reports


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_inspection(rep: dict[str, Any]) -> str:
    """The human-readable text of one report."""
    lines = [f"{rep['path']}: {rep['rows']} rows, {_size(rep['bytes'])}, format v{rep['format_version']}, "
             f"fingerprint {rep['fingerprint']}"]
    for name, f in rep["fields"].items():
        lines.append(f"  {name:<10} {f['dtype']:<8} row shape {tuple(f['shape'])!s:<10} {_size(f['bytes'])}")
        st = f.get("stats")
        if st and "min" in st:
            lines.append(f"  {'':<10} min {st['min']:.6g}  max {st['max']:.6g}  mean {st['mean']:.6g}  "
                         f"std {st['std']:.6g}" + (f"  non-finite {st['nonfinite']}" if st["nonfinite"]
                                                   else ""))
        if st and "histogram" in st:
            hist = st["histogram"]
            shown = ", ".join(f"{k}: {v}" for k, v in list(hist.items())[:20])
            lines.append(f"  {'':<10} values {{{shown}{', ...' if len(hist) > 20 else ''}}}")
    if rep.get("metadata"):
        meta = json.dumps(rep["metadata"], sort_keys=True)
        lines.append(f"  metadata {meta if len(meta) <= 300 else meta[:297] + '...'}")
    if "nonfinite" in rep:
        if rep["nonfinite"]:
            for name, b in rep["nonfinite"].items():
                lines.append(f"  CHECK FAILED: field {name!r} has {b['rows']} rows with NaN/inf, first rows "
                             f"{b['first_rows']}")
        else:
            lines.append("  check: no NaN or inf")
    if "verify" in rep:
        v = rep["verify"]
        lines.append("  verify: fingerprint matches the data" if v["ok"] else
                     f"  VERIFY FAILED: data fingerprint {v['actual']} != manifest {v['stored']} (data "
                     "changed)")
    return "\n".join(lines)
