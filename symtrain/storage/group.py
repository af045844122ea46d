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
from symtrain.validate import check_path_writable

GROUP_FILE = "datasets.json"


def check_group_target(out: Path, overwrite: bool, marker: str = GROUP_FILE) -> None:
    """Refuse an existing OUT unless ``overwrite`` and OUT is empty or was written by us (has ``marker``)."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise DatasetError(out, "already exists; pass overwrite=True (or --overwrite) to replace it")
        if not out.is_dir() or out.is_symlink() or (any(out.iterdir()) and not (out / marker).exists()):
            raise DatasetError(out, f"exists and is not a directory this command wrote (no {marker}); "
                               "refusing to replace it")
    check_path_writable(out)


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
