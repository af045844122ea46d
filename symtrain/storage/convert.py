"""Converting user data to symtrain datasets: arrays, .npy/.npz, the Theano-tutorial pickle (mnist.pkl.gz),
CSV and HDF5. Everything but the pickle is read in row chunks, so files larger than RAM convert with
bounded memory; ``dtype`` casts once, here, so the stream never has to.

``dtype`` is either one dtype applied to every floating-point field (``"float32"``) or per-field
``"x:float32,y:int32"`` (a mapping in Python). A float -> integer cast must be exact (integral, finite).
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import mmap
import pickle
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npformat

from symtrain.errors import ConfigError, DatasetError
from symtrain.storage.group import build_group
from symtrain.storage.manifest import check_field_name
from symtrain.storage.npyfile import check_dtype, read_into
from symtrain.storage.reader import CHUNK_BYTES
from symtrain.storage.safeopen import require_regular
from symtrain.storage.writer import DatasetWriter
from symtrain.validate import check_int

PICKLE_SPLITS = ("train", "valid", "test")
NPY_SUFFIXES = (".npy",)
H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
PICKLE_SUFFIXES = (".pkl", ".pkl.gz", ".pickle", ".pickle.gz")

DtypeSpec = str | np.dtype | Mapping[str, Any] | None
Batches = Iterator[dict[str, np.ndarray]]


# ----------------------------------------------------------------------------------------------- dtypes
def parse_dtype_spec(spec: DtypeSpec) -> tuple[np.dtype | None, dict[str, np.dtype]]:
    """``"float32"`` -> (float32, {}); ``"x:float32,y:int32"`` or a mapping -> (None, {x:..., y:...})."""
    if spec is None or spec == "":
        return None, {}

    def dt(value: Any, what: str) -> np.dtype:
        try:
            d = np.dtype(value)
        except Exception as exc:
            raise ConfigError(f"--dtype: {what} {value!r} is not a dtype ({exc})") from None
        try:
            return check_dtype(d, "--dtype")
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None

    if isinstance(spec, Mapping):
        return None, {str(k): dt(v, f"field {k!r}:") for k, v in spec.items()}
    if isinstance(spec, str) and ":" in spec:
        per = {}
        for part in spec.split(","):
            name, sep, value = part.partition(":")
            if not sep or not name.strip() or not value.strip():
                raise ConfigError("--dtype: expected FIELD:DTYPE[,FIELD:DTYPE...] or one dtype, got "
                                  f"{spec!r}")
            per[name.strip()] = dt(value.strip(), f"field {name.strip()!r}:")
        return None, per
    return dt(spec, "dtype"), {}


def target_dtypes(source: Mapping[str, np.dtype], spec: DtypeSpec) -> dict[str, np.dtype]:
    """The stored dtype of every field: per-field entries, else the single dtype for float fields."""
    single, per = parse_dtype_spec(spec)
    unknown = sorted(set(per) - set(source))
    if unknown:
        raise ConfigError(f"--dtype names fields {unknown} that the input does not have; fields: "
                          f"{sorted(source)}")
    out = {}
    for name, d in source.items():
        d = np.dtype(d)
        out[name] = per.get(name, single if (single is not None and d.kind == "f") else d)
    return out


def cast(a: np.ndarray, dtype: np.dtype, field: str, where: str | Path) -> np.ndarray:
    """Cast one chunk; float -> int must be exact, so silent truncation of labels cannot happen."""
    if a.dtype == dtype:
        return a
    if a.dtype.kind == "f" and dtype.kind in "iub":
        if not np.isfinite(a).all() or not np.array_equal(a, np.round(a)):
            raise DatasetError(where,
                               f"field {field!r}: cannot cast non-integral or non-finite {a.dtype} values "
                               f"to {dtype} exactly")
    if dtype.kind in "iu" and a.dtype.kind in "iuf" and a.size:
        info = np.iinfo(dtype)
        if a.min() < info.min or a.max() > info.max:
            raise DatasetError(where, f"field {field!r}: values outside the range of {dtype}")
    try:
        return a.astype(dtype, casting="unsafe")
    except (TypeError, ValueError) as exc:
        raise DatasetError(where, f"field {field!r}: cannot cast {a.dtype} to {dtype} ({exc})") from None


def _rows_per_chunk(row_bytes: int, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        return check_int("chunk_rows", chunk_rows, 1, expected="a positive integer")
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def _write(out: Path, schema: dict[str, tuple[np.dtype, tuple[int, ...]]], batches: Batches, rows: int | None,
           spec: DtypeSpec, where: str | Path, metadata: Mapping[str, Any], overwrite: bool, progress: bool,
           desc: str) -> Path:
    """Cast and append every batch under a progress bar; the writer publishes atomically at the end."""
    from tqdm.auto import tqdm

    dtypes = target_dtypes({k: v[0] for k, v in schema.items()}, spec)
    final = {k: (dtypes[k], shape) for k, (_, shape) in schema.items()}
    meta = dict(metadata)
    with DatasetWriter(out, final, meta, overwrite=overwrite) as w, \
            tqdm(total=rows, unit="rows", unit_scale=True, desc=desc, disable=not progress) as bar:
        for batch in batches:
            w.append({k: cast(a, dtypes[k], k, where) for k, a in batch.items()})
            bar.update(len(next(iter(batch.values()))))
    return out


def _aligned(arrays: Mapping[str, Any], where: str | Path) -> tuple[dict[str, Any], int]:
    lengths = {}
    for k, a in arrays.items():
        check_field_name(k, where)
        if len(getattr(a, "shape", ())) == 0:
            raise DatasetError(where, f"field {k!r} is a scalar, expected an array of rows")
        lengths[k] = a.shape[0]
    if not arrays:
        raise DatasetError(where, "has no arrays to convert")
    if len(set(lengths.values())) != 1:
        raise DatasetError(where, f"arrays have different row counts: {lengths}")
    return dict(arrays), next(iter(lengths.values()))


def _sliced(arrays: Mapping[str, Any], n: int, step: int) -> Batches:
    """Row chunks; C-ordered .npy memmaps are read with pread (no mapped pages pile up in the process)."""
    for s in range(0, n, step):
        e = min(s + step, n)
        batch = {}
        for k, a in arrays.items():
            if (isinstance(a, np.memmap) and isinstance(a.base, mmap.mmap) and a.flags.c_contiguous
                    and a.filename and a.ndim):  # a whole-file memmap (a slice keeps the base's offset)
                row = a.dtype.itemsize * int(np.prod(a.shape[1:]))
                batch[k] = read_into(a.filename, a.offset + s * row, np.empty((e - s, *a.shape[1:]), a.dtype))
            else:
                batch[k] = np.ascontiguousarray(a[s:e])
        yield batch


# ------------------------------------------------------------------------------------------ array-likes
def convert_arrays(arrays: Mapping[str, Any], out: str | Path, *, dtype: DtypeSpec = None,
                   metadata: Mapping[str, Any] | None = None, overwrite: bool = False,
                   chunk_rows: int | None = None, progress: bool = False,
                   where: str | Path = "arrays") -> Path:
    """Any row-sliceable arrays (numpy, memmaps, h5py datasets) -> one dataset, read ``chunk_rows`` at a
    time."""
    arrays, n = _aligned(arrays, where)
    schema = {}
    for k, a in arrays.items():
        try:
            schema[k] = (check_dtype(np.dtype(a.dtype), where), tuple(int(d) for d in a.shape[1:]))
        except DatasetError as exc:
            raise DatasetError(where, f"field {k!r}: {exc.problem}") from None
    row_bytes = sum(np.dtype(d).itemsize * int(np.prod(s)) for d, s in schema.values())
    step = _rows_per_chunk(row_bytes, chunk_rows)
    return _write(Path(out), schema, _sliced(arrays, n, step), n, dtype, where,
                  dict(metadata or {}, source=str(where)), overwrite, progress, "convert")


def _load_npy(path: Path) -> np.ndarray:
    require_regular(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(path, "does not exist") from None
    except Exception as exc:  # truncated files, object arrays, corrupt headers
        raise DatasetError(path,
                           f"cannot be read as a .npy array ({exc.__class__.__name__}: {exc})") from None


def _member_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read the .npy header at the start of a stream (numpy's public parsers, any format version)."""
    version = npformat.read_magic(f)
    if version == (1, 0):
        return npformat.read_array_header_1_0(f, max_header_size=1 << 20)
    return npformat.read_array_header_2_0(f, max_header_size=1 << 20)


def _npz_members(path: Path) -> tuple[zipfile.ZipFile, dict[str, tuple[str, np.dtype, tuple[int, ...]]]]:
    """Open a .npz and read only the header of each member .npy (name -> (zip member, dtype, shape))."""
    require_regular(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DatasetError(path, "does not exist") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(path, f"is not a readable .npz archive ({exc})") from None
    members = {}
    try:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            with zf.open(info) as f:
                shape, fortran, dt = _member_header(f)
            if fortran and len(shape) > 1:
                raise DatasetError(path,
                                   f"member {name!r} is stored in Fortran order; cannot stream it by rows")
            members[name] = (info.filename, np.dtype(dt), tuple(shape))
    except DatasetError:
        zf.close()
        raise
    except Exception as exc:
        zf.close()
        raise DatasetError(path, f"has a corrupt member ({exc.__class__.__name__}: {exc})") from None
    return zf, members


def _npz_batches(path: Path, zf: zipfile.ZipFile, members: dict[str, tuple[str, np.dtype, tuple[int, ...]]],
                 step: int) -> Batches:
    """Read every member's rows in lock step straight from the zip streams (no member is loaded whole)."""
    streams = {}
    try:
        for name, (member, _, _) in members.items():
            f = zf.open(member)
            streams[name] = f
            _member_header(f)
        n = next(iter(members.values()))[2][0]
        for s in range(0, n, step):
            k = min(step, n - s)
            batch = {}
            for name, (_, dt, shape) in members.items():
                count = k * int(np.prod(shape[1:], dtype=np.int64))
                raw = streams[name].read(count * dt.itemsize)
                if len(raw) != count * dt.itemsize:
                    raise DatasetError(path, f"member {name!r} ends early (truncated archive)")
                batch[name] = np.frombuffer(raw, dtype=dt).reshape((k, *shape[1:]))
            yield batch
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(path, f"cannot be read ({exc.__class__.__name__}: {exc})") from None
    finally:
        for f in streams.values():
            f.close()
        zf.close()


def convert_npz(path: str | Path, out: str | Path, *, dtype: DtypeSpec = None, overwrite: bool = False,
                chunk_rows: int | None = None, progress: bool = False) -> Path:
    """A .npz archive -> one dataset with a field per member, streamed member by member in row chunks."""
    path = Path(path)
    zf, members = _npz_members(path)
    try:
        if not members:
            raise DatasetError(path, "holds no .npy members")
        schema = {}
        for name, (_, dt, shape) in members.items():
            check_field_name(name, path)
            if not shape:
                raise DatasetError(path, f"member {name!r} is a scalar, expected an array of rows")
            try:
                schema[name] = (check_dtype(dt, path), shape[1:])
            except DatasetError as exc:
                raise DatasetError(path, f"member {name!r}: {exc.problem}") from None
        lengths = {n: m[2][0] for n, m in members.items()}
        if len(set(lengths.values())) != 1:
            raise DatasetError(path, f"members have different row counts: {lengths}")
    except BaseException:
        zf.close()
        raise
    row_bytes = sum(d.itemsize * int(np.prod(s)) for d, s in schema.values())
    step = _rows_per_chunk(row_bytes, chunk_rows)
    n = next(iter(lengths.values()))
    return _write(Path(out), schema, _npz_batches(path, zf, members, step), n, dtype, path,
                  {"source": str(path)}, overwrite, progress, path.name)


def convert_npy(inputs: Mapping[str, str | Path], out: str | Path, *, dtype: DtypeSpec = None,
                overwrite: bool = False, chunk_rows: int | None = None, progress: bool = False) -> Path:
    """One .npy per field (``{"x": "X.npy", "y": "y.npy"}``), memory-mapped and copied in row chunks."""
    arrays = {name: _load_npy(Path(p)) for name, p in inputs.items()}
    where = ", ".join(str(p) for p in inputs.values())
    return convert_arrays(arrays, out, dtype=dtype, overwrite=overwrite, chunk_rows=chunk_rows,
                          progress=progress, where=where)


# --------------------------------------------------------------------------------------------- pickle
def load_split_pickle(path: str | Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The Theano-tutorial format: (gzip) pickle of ((train_x, train_y), (valid_x, valid_y), (test_x,
    test_y)).

    Python-2 pickles need ``encoding='latin1'``. A pickle can run code when loaded: convert only files you
    trust. It is loaded whole (pickles cannot be read in parts).
    """
    path = require_regular(path)
    try:
        opener = gzip.open if _is_gzip(path) else open
        with opener(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DatasetError(path, "does not exist") from None
    except Exception as exc:
        raise DatasetError(path, f"is not a readable pickle ({exc.__class__.__name__}: {exc})") from None
    shape_hint = "expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))"
    if not isinstance(data, (tuple, list)) or len(data) != 3:
        raise DatasetError(path, f"holds {type(data).__name__}, {shape_hint}")
    out = []
    for name, pair in zip(PICKLE_SPLITS, data, strict=True):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DatasetError(path, f"the {name} entry is not an (x, y) pair; {shape_hint}")
        try:
            x, y = (np.asarray(v) for v in pair)
        except Exception as exc:
            raise DatasetError(path, f"the {name} arrays cannot be read ({exc})") from None
        out.append((x, y))
    return tuple(out)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def convert_pickle(path: str | Path, out: str | Path, *, dtype: DtypeSpec = None, overwrite: bool = False,
                   progress: bool = False) -> Path:
    """mnist.pkl.gz-style pickle -> OUT/train, OUT/valid, OUT/test (fields x, y), published together."""
    path = Path(path)
    parts = load_split_pickle(path)

    def build(tmp: Path) -> dict[str, Any]:
        counts = {}
        for name, (x, y) in zip(PICKLE_SPLITS, parts, strict=True):
            convert_arrays({"x": x, "y": y}, tmp / name, dtype=dtype, progress=progress,
                           metadata={"split": name}, where=f"{path} ({name})")
            counts[name] = len(x)
        return {"source": str(path), "format": "theano-tutorial pickle", "splits": counts}

    return build_group(out, build, overwrite)


# ------------------------------------------------------------------------------------------------ CSV
def _open_text(path: Path):
    require_regular(path)
    try:
        if _is_gzip(path):
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise DatasetError(path, "does not exist") from None
    except OSError as exc:
        raise DatasetError(path, f"cannot be read ({exc})") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def convert_csv(path: str | Path, out: str | Path, *, label_column: int | str | None = None,
                header: bool | None = None, delimiter: str | None = None, dtype: DtypeSpec = None,
                overwrite: bool = False, chunk_rows: int | None = None, progress: bool = False) -> Path:
    """A numeric CSV -> fields ``x`` (float32 per default, one row per line) and, with ``label_column``
    (index or header name), ``y`` (int64). ``header=None`` detects a header line (any non-number in it)."""
    path = Path(path)
    with _open_text(path) as f:
        try:
            first = f.readline()
            sample = first + "".join(itertools.islice(f, 20))
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            raise DatasetError(path, f"cannot be read as text ({exc})") from None
    if not first.strip():
        raise DatasetError(path, "is empty")
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t ").delimiter
        except csv.Error:
            delimiter = ","
    cells = [c.strip() for c in next(csv.reader([first], delimiter=delimiter))]
    if header is None:
        header = not all(_is_number(c) for c in cells if c)
    ncols = len(cells)
    names = cells if header else [str(i) for i in range(ncols)]
    label = None
    if label_column is not None:
        if isinstance(label_column, str) and label_column in names and header:
            label = names.index(label_column)
        else:
            try:
                label = int(label_column)
            except (TypeError, ValueError):
                raise ConfigError(f"--label-column {label_column!r} is neither a column index nor a header "
                                  f"name of {path} (header: {names[:20]})") from None
            if label < 0:
                label += ncols
            if not 0 <= label < ncols:
                raise ConfigError(f"--label-column {label_column!r} is outside the {ncols} columns of {path}")
    feat_cols = [i for i in range(ncols) if i != label]
    if not feat_cols:
        raise DatasetError(path, "has no feature columns besides the label column")
    schema: dict[str, tuple[np.dtype, tuple[int, ...]]] = {"x": (np.dtype(np.float32), (len(feat_cols),))}
    if label is not None:
        schema["y"] = (np.dtype(np.int64), ())
    step = _rows_per_chunk(8 * ncols * 4, chunk_rows)  # text parsing holds several copies of a chunk

    def batches() -> Batches:
        with _open_text(path) as f:
            line_no = 1
            if header:
                f.readline()
                line_no = 2
            while True:
                lines = [ln for ln in itertools.islice(f, step)]
                if not lines:
                    return
                try:
                    block = np.loadtxt(lines, delimiter=delimiter, dtype=np.float64, ndmin=2, comments=None)
                except ValueError as exc:
                    raise DatasetError(path, f"lines {line_no}-{line_no + len(lines) - 1}: {exc}") from None
                if block.shape[1] != ncols:
                    raise DatasetError(path, f"lines {line_no}-{line_no + len(lines) - 1}: expected {ncols} "
                                       f"columns, found {block.shape[1]}")
                batch = {"x": cast(block[:, feat_cols], np.dtype(np.float32), "x", path)}
                if label is not None:
                    batch["y"] = cast(block[:, label], np.dtype(np.int64), "y", path)
                line_no += len(lines)
                yield batch

    meta = {"source": str(path), "columns": names, "label_column": None if label is None else names[label]}
    return _write(Path(out), schema, batches(), None, dtype, path, meta, overwrite, progress, path.name)


# ----------------------------------------------------------------------------------------------- HDF5
def convert_hdf5(path: str | Path, out: str | Path, *, keys: Sequence[str] | None = None,
                 dtype: DtypeSpec = None,
                 overwrite: bool = False, chunk_rows: int | None = None, progress: bool = False) -> Path:
    """HDF5 datasets (all of them, or ``keys``) with equal first dimensions -> one field each, by row
    chunks."""
    try:
        import h5py
    except ImportError:
        raise ConfigError("reading HDF5 needs h5py: pip install 'symtrain[hdf5]'") from None
    path = require_regular(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(path, f"is not a readable HDF5 file ({exc})") from None
    with h5:
        found: dict[str, Any] = {}
        if keys:
            for k in keys:
                obj = h5.get(k)
                if not isinstance(obj, h5py.Dataset):
                    raise DatasetError(path, f"has no dataset {k!r}")
                found[k] = obj
        else:
            def visit(name: str, obj: Any) -> None:  # returning non-None would stop visititems
                if isinstance(obj, h5py.Dataset):
                    found[name] = obj

            h5.visititems(visit)
        if not found:
            raise DatasetError(path, "holds no datasets")
        arrays = {k.strip("/").replace("/", "."): v for k, v in found.items()}
        return convert_arrays(arrays, out, dtype=dtype, overwrite=overwrite, chunk_rows=chunk_rows,
                              progress=progress, where=path)


# ------------------------------------------------------------------------------------------- dispatch
def _kind(path: Path) -> str:
    name = path.name.lower()
    for kind, suffixes in (("npy", NPY_SUFFIXES), ("npz", (".npz",)), ("pickle", PICKLE_SUFFIXES),
                           ("hdf5", H5_SUFFIXES), ("csv", CSV_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    raise ConfigError(f"{path}: unknown input format; expected one of .npy, .npz, .pkl[.gz], .csv[.gz], .h5")


def convert(inputs: str | Path | Sequence[str | Path], out: str | Path, *, dtype: DtypeSpec = None,
            label_column: int | str | None = None, header: bool | None = None, delimiter: str | None = None,
            overwrite: bool = False, chunk_rows: int | None = None, progress: bool = True) -> Path:
    """Convert by file type. Several inputs are .npy files, one per field, named ``NAME=PATH`` or by stem."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise ConfigError("convert needs at least one input")
    named: dict[str, Path] = {}
    for item in items:
        name, sep, p = str(item).partition("=")
        path = Path(p if sep else name)
        named[name if sep else path.name.split(".")[0]] = path
    paths = list(named.values())
    kinds = {_kind(p) for p in paths}
    for p in paths:
        require_regular(p)
    if len(paths) > 1 or any("=" in str(i) for i in items):
        if kinds != {"npy"}:
            raise ConfigError("several inputs (or NAME=PATH) are only for .npy files, one per field")
        return convert_npy(named, out, dtype=dtype, overwrite=overwrite, chunk_rows=chunk_rows,
                           progress=progress)
    path, kind = paths[0], kinds.pop()
    if label_column is not None and kind != "csv":
        raise ConfigError("--label-column applies to CSV input only")
    runners: dict[str, Callable[[], Path]] = {
        "npy": lambda: convert_npy({"x": path}, out, dtype=dtype, overwrite=overwrite, chunk_rows=chunk_rows,
                                   progress=progress),
        "npz": lambda: convert_npz(path, out, dtype=dtype, overwrite=overwrite, chunk_rows=chunk_rows,
                                   progress=progress),
        "pickle": lambda: convert_pickle(path, out, dtype=dtype, overwrite=overwrite, progress=progress),
        "csv": lambda: convert_csv(path, out, label_column=label_column, header=header, delimiter=delimiter,
                                   dtype=dtype, overwrite=overwrite, chunk_rows=chunk_rows,
                                   progress=progress),
        "hdf5": lambda: convert_hdf5(path, out, dtype=dtype, overwrite=overwrite, chunk_rows=chunk_rows,
                                     progress=progress),
    }
    return runners[kind]()


__all__ = ["convert", "convert_arrays", "convert_npy", "convert_npz", "convert_pickle", "convert_csv",
           "convert_hdf5", "load_split_pickle", "parse_dtype_spec"]
