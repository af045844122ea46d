"""Offline global shuffle with bounded memory: the two-pass bucket shuffle.

Pass 1 reads the input in chunks and scatters every row to one of B temporary bucket files, chosen
uniformly at random. Pass 2 loads one bucket at a time, permutes it uniformly and appends it to the
output. Independent uniform bucket ids plus a uniform permutation inside each bucket give a uniformly
random permutation of all rows. B is chosen so that one bucket fits comfortably in ``memory_limit``.
The output is a pure function of (input data, seed, B); B is recorded in the output metadata.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.atomic import partial_name, remove_stale_leftovers
from symtrain.errors import ConfigError, DatasetError
from symtrain.storage.npyfile import byte_view
from symtrain.storage.reader import open_dataset
from symtrain.storage.writer import DatasetWriter, check_replaceable
from symtrain.validate import check_int, check_path_writable

DEFAULT_MEMORY = 512 << 20
MAX_OPEN_FILES = 256  # keep bucket files open while B * fields stays below this


def plan_buckets(rows: int, row_bytes: int, memory_limit: int) -> tuple[int, int]:
    """(number of buckets, rows per scatter chunk). A bucket is expected to take <= memory_limit / 6 (the
    bucket plus its permuted copy, with room for an unlucky bucket 1.5x the mean); a scatter chunk
    (and its sorted copy) at most memory_limit / 4."""
    memory_limit = check_int("memory_limit", memory_limit, 1 << 20,
                             expected="an integer number of bytes >= 1 MiB")
    row_bytes = max(1, row_bytes)
    if 6 * row_bytes > memory_limit:
        raise ConfigError(f"memory_limit={memory_limit} is too small for rows of {row_bytes} bytes")
    buckets = max(1, math.ceil(rows * row_bytes / (memory_limit / 6)))
    chunk = max(1, memory_limit // (4 * row_bytes))
    return buckets, chunk


class _Buckets:
    """B x fields raw files in a scratch directory; appended to in pass 1, read whole in pass 2."""

    def __init__(self, scratch: Path, n: int, fields: list[str]):
        self.scratch, self.n, self.fields = scratch, n, fields
        self.keep_open = n * len(fields) <= MAX_OPEN_FILES
        self.handles: dict[tuple[int, str], Any] = {}

    def path(self, b: int, name: str) -> Path:
        return self.scratch / f"{b:06d}.{name}.raw"

    def write(self, b: int, name: str, data: np.ndarray) -> None:
        key = (b, name)
        f = self.handles.get(key) or open(self.path(b, name), "ab")
        f.write(byte_view(np.ascontiguousarray(data)))
        if self.keep_open:
            self.handles[key] = f
        else:
            f.close()

    def close(self) -> None:
        for f in self.handles.values():
            f.close()
        self.handles.clear()


def shuffle_dataset(src: str | Path, dst: str | Path, seed: int, *, memory_limit: int = DEFAULT_MEMORY,
                    overwrite: bool = False, progress: bool = True) -> Path:
    """Write a fully permuted copy of dataset ``src`` to ``dst`` (atomic), using about ``memory_limit``
    bytes of memory whatever the dataset size. Temporary bucket files need the dataset's size on disk
    next to ``dst``."""
    from tqdm.auto import tqdm

    seed = check_int("seed", seed, 0)
    dst = Path(dst)
    if Path(src).resolve() == dst.resolve():
        raise ConfigError("shuffle output must differ from its input")
    if dst.exists() and not overwrite:
        raise DatasetError(dst, "already exists; pass overwrite=True (or --overwrite) to replace it")
    if dst.exists():
        check_replaceable(dst)
    ds = open_dataset(src)
    names = ds.names
    row_bytes = sum(f.row_bytes for f in ds.fields.values())
    buckets, chunk = plan_buckets(ds.rows, row_bytes, memory_limit)
    rng = np.random.default_rng([seed, buckets])
    meta = dict(ds.metadata, shuffled={"from": str(Path(src)), "from_fingerprint": ds.fingerprint,
                                       "seed": seed, "buckets": buckets})
    schema = {n: (f.dtype, f.shape) for n, f in ds.fields.items()}
    check_path_writable(dst, create_parents=True)
    remove_stale_leftovers(dst)
    scratch = partial_name(dst)
    scratch.mkdir()
    store = _Buckets(scratch, buckets, names)
    counts = np.zeros(buckets, np.int64)
    try:
        with tqdm(total=2 * ds.rows, unit="rows", unit_scale=True, desc="shuffle",
                  disable=not progress) as bar:
            for s in range(0, ds.rows, chunk):  # pass 1: scatter
                e = min(s + chunk, ds.rows)
                ids = rng.integers(0, buckets, e - s)
                order = np.argsort(ids, kind="stable")
                bounds = np.searchsorted(ids[order], np.arange(buckets + 1))
                counts += np.diff(bounds)
                for name in names:
                    rows = np.take(ds.read_rows(name, s, e), order, axis=0)
                    for b in np.flatnonzero(np.diff(bounds)):
                        store.write(int(b), name, rows[bounds[b]:bounds[b + 1]])
                    del rows
                bar.update(e - s)
            store.close()
            with DatasetWriter(dst, schema, meta, overwrite=overwrite) as w:  # pass 2: permute each bucket
                for b in range(buckets):
                    n = int(counts[b])
                    parts = {}
                    for name, f in ds.fields.items():
                        p = store.path(b, name)
                        data = np.fromfile(p, dtype=f.dtype) if p.exists() else np.empty(0, f.dtype)
                        if data.size != n * math.prod(f.shape):
                            raise DatasetError(p, f"temporary bucket file holds {data.size} values, expected "
                                               f"{n} rows of {f.shape} (disk full or changed meanwhile?)")
                        parts[name] = data.reshape((n, *f.shape))
                        p.unlink(missing_ok=True)
                    perm = rng.permutation(n)
                    w.append({k: np.take(v, perm, axis=0) for k, v in parts.items()})
                    bar.update(n)
    except OSError as exc:  # a full disk (ENOSPC/EFBIG) while scattering into the temporary buckets
        raise DatasetError(dst, f"shuffle failed writing its temporary buckets: {exc.strerror or exc}; "
                           "nothing was written to the target (it needs the dataset's size free next to "
                           "it)") from exc
    finally:
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)
        ds.close()
    return dst
