"""Reading and writing standard ``.npy`` headers, with every failure turned into a DatasetError.

The writer reserves a fixed-size header so that the row count can be filled in once the last row is
written; any numpy can still ``np.load(path, mmap_mode='r')`` the result.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from symtrain.errors import DatasetError
from symtrain.storage.safeopen import open_regular, open_regular_fd

HEADER_ALIGN = 64  # numpy's own alignment for .npy data
SUPPORTED_KINDS = "biufcSUVMm"  # bool, ints, floats, complex, fixed-width bytes/str/void, datetimes


@dataclass(frozen=True)
class NpyHeader:
    """What a .npy header says: dtype, full shape, and where the data starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def check_dtype(dtype: np.dtype, where: str | Path) -> np.dtype:
    """Accept plain fixed-size dtypes only: objects cannot be memory-mapped, structured ones are not
    streamed."""
    dtype = np.dtype(dtype)
    if (dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0
            or dtype.kind not in SUPPORTED_KINDS):
        raise DatasetError(where, f"dtype {dtype} is not supported: use a numeric, bool or fixed-width type")
    return dtype


def read_header(path: str | Path, root: str | Path | None = None) -> NpyHeader:
    """Parse the header of a .npy file; a file that is not a well-formed .npy is a DatasetError naming it.

    Only a regular file is read (a FIFO would block forever), and with ``root`` only one inside it.
    """
    path = Path(path)
    try:
        with open_regular(path, root, missing="field file is missing") as f:
            head = f.read(6)
            if head[:1] == b"P" and path.suffix == ".npz" or head[:2] == b"PK":
                raise DatasetError(
                    path, "is a .npz (zip) archive, which cannot be memory-mapped; convert it with "
                    "`symtrain convert` or np.save each array to its own .npy")
            if head != npformat.MAGIC_PREFIX:
                raise DatasetError(path, "is not a .npy file (bad magic bytes)")
            f.seek(0)
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f, max_header_size=1 << 20)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npformat.read_array_header_2_0(f, max_header_size=1 << 20)
            else:
                raise DatasetError(path, f"has unsupported .npy format version {version}")
            offset = f.tell()
    except FileNotFoundError:
        raise DatasetError(path, "field file is missing") from None
    except IsADirectoryError:
        raise DatasetError(path, "is a directory, expected a .npy file") from None
    except PermissionError:
        raise DatasetError(path, "cannot be read: permission denied") from None
    except DatasetError:
        raise
    except OSError as exc:
        raise DatasetError(path, f"cannot be read ({exc})") from None
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, TypeError, KeyError...
        raise DatasetError(path, f"has a corrupt .npy header ({exc.__class__.__name__}: {exc})") from None
    if fortran:
        raise DatasetError(path, "is stored in Fortran order; rows must be C-contiguous (np.save a C array)")
    dtype = check_dtype(dtype, path)
    if not isinstance(shape, tuple) or any((not isinstance(d, int)) or d < 0 for d in shape):
        raise DatasetError(path, f"has an invalid shape {shape!r} in its header")
    return NpyHeader(dtype=dtype, shape=tuple(shape), offset=offset)


def check_size(path: str | Path, header: NpyHeader) -> None:
    """The file must hold exactly the bytes its header implies: shorter is truncation, longer is garbage."""
    path = Path(path)
    actual = os.stat(path).st_size
    expected = header.offset + header.nbytes
    if actual < expected:
        raise DatasetError(
            path, f"is truncated: header says shape {header.shape} {header.dtype} "
            f"({expected} bytes with the header) but the file has {actual} bytes")
    if actual > expected:
        raise DatasetError(path,
                           f"has {actual - expected} unexpected bytes after the data for shape "
                           f"{header.shape}")


def header_bytes(dtype: np.dtype, shape: tuple[int, ...], total: int | None = None) -> bytes:
    """A version-1.0 .npy header for ``shape``, padded with spaces to ``total`` bytes (a multiple of 64)."""
    descr = npformat.dtype_to_descr(dtype)
    body = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    raw = len(npformat.MAGIC_PREFIX) + 2 + 2 + len(body) + 1
    if total is None:
        total = -(-raw // HEADER_ALIGN) * HEADER_ALIGN
    if raw > total or total - 10 > 0xFFFF:
        raise ValueError(f"a .npy header for shape {shape} does not fit in {total} bytes")
    body += " " * (total - raw) + "\n"
    return npformat.MAGIC_PREFIX + bytes([1, 0]) + (len(body)).to_bytes(2, "little") + body.encode("latin1")


def reserved_header_size(dtype: np.dtype, row_shape: tuple[int, ...]) -> int:
    """Header size that fits any row count up to 10**18, so it can be rewritten in place at the end."""
    return len(header_bytes(dtype, (10**18, *row_shape)))


def byte_view(arr: np.ndarray) -> memoryview:
    """The bytes of C-contiguous ``arr`` as a flat memoryview, for any dtype (datetime64 has no buffer
    format)."""
    if not arr.nbytes:
        return memoryview(b"")
    return memoryview(arr.reshape(-1).view(np.uint8))


def read_into(path: str | Path, offset: int, out: np.ndarray) -> np.ndarray:
    """Fill the C-contiguous ``out`` with the bytes of ``path`` from ``offset`` (pread, no mapping), so that
    reading a file larger than RAM leaves no mapped pages counted against the process."""
    view = byte_view(out) if out.nbytes else memoryview(bytearray())
    done = 0
    fd = open_regular_fd(path)
    try:
        while done < len(view):
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise DatasetError(path,
                                   f"ended after {offset + done} bytes, before the data its header declares "
                                   "(truncated while open?)")
            done += got
    finally:
        os.close(fd)
    return out
