"""Shared argument checks, so every module accepts the same types and fails the same clear way up front.

``check_int`` is the one integer-argument rule (a Python or NumPy integer, never a bool, within bounds).
The path checks cover paths a command is about to write.

``os.access`` is not a writability test (root passes it everywhere, and /proc or a read-only mount say
"yes" to it too): the only honest test is to create something, so ``check_path_writable`` makes and removes
an empty hidden directory next to the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from symtrain.errors import ConfigError, DatasetError


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer; False for a bool (``True`` is no count) and everything else."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None, *,
              allow_none: bool = False, expected: str | None = None) -> int | None:
    """``value`` as an int in ``[minimum, maximum]`` (or None when allowed), else ConfigError naming ``name``.

    ``expected`` replaces the default description ("an integer >= 1", "an integer in 0..10") in the message.
    """
    if value is None and allow_none:
        return None
    if is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    if expected is None:
        bounds = ("" if minimum is None and maximum is None else f" >= {minimum}" if maximum is None
                  else f" <= {maximum}" if minimum is None else f" in {minimum}..{maximum}")
        expected = f"{'None or ' if allow_none else ''}an integer{bounds}"
    raise ConfigError(f"{name} must be {expected}, got {value!r}")


def check_path_arg(name: str, value: object) -> Path:
    """``value`` as a Path; ConfigError naming the argument unless it is a str or os.PathLike."""
    if isinstance(value, bool) or not isinstance(value, str | os.PathLike) or value == "":
        raise ConfigError(f"{name} must be a path (str or Path), got {type(value).__name__} {value!r}")
    return Path(value)


def check_path_writable(path: str | Path, create_parents: bool = False) -> Path:
    """Check that ``path`` can be created: its parent exists, is a directory, and accepts new entries.

    With ``create_parents`` missing parent directories are made first (as ``mkdir -p``). Raises
    DatasetError naming ``path`` and the parent at fault with the reason (missing, not a directory,
    read-only, permission denied, not a place for files such as /proc). Only created parents remain.
    """
    path = Path(path)
    parent = path.parent
    if create_parents and not parent.exists():
        ancestor = parent
        while not ancestor.exists() and ancestor.parent != ancestor:  # the nearest existing ancestor
            ancestor = ancestor.parent
        if ancestor.is_dir():
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatasetError(path, f"cannot be created: making its parent directory {parent} failed "
                                   f"({exc.strerror or exc})") from None
        elif ancestor.exists():
            raise DatasetError(path, f"cannot be created: {ancestor} is not a directory")
    if not parent.exists():
        raise DatasetError(path, f"cannot be created: parent directory {parent} does not exist")
    if not parent.is_dir():
        raise DatasetError(path, f"cannot be created: {parent} is not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=parent)
    except OSError as exc:
        raise DatasetError(path,
                           f"cannot be created: {parent} is not writable ({exc.strerror or exc})") from None
    os.rmdir(probe)
    return path
