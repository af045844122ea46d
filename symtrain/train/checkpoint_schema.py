"""The schema and bounds of ``checkpoint.json``: every field is checked before any value is used.

A tampered or damaged document (a cursor past the epoch's end, ``epoch: 10**30``, ``global_step: NaN``,
a string where a number belongs, a list where a dict belongs, a variable entry without ``kind``, ...)
raises one CheckpointError naming the file and the field, so ``load_latest`` falls back to the previous
checkpoint instead of resuming wrongly or failing with a raw KeyError/TypeError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from symtrain.errors import CheckpointError
from symtrain.validate import is_int

MAX_COUNT = 2**53  # epochs, steps, rows: beyond this a float loses integers and nothing real gets there
MAX_ENTRIES = 1 << 20  # list lengths (history entries, variables) and total array elements bound
MAX_ELEMENTS = 1 << 40
MAX_SECONDS = 1e10  # elapsed training time: three centuries
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class _Doc:
    """Typed accessors that raise CheckpointError("FILE: field 'a.b' ...")."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: field {field!r} {problem}")

    def get(self, d: Mapping[str, Any], key: str, prefix: str, required: bool = True) -> Any:
        if key not in d:
            if required:
                raise self.fail(prefix + key, "is missing")
            return None
        return d[key]

    def dict(self, d: Mapping[str, Any], key: str, prefix: str = "", required: bool = True) -> dict | None:
        v = self.get(d, key, prefix, required)
        if v is None and not required:
            return None
        if not isinstance(v, dict):
            raise self.fail(prefix + key, f"must be an object, got {_show(v)}")
        return v

    def list(self, d: Mapping[str, Any], key: str, prefix: str = "", required: bool = True) -> list | None:
        v = self.get(d, key, prefix, required)
        if v is None and not required:
            return None
        if not isinstance(v, list):
            raise self.fail(prefix + key, f"must be a list, got {_show(v)}")
        if len(v) > MAX_ENTRIES:
            raise self.fail(prefix + key, f"has {len(v)} entries, more than {MAX_ENTRIES}")
        return v

    def int(
        self,
        d: Mapping[str, Any],
        key: str,
        prefix: str = "",
        lo: int = 0,
        hi: int = MAX_COUNT,
        required: bool = True,
        none: bool = False,
    ) -> int | None:
        v = self.get(d, key, prefix, required)
        if v is None and (none or not required):
            return None
        if not is_int(v) or not lo <= v <= hi:
            raise self.fail(prefix + key, f"must be an integer in {lo}..{hi}, got {_show(v)}")
        return v

    def num(
        self,
        d: Mapping[str, Any],
        key: str,
        prefix: str = "",
        required: bool = True,
        finite: bool = True,
        none: bool = False,
    ) -> float | None:
        v = self.get(d, key, prefix, required)
        if v is None and (none or not required):
            return None
        ok = isinstance(v, int | float) and not isinstance(v, bool) and (not finite or math.isfinite(v))
        if not ok:
            raise self.fail(prefix + key, f"must be a {'finite ' if finite else ''}number, got {_show(v)}")
        return v

    def str(
        self,
        d: Mapping[str, Any],
        key: str,
        prefix: str = "",
        required: bool = True,
        choices: tuple[str, ...] | None = None,
    ) -> str | None:
        v = self.get(d, key, prefix, required)
        if v is None and not required:
            return None
        if not isinstance(v, str) or (choices is not None and v not in choices):
            want = f"one of {list(choices)}" if choices else "a string"
            raise self.fail(prefix + key, f"must be {want}, got {_show(v)}")
        return v

    def metrics(self, d: Mapping[str, Any], key: str, prefix: str = "", required: bool = True) -> None:
        """A dict of metric name -> number (NaN/inf allowed: a diverged metric is still a metric)."""
        m = self.dict(d, key, prefix, required)
        for k in m or {}:
            self.num(m, k, f"{prefix}{key}.", finite=False)


def _show(v: Any) -> str:
    text = repr(v)
    return (text if len(text) <= 60 else text[:57] + "...") + f" ({type(v).__name__})"


def validate_meta(meta: Any, where: str) -> None:
    """CheckpointError naming ``where`` and the first field out of schema or bounds; None when all is well."""
    d = _Doc(where)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: must hold a JSON object, got {_show(meta)}")
    d.num(meta, "created", required=False)
    d.str(meta, "reason", required=False)
    epochs = d.int(meta, "epochs", lo=1)
    d.int(meta, "accumulate", lo=1, hi=1 << 30, required=False)
    _cursor(d, meta, epochs)
    _stream(d, meta)
    _variables(d, meta)
    sha = d.str(meta, "arrays_sha256")
    if not _SHA.match(sha):
        raise d.fail("arrays_sha256", f"must be 64 hex digits, got {_show(sha)}")
    es = d.dict(meta, "epoch_state", required=False)
    if es is not None:
        d.metrics(es, "sums", "epoch_state.", required=False)
        d.int(es, "count", "epoch_state.", required=False)
        d.metrics(es, "validation", "epoch_state.", required=False)
        d.int(es, "last_validated", "epoch_state.", lo=-1, required=False)
    _history(d, meta)
    _callbacks(d, meta)


def _cursor(d: _Doc, meta: dict, epochs: int) -> None:
    c = d.dict(meta, "cursor")
    spe = d.int(c, "steps_per_epoch", "cursor.", lo=1)
    epoch = d.int(c, "epoch", "cursor.", hi=epochs)
    step = d.int(c, "step_in_epoch", "cursor.", hi=spe)
    g = d.int(c, "global_step", "cursor.")
    if g != epoch * spe + step:
        raise d.fail(
            "cursor.global_step",
            f"is {g}, but epoch {epoch} x {spe} steps per epoch + step {step} = {epoch * spe + step}",
        )
    d.int(c, "batch_size", "cursor.", lo=1, required=False)
    d.int(c, "chunk_rows", "cursor.", lo=1, required=False)
    d.int(c, "seed", "cursor.", required=False, none=True)


def _stream(d: _Doc, meta: dict) -> None:
    s = d.dict(meta, "stream")
    plan = d.dict(s, "plan", "stream.")
    for key, v in plan.items():  # the plan is compared whole with the live stream's; only its types matter
        plain = v is None or isinstance(v, bool | int | str | list | dict)
        if not (plain or isinstance(v, float) and math.isfinite(v)):
            raise d.fail(f"stream.plan.{key}", f"must be a JSON value (not NaN or infinite), got {_show(v)}")
    d.str(s, "fingerprint", "stream.")
    fields = d.list(s, "fields", "stream.")
    if not all(isinstance(f, str) for f in fields):
        raise d.fail("stream.fields", f"must be a list of strings, got {_show(fields)}")
    d.int(s, "rows", "stream.")


def _variables(d: _Doc, meta: dict) -> None:
    table = d.list(meta, "variables")
    names, keys, elements = set(), set(), 0
    for i, e in enumerate(table):
        p = f"variables[{i}]."
        if not isinstance(e, dict):
            raise d.fail(f"variables[{i}]", f"must be an object, got {_show(e)}")
        name = d.str(e, "name", p)
        if name in names:
            raise d.fail(p + "name", f"repeats the variable {name!r}")
        names.add(name)
        if "key" in e:
            key = d.str(e, "key", p)
            if key in keys:
                raise d.fail(p + "key", f"repeats the array {key!r}")
            keys.add(key)
            dtype = d.str(e, "dtype", p)
            try:
                dt = np.dtype(dtype)
            except TypeError:
                raise d.fail(p + "dtype", f"is not a NumPy dtype: {_show(dtype)}") from None
            if dt.hasobject or dt.kind not in "biufc":
                raise d.fail(p + "dtype", f"must be a numeric dtype, got {dtype!r}")
            shape = d.list(e, "shape", p)
            if len(shape) > 32 or not all(
                is_int(n) and 0 <= n <= MAX_COUNT for n in shape
            ):
                raise d.fail(
                    p + "shape", f"must be a list of at most 32 non-negative integers, got {_show(shape)}"
                )
            elements += math.prod(shape)
            if elements > MAX_ELEMENTS:
                raise d.fail(p + "shape", f"makes the arrays hold more than {MAX_ELEMENTS} elements")
        else:
            kind = d.str(e, "kind", p, choices=("generator", "randomstate"))
            d.dict(e, "state", p)
            if kind == "generator":
                d.str(e, "bit_generator", p, choices=BIT_GENERATORS)


def _history(d: _Doc, meta: dict) -> None:
    h = d.dict(meta, "history", required=False)
    if h is None:
        return
    p = "history."
    for key in ("epochs", "validations", "skipped_steps"):
        entries = d.list(h, key, p, required=False) or []
        for i, rec in enumerate(entries):
            if not isinstance(rec, dict):
                raise d.fail(f"{p}{key}[{i}]", f"must be an object, got {_show(rec)}")
        if key != "skipped_steps":
            total = d.int(h, f"{key}_total", p, required=False)
            if total is not None and total < len(entries):
                raise d.fail(f"{p}{key}_total", f"is {total}, fewer than the {len(entries)} entries stored")
    best = d.dict(h, "best", p, required=False) if h.get("best") is not None else None
    if best is not None:
        d.num(best, "score", p + "best.", finite=False)
        d.int(best, "epoch", p + "best.")
        d.int(best, "step", p + "best.")
        d.metrics(best, "metrics", p + "best.")
    d.str(h, "stop_reason", p, required=False)
    d.str(h, "message", p, required=False)
    d.int(h, "global_step", p, required=False)
    resumed = d.list(h, "resumed_from", p, required=False) or []
    if not all(isinstance(r, str) for r in resumed):
        raise d.fail(p + "resumed_from", "must be a list of strings")


def _callbacks(d: _Doc, meta: dict) -> None:
    cbs = d.dict(meta, "callbacks", required=False)
    for key in ("metrics_log", "early_stopping"):  # a user callback's state is its own (any JSON value)
        if key in (cbs or {}):
            d.dict(cbs, key, "callbacks.")
    ml = (cbs or {}).get("metrics_log")
    if ml is not None:
        p = "callbacks.metrics_log."
        d.int(ml, "lines", p)
        if not 0 <= d.num(ml, "elapsed", p) <= MAX_SECONDS:
            raise d.fail(p + "elapsed", f"must be between 0 and {MAX_SECONDS:g} seconds, got "
                         f"{_show(ml['elapsed'])}")
        d.metrics(ml, "sums", p, required=False)
        d.int(ml, "count", p, required=False)
    es = (cbs or {}).get("early_stopping")
    if es is not None:
        p = "callbacks.early_stopping."
        d.int(es, "patience", p, none=True)
        d.num(es, "best", p, none=True, finite=False)
        d.int(es, "best_step", p, lo=-1, none=True)
        d.int(es, "bad_validations", p)
        d.int(es, "stopped_at", p, lo=-1, none=True)
