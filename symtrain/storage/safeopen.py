"""Opening user files for reading without hanging and without leaving their directory.

A FIFO, a terminal or a socket at a file's name would block ``open()`` forever (a FIFO waits for a
writer), so every file symtrain reads is opened with ``O_NONBLOCK``, checked with ``fstat`` to be a
regular file, and only then read. A dataset's files must resolve (after symlinks) inside the dataset
directory: a field file that is a symlink to ``/etc/shadow`` or another user's data is refused.
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
from pathlib import Path
from typing import IO

from symtrain.errors import DatasetError

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink"}


def file_kind(mode: int) -> str:
    """A reader's name for the file type in ``mode`` ("a FIFO (named pipe)", "a directory", ...)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_inside(path: str | Path, root: str | Path) -> None:
    """DatasetError unless ``path``, with every symlink resolved, lies inside directory ``root``."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    if real != top and not real.startswith(top.rstrip(os.sep) + os.sep):
        raise DatasetError(path, f"resolves to {real}, outside {root}; refusing to read a file outside its "
                           "directory (copy it in instead of symlinking it)")


def require_regular(path: str | Path) -> Path:
    """``path`` (symlinks followed) must exist and be a regular file; DatasetError naming what it is instead.

    For inputs opened by libraries (numpy, zipfile, h5py) that would block on a FIFO inside their own open().
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DatasetError(path, "does not exist") from None
    except OSError as exc:
        raise DatasetError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise DatasetError(path, f"is {file_kind(mode)}, not a regular file; refusing to read it")
    return path


def open_regular_fd(path: str | Path, root: str | Path | None = None, missing: str = "does not exist") -> int:
    """A read-only descriptor of ``path``; DatasetError if it is missing, not a regular file or outside
    ``root``.

    Never blocks: the open uses ``O_NONBLOCK`` (cleared again once the file is known to be regular).
    """
    path = Path(path)
    if root is not None:
        check_inside(path, root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DatasetError(path, missing) from None
    except IsADirectoryError:
        raise DatasetError(path, "is a directory, expected a regular file") from None
    except PermissionError:
        raise DatasetError(path, "cannot be read: permission denied") from None
    except OSError as exc:
        raise DatasetError(path, f"cannot be opened ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DatasetError(path, f"is {file_kind(mode)}, not a regular file; refusing to read it")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | Path, root: str | Path | None = None,
                 missing: str = "does not exist") -> IO[bytes]:
    """``open_regular_fd`` as a buffered binary file object (closes the descriptor when closed)."""
    return os.fdopen(open_regular_fd(path, root, missing), "rb")


def read_regular_text(path: str | Path, limit: int, root: str | Path | None = None,
                      missing: str = "does not exist") -> str:
    """The UTF-8 text of regular file ``path``; DatasetError if larger than ``limit`` bytes or not text."""
    parts, size = [], 0
    with open_regular(path, root, missing) as f:
        while size <= limit and (part := f.read(min(1 << 16, limit + 1 - size))):
            parts.append(part)
            size += len(part)
    data = b"".join(parts)
    if len(data) > limit:
        raise DatasetError(path, f"is larger than {limit} bytes; refusing to load it")
    try:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read()
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"is not UTF-8 text ({exc})") from None
