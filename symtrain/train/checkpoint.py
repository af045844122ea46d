"""Checkpoints: every shared variable of a step by name + the scheduler cursor, as a directory, no pickle.

A checkpoint is a directory ``<run>/checkpoints/epoch-EEEEE-step-SSSSSSSS`` (the cursor it resumes at)
holding ``arrays.npz`` (one array per variable, read back with ``allow_pickle=False``) and
``checkpoint.json`` (format version, cursor, stream state, variable table, sha256 of ``arrays.npz``,
history and callback state). It is built under a hidden temporary name, fsynced and renamed into place,
so a crash leaves the previous checkpoint intact. See docs/checkpoints.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.atomic import fsync_dir, leftover_target, partial_name, publish_dir, remove_stale_leftovers
from symtrain.errors import CheckpointError, ConfigError
from symtrain.train.checkpoint_schema import validate_meta
from symtrain.train.rundir import BEST, check_regular, read_regular
from symtrain.validate import check_int

log = logging.getLogger(__name__)

FORMAT = "symtrain-checkpoint"
VERSION = 1
ARRAYS = "arrays.npz"
META = "checkpoint.json"
NAME_RE = re.compile(r"^epoch-(\d{5,})-step-(\d{8,})$")


def checkpoint_name(epoch: int, step_in_epoch: int) -> str:
    return f"epoch-{epoch:05d}-step-{step_in_epoch:08d}"


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``arrays`` (name -> ndarray or Generator state dict) and its ``meta``."""

    path: Path
    meta: dict
    arrays: dict[str, Any] = field(repr=False)

    @property
    def cursor(self) -> dict:
        return self.meta["cursor"]


# ----- capturing and restoring variables ---------------------------------------------------------------

def snapshot(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Copies of every variable's value (``get_value(borrow=True)`` would change on the next step).

    Random generators become their bit-generator state (a JSON-serialisable dict).
    """
    out: dict[str, Any] = {}
    for name, var in variables.items():
        value = var.get_value(borrow=True)
        if isinstance(value, np.random.Generator):
            out[name] = {"kind": "generator", "bit_generator": type(value.bit_generator).__name__,
                         "state": _jsonable(value.bit_generator.state)}
        elif isinstance(value, np.random.RandomState):
            out[name] = {"kind": "randomstate", "state": _jsonable(value.get_state(legacy=False))}
        else:
            out[name] = np.array(value, copy=True, order="C")
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.array(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


def describe(values: Mapping[str, Any]) -> dict[str, dict]:
    """name -> {"dtype", "shape"} (or {"kind": "generator"}) for compatibility checks."""
    out = {}
    for name, v in values.items():
        if isinstance(v, np.ndarray):
            out[name] = {"dtype": v.dtype.str, "shape": list(v.shape)}
        else:
            out[name] = {"kind": v["kind"]}
    return out


def describe_variables(variables: Mapping[str, Any]) -> dict[str, dict]:
    """Like :func:`describe` for live shared variables, without copying their values."""
    out = {}
    for name, var in variables.items():
        value = var.get_value(borrow=True)
        if isinstance(value, np.random.Generator):
            out[name] = {"kind": "generator"}
        elif isinstance(value, np.random.RandomState):
            out[name] = {"kind": "randomstate"}
        else:
            value = np.asarray(value)
            out[name] = {"dtype": value.dtype.str, "shape": list(value.shape)}
    return out


def check_variables(saved: Mapping[str, dict], variables: Mapping[str, Any], where: Path | str) -> None:
    """CheckpointError naming every missing, extra or differently shaped/typed variable."""
    live = describe_variables(variables)
    problems = []
    missing = sorted(set(live) - set(saved))
    extra = sorted(set(saved) - set(live))
    if missing:
        problems.append(f"the model has variables the checkpoint lacks: {missing}")
    if extra:
        problems.append(f"the checkpoint has variables the model lacks: {extra}")
    for name in sorted(set(live) & set(saved)):
        if live[name] != saved[name]:
            problems.append(f"{name}: checkpoint {_fmt(saved[name])}, model {_fmt(live[name])}")
    if problems:
        raise CheckpointError(f"{where}: the checkpoint does not match the model's parameter set: "
                              + "; ".join(problems))


def _fmt(d: dict) -> str:
    if "kind" in d:
        return d["kind"]
    return f"{np.dtype(d['dtype']).name}{tuple(d['shape'])}"


def restore(values: Mapping[str, Any], variables: Mapping[str, Any]) -> None:
    """Set every variable from a snapshot (copies, so the snapshot stays usable)."""
    for name, var in variables.items():
        v = values[name]
        if isinstance(v, np.ndarray):
            var.set_value(np.array(v, copy=True, order="C"), borrow=True)
        elif v["kind"] == "generator":
            bitgen = getattr(np.random, v["bit_generator"])()
            bitgen.state = _from_jsonable(v["state"])
            var.set_value(np.random.Generator(bitgen), borrow=True)
        else:
            rs = np.random.RandomState()
            rs.set_state(_from_jsonable(v["state"]))
            var.set_value(rs, borrow=True)


# ----- writing ---------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint(target: Path, values: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Publish ``values`` (from :func:`snapshot`) and ``meta`` as the checkpoint directory ``target``.

    Built in a hidden sibling, every file fsynced, then renamed over ``target`` (an existing one is
    replaced only after the new one is complete). An OSError (disk full, EFBIG, read-only, EIO) becomes a
    CheckpointError naming ``target`` and the checkpoint that remains; the half-built directory is removed.
    """
    target = Path(target)
    if os.path.lexists(target) and not is_symtrain_checkpoint(target):
        raise CheckpointError(f"{target}: exists and is not a symtrain checkpoint; symtrain never replaces "
                              "what it did not write: move it away")
    tmp = partial_name(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        arrays, table = {}, []
        for name, v in values.items():
            if isinstance(v, np.ndarray):
                key = f"a{len(arrays)}"  # npz member names stay simple; the real names live in the table
                arrays[key] = v
                table.append({"name": name, "key": key, "dtype": v.dtype.str, "shape": list(v.shape)})
            else:
                table.append({"name": name, **v})
        with open(tmp / ARRAYS, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        full = {"format": FORMAT, "version": VERSION, "created": time.time(), **meta, "variables": table,
                "arrays_sha256": _sha256(tmp / ARRAYS)}
        with open(tmp / META, "w") as f:
            json.dump(full, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        publish_dir(tmp, target, overwrite=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{target}: writing the checkpoint failed ({exc.strerror or exc}); nothing was "
                              f"published, {_remaining(target)}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _remaining(target: Path) -> str:
    """Which checkpoint a failed write of ``target`` leaves as the one to resume from (for the message)."""
    if target.is_dir():
        return f"the previous {target.name} remains"
    try:
        previous = list_checkpoints(target.parent)
    except OSError:
        previous = []
    if previous:
        return f"the previous checkpoint {previous[-1]} remains"
    return "and there is no earlier checkpoint in this run directory"


# ----- reading ---------------------------------------------------------------------------------------

def _read_meta(path: Path) -> dict:
    """checkpoint.json of checkpoint directory ``path``: a regular file inside it, valid JSON, symtrain's."""
    try:
        data = read_regular(path / META, path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {META} (not a checkpoint, or a half-written one)") from None
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}/{META}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}/{META}: not a symtrain checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r} is not supported "
                              f"(this symtrain reads version {VERSION})")
    return meta


def is_symtrain_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a real directory whose checkpoint.json says symtrain wrote it (not necessarily
    intact): the only directories symtrain deletes or replaces under a run's ``checkpoints/``."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        _read_meta(path)
    except CheckpointError as exc:
        return "format version" in str(exc)
    return True


def _check_arrays_file(path: Path) -> None:
    try:
        check_regular(path / ARRAYS, path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {ARRAYS} (a half-written checkpoint)") from None
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def _check_generator(path: Path, entry: dict) -> None:
    """Rebuild a generator entry once, so a tampered state fails here and not in the middle of restore."""
    try:
        restore({entry["name"]: entry}, {entry["name"]: _Sink()})
    except Exception as exc:
        raise CheckpointError(f"{path}/{META}: variable {entry['name']!r}: its random-generator state is "
                              f"invalid ({type(exc).__name__}: {exc})") from None


class _Sink:
    def set_value(self, value: Any, borrow: bool = False) -> None:
        pass


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load and verify one checkpoint directory; CheckpointError saying what is wrong with it.

    checkpoint.json is validated whole against its schema and bounds first (``checkpoint_schema``); only
    regular files inside the checkpoint directory are read (a FIFO or an escaping symlink is refused).
    """
    path = Path(path)
    meta = _read_meta(path)
    validate_meta(meta, f"{path}/{META}")
    _check_arrays_file(path)
    declared = sum(math.prod(e["shape"]) * np.dtype(e["dtype"]).itemsize
                   for e in meta["variables"] if "key" in e)
    size = (path / ARRAYS).stat().st_size
    if declared > size:  # arrays.npz is uncompressed: the table cannot promise more than the file holds
        raise CheckpointError(f"{path}/{META}: the variable table declares {declared} bytes of arrays, "
                              f"{ARRAYS} holds {size}; refusing to allocate them")
    try:
        digest = _sha256(path / ARRAYS)
    except OSError as exc:
        raise CheckpointError(f"{path}/{ARRAYS}: unreadable ({exc})") from exc
    if digest != meta["arrays_sha256"]:
        raise CheckpointError(f"{path}/{ARRAYS}: checksum mismatch (the file is corrupt or truncated)")
    arrays: dict[str, Any] = {}
    try:
        with np.load(path / ARRAYS, allow_pickle=False) as npz:
            for entry in meta["variables"]:
                if "key" in entry:
                    if entry["key"] not in npz.files:
                        raise CheckpointError(f"{path}: array {entry['name']!r} ({entry['key']}) is not in "
                                              f"{ARRAYS}")
                    arr = npz[entry["key"]]
                    if arr.dtype.str != np.dtype(entry["dtype"]).str or list(arr.shape) != entry["shape"]:
                        raise CheckpointError(f"{path}: array {entry['name']!r} does not match its table "
                                              "entry")
                    arrays[entry["name"]] = arr
                else:
                    _check_generator(path, entry)
                    arrays[entry["name"]] = {k: v for k, v in entry.items() if k != "name"}
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile/numpy errors on a damaged file
        raise CheckpointError(f"{path}/{ARRAYS}: unreadable ({type(exc).__name__}: {exc})") from exc
    return Checkpoint(path=path, meta=meta, arrays=arrays)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint directories under ``directory``, oldest first (by cursor), ``best`` excluded."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        m = NAME_RE.match(entry.name)
        if m and entry.is_dir() and not entry.is_symlink():
            found.append(((int(m[1]), int(m[2])), entry))
    return [p for _, p in sorted(found)]


def load_latest(directory: str | Path) -> Checkpoint | None:
    """The newest checkpoint that reads back intact; a damaged newer one is skipped with a warning.

    None when there is no checkpoint; CheckpointError when there are some but none is readable.
    """
    candidates = list_checkpoints(directory)
    problems = []
    for path in reversed(candidates):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as exc:
            log.warning("skipping damaged checkpoint: %s; falling back to the previous one", exc)
            problems.append(str(exc))
            continue
        return ckpt
    if problems:
        raise CheckpointError(f"{directory}: no usable checkpoint; " + "; ".join(problems))
    return None


def prune(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (``best`` is never touched; a directory that is not
    a symtrain checkpoint is never deleted); returns what was removed."""
    removed = []
    for path in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        if not is_symtrain_checkpoint(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def clean_leftovers(directory: str | Path) -> None:
    """Remove half-built checkpoint directories left by a killed process."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    names = {checkpoint_name(0, 0), BEST} | {p.name for p in list_checkpoints(directory)}
    names |= {t for e in directory.iterdir() if (t := leftover_target(e.name)) is not None}
    for name in names:
        remove_stale_leftovers(directory / name)


def check_keep(keep: Any) -> int:
    """``keep`` (how many checkpoints to keep) as an int >= 1, else ConfigError."""
    return check_int("keep", keep, 1, expected="an integer >= 1 (how many checkpoints to keep)")
