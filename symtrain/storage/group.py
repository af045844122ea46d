"""A directory of datasets (OUT/train, OUT/valid, OUT/test) published atomically as one unit.

The splits are written into a hidden ``.OUT.partial-*`` sibling; only when all of them are complete is it
renamed to OUT, so a crash never leaves an OUT with some splits missing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from symtrain.atomic import fsync_dir, partial_name, publish_dir, remove_stale_leftovers, write_file_atomic
from symtrain.errors import DatasetError
from symtrain.storage.manifest import MAX_MANIFEST_BYTES
from symtrain.storage.safeopen import read_regular_text
from symtrain.storage.writer import check_replaceable, foreign_entries
from symtrain.validate import check_path_writable

GROUP_FILE = "datasets.json"


def group_owned(out: Path, marker: str) -> set[str] | None:
    """What symtrain wrote in group directory ``out``: the marker and the splits it lists; None if no
    marker."""
    try:
        meta = json.loads(read_regular_text(out / marker, MAX_MANIFEST_BYTES, root=out))
    except (DatasetError, ValueError, RecursionError):
        return None
    splits = meta.get("splits") if isinstance(meta, dict) else None
    names = splits if isinstance(splits, dict) else {}
    return {marker, *(n for n in names if isinstance(n, str) and n not in ("", ".", "..") and "/" not in n)}


def check_group_target(out: Path, overwrite: bool, marker: str = GROUP_FILE) -> None:
    """Refuse an existing OUT unless ``overwrite`` and OUT is empty or holds only what we wrote.

    Owned are ``marker`` and the split datasets it lists (each checked like a dataset); anything else in
    OUT (user notes, a nested ``runs/``) is foreign, and OUT is then refused rather than deleted with it.
    """
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise DatasetError(out, "already exists; pass overwrite=True (or --overwrite) to replace it")
        if not out.is_dir() or out.is_symlink():
            raise DatasetError(out, "exists and is not a directory; refusing to replace it")
        if any(out.iterdir()):
            owned = group_owned(out, marker)
            if owned is None:
                raise DatasetError(out, f"exists and is not a directory this command wrote (no {marker}); "
                                   "refusing to replace it")
            foreign = foreign_entries(out, owned)
            if foreign:
                raise DatasetError(out, f"holds files symtrain did not write ({', '.join(foreign[:5])}"
                                   f"{', ...' if len(foreign) > 5 else ''}); refusing to replace it even "
                                   "with --overwrite: move them away first")
            for name in sorted(owned - {marker}):
                check_replaceable(out / name)
    check_path_writable(out, create_parents=True)


def build_group(out: str | Path, build: Callable[[Path], dict[str, Any]], overwrite: bool = False,
                marker: str = GROUP_FILE) -> Path:
    """Run ``build(tmp_dir)`` (which writes the datasets and returns the group metadata), write the
    metadata to ``marker``, fsync and rename into place. Any exception leaves OUT as it was."""
    out = Path(out)
    check_group_target(out, overwrite, marker)
    remove_stale_leftovers(out)
    tmp = partial_name(out)
    tmp.mkdir()
    try:
        meta = build(tmp)
        write_file_atomic(tmp / marker, (json.dumps(meta, indent=2) + "\n").encode())
        fsync_dir(tmp)
        if out.exists():
            check_group_target(out, overwrite, marker)
            publish_dir(tmp, out, overwrite=True)
        else:
            os.rename(tmp, out)
            fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
