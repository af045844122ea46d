"""Crash-safe publishing of files and directories: write under a temporary name, fsync, rename.

Used by the dataset writer and by checkpoints, so a crash at any instant leaves either the old complete
object or the new complete object at the target name, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

PARTIAL_MARK = ".partial-"


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or create inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_name(target: str | Path) -> Path:
    """A hidden sibling of ``target`` that no reader mistakes for the real thing."""
    target = Path(target)
    return target.parent / f".{target.name}{PARTIAL_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def publish_dir(tmp: Path, target: Path, overwrite: bool = False) -> None:
    """Rename a finished, fsynced directory into place; with ``overwrite`` the old one is removed after."""
    old = None
    if target.exists():
        if not overwrite:
            raise FileExistsError(target)
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    os.rename(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_file_atomic(target: str | Path, data: bytes) -> None:
    """Write bytes to ``target`` atomically (temp file in the same directory, fsync, rename, fsync dir)."""
    target = Path(target)
    tmp = partial_name(target)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
