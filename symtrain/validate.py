"""Shared checks for paths a command is about to write, so every writer fails the same clear way up front.

``os.access`` is not a writability test (root passes it everywhere, and /proc or a read-only mount say
"yes" to it too): the only honest test is to create something, so ``check_path_writable`` makes and removes
an empty hidden directory next to the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from symtrain.errors import ConfigError, DatasetError


def check_path_arg(name: str, value: object) -> Path:
    """``value`` as a Path; ConfigError naming the argument unless it is a str or os.PathLike."""
    if isinstance(value, bool) or not isinstance(value, str | os.PathLike) or value == "":
        raise ConfigError(f"{name} must be a path (str or Path), got {type(value).__name__} {value!r}")
    return Path(value)


def check_path_writable(path: str | Path) -> Path:
    """Check that ``path`` can be created: its parent exists, is a directory, and accepts new entries.

    Raises DatasetError naming the parent directory and the reason (missing, not a directory, read-only,
    permission denied, not a place for files such as /proc). Nothing is left behind.
    """
    path = Path(path)
    parent = path.parent
    if not parent.exists():
        raise DatasetError(parent, "parent directory does not exist")
    if not parent.is_dir():
        raise DatasetError(parent, "is not a directory (cannot create anything under it)")
    try:
        probe = tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=parent)
    except OSError as exc:
        raise DatasetError(parent, f"is not writable ({exc.strerror or exc})") from None
    os.rmdir(probe)
    return path
