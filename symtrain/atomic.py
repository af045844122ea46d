"""Crash-safe publishing of files and directories: write under a temporary name, fsync, rename.

Used by the dataset writer and by checkpoints, so a crash at any instant leaves either the old complete
object or the new complete object at the target name, never a half-written one.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

PARTIAL_MARK = ".partial-"
OLD_MARK = ".old-"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)(?P<mark>\.partial-|\.old-)(?P<pid>\d+)-[0-9a-f]{8}$")


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or create inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partial_name(target: str | Path) -> Path:
    """A hidden sibling of ``target`` that no reader mistakes for the real thing."""
    target = Path(target)
    return target.parent / f".{target.name}{PARTIAL_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _old_name(target: Path) -> Path:
    return target.parent / f".{target.name}{OLD_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine (or we may not signal it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover_target(name: str) -> str | None:
    """The target a hidden ``.NAME.partial-PID-XXXXXXXX`` / ``.NAME.old-...`` entry belongs to, else None."""
    m = _LEFTOVER.match(name)
    return m["name"] if m else None


def stale_leftovers(target: str | Path) -> list[Path]:
    """Hidden ``.NAME.partial-PID-*`` / ``.NAME.old-PID-*`` siblings of ``target`` whose writer process is
    gone.

    A killed writer leaves its partial directory behind (never at the target name). An ``.old-`` copy is
    only reported when the target exists: if a crash hit between the two renames of ``publish_dir`` the
    ``.old-`` directory is the last complete version and is left for the user to rename back.
    """
    target = Path(target)
    out = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return out
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if not m or m["name"] != target.name or pid_alive(int(m["pid"])):
            continue
        if m["mark"] == OLD_MARK and not target.exists():
            continue
        out.append(entry)
    return out


def remove_stale_leftovers(target: str | Path) -> list[Path]:
    """Delete what ``stale_leftovers`` finds (same machine only: pids of another host mean nothing here)."""
    removed = []
    for entry in stale_leftovers(target):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists():
            removed.append(entry)
    return removed


def publish_dir(tmp: Path, target: Path, overwrite: bool = False) -> None:
    """Rename a finished, fsynced directory into place; with ``overwrite`` the old one is removed after."""
    old = None
    if target.exists():
        if not overwrite:
            raise FileExistsError(target)
        old = _old_name(target)
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
