"""The metrics log of a run directory: ``metrics.jsonl`` (one JSON object a line) and ``metrics.csv``.

Records have a ``kind``: "train" (training metrics averaged over the last ``every`` steps), "epoch"
(means over the epoch plus the epoch's validation), "valid" (one validation pass). Every record carries
``epoch``, ``step`` (global steps done) and ``time`` (seconds since the run began, summed across
resumes). The number of lines is checkpointed, so a resumed run first cuts the log back to the
checkpoint and never shows a step twice.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from symtrain.errors import ConfigError, RunDirError
from symtrain.train.callbacks import Callback
from symtrain.train.means import EpochMean
from symtrain.train.rundir import CSV, JSONL, check_regular
from symtrain.validate import check_int

if TYPE_CHECKING:
    from symtrain.train.contracts import TrainerLike
    from symtrain.train.history import History

__all__ = ["CSV", "JSONL", "MetricsLog", "csv_columns", "history_records", "read_metrics", "write_csv"]
FIRST = ("kind", "epoch", "step", "time")

log = logging.getLogger(__name__)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / JSONL
    check_regular(path, run_dir)  # a FIFO would hang, a symlink could point anywhere
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except (ValueError, RecursionError):
                continue
    return out


def csv_columns(records: list[dict]) -> list[str]:
    """The CSV header for ``records``: kind, epoch, step, time, then every metric name sorted."""
    return [*FIRST, *sorted({k for r in records for k in r} - set(FIRST))]


def write_csv(records: list[dict], path: str | Path) -> list[str]:
    """All records as one CSV table (columns: :func:`csv_columns`); returns the columns."""
    columns = csv_columns(records)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        for r in records:
            w.writerow(r)
    return columns


def _unclean(v: Any) -> Any:
    return float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v


def history_records(run_dir: str | Path, lines: int) -> dict[str, list[dict]] | None:
    """The "epoch" and "valid" records among the first ``lines`` lines of the log, in History form
    (``{"epochs": [...], "validations": [...]}``, without kind/time); None when the log is missing."""
    path = Path(run_dir) / JSONL
    out: dict[str, list[dict]] = {"epochs": [], "validations": []}
    where = {"epoch": "epochs", "valid": "validations"}
    try:
        check_regular(path, run_dir)
        with open(path) as f:
            for _, line in zip(range(lines), f):
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                key = where.get(rec.get("kind")) if isinstance(rec, dict) else None
                if key is not None:
                    entry = {k: _unclean(v) for k, v in rec.items() if k not in ("kind", "time")}
                    if not _valid_record(entry):
                        log.warning("%s: a record is not what symtrain writes (%.80s); the log is not used "
                                    "to rebuild the history", path, line.strip())
                        return None
                    out[key].append(entry)
    except (OSError, ConfigError):
        return None
    return out


def _valid_record(rec: Mapping[str, Any]) -> bool:
    """An "epoch"/"valid" record as symtrain writes it: integer epoch and step, every other value a number."""
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**53

    return count(rec.get("epoch")) and count(rec.get("step")) and all(
        isinstance(v, int | float) and not isinstance(v, bool)
        for k, v in rec.items() if k not in ("epoch", "step"))


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep the log strictly valid
    return v


class MetricsLog(Callback):
    """Writes the metrics log of ``run_dir`` (see the module doc); ``every``: steps per "train" record."""

    state_key = "metrics_log"

    def __init__(self, run_dir: str | Path, every: int = 50):
        self.every = check_int("log_every", every, 1)
        self.run_dir = Path(run_dir)
        self.lines = 0
        self.elapsed = 0.0
        self._t0 = time.perf_counter()
        self._train = EpochMean()  # the step metrics since the last "train" record
        self._file = None
        self._csv_columns: list[str] | None = None  # header of metrics.csv as written; None: rewrite it
        self._csv_pending: list[dict] = []  # records in metrics.jsonl not yet in metrics.csv

    def _failed(self, path: Path, exc: OSError) -> RunDirError:
        """One clear error for a failed log write (disk full, read-only): training stops, checkpoints stay."""
        return RunDirError(f"{path}: writing the metrics log failed ({exc.strerror or exc}); training "
                           "stopped here, the checkpoints already written remain: free space or fix the "
                           "directory, then resume")

    def _open(self) -> None:
        if self._file is None:
            try:
                self._open_log()
            except OSError as exc:
                raise self._failed(self.run_dir / JSONL, exc) from None

    def _open_log(self) -> None:
        if self._file is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / JSONL
            if path.exists():
                check_regular(path, self.run_dir)
            if self.lines and not path.is_file():
                log.warning("%s is missing; starting a new metrics log", path)
                self.lines = 0
            self._csv_columns, self._csv_pending = None, []  # the CSV is rebuilt from the log once
            if self.lines == 0:
                self._file = open(path, "w")
            else:  # resumed: keep exactly the lines the checkpoint saw
                with open(path, "r+") as f:
                    kept: list[str] = []
                    while len(kept) < self.lines:  # stops at the end of the file whatever the count says
                        line = f.readline()
                        if not line:
                            break
                        kept.append(line)
                    if any(not line.endswith("\n") for line in kept):
                        kept = [line for line in kept if line.endswith("\n")]
                        self.lines = len(kept)
                    f.seek(0)
                    f.write("".join(kept))
                    f.truncate()
                self._file = open(path, "a")

    def now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0)

    def write(self, kind: str, epoch: int, step: int, metrics: Mapping[str, Any]) -> None:
        self._open()
        rec = {"kind": kind, "epoch": epoch, "step": step, "time": round(self.now(), 3),
               **{k: _clean(v) for k, v in metrics.items()}}
        try:
            self._file.write(json.dumps(rec) + "\n")
            self._file.flush()
        except OSError as exc:
            raise self._failed(self.run_dir / JSONL, exc) from None
        self.lines += 1
        self._csv_pending.append(rec)

    def on_fit_begin(self, trainer: TrainerLike) -> None:
        self._t0 = time.perf_counter()
        self._open()

    def on_step_end(self, trainer: TrainerLike, step: int, metrics: Mapping[str, float]) -> None:
        self._train.add(metrics)
        if trainer.global_step % self.every == 0:
            self._flush_train(trainer)

    def _flush_train(self, trainer: TrainerLike) -> None:
        if self._train.rows:
            self.write("train", trainer.epoch + 1, trainer.global_step, self._train.result())
            self._train = EpochMean()

    def on_validation_end(self, trainer: TrainerLike, metrics: Mapping[str, float]) -> None:
        self.write("valid", trainer.epoch + 1, trainer.global_step, metrics)

    def on_epoch_end(self, trainer: TrainerLike, epoch: int, metrics: Mapping[str, float]) -> None:
        self._flush_train(trainer)
        self.write("epoch", epoch + 1, trainer.global_step, metrics)
        self.write_csv()

    def write_csv(self) -> None:
        """Bring metrics.csv up to date: append the new rows (O(rows added)); rewrite the whole table from
        metrics.jsonl only when a record brings a new column, the file is gone, or after a resume."""
        try:
            self._write_csv()
        except OSError as exc:
            raise self._failed(self.run_dir / CSV, exc) from None

    def _write_csv(self) -> None:
        if self._file is None:
            return
        path = self.run_dir / CSV
        cols = self._csv_columns
        if cols is None or not path.is_file() or any(k not in cols for r in self._csv_pending for k in r):
            self._csv_columns = write_csv(read_metrics(self.run_dir), path)
        elif self._csv_pending:
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=cols, restval="")
                for r in self._csv_pending:
                    w.writerow(r)
        self._csv_pending = []

    def on_fit_end(self, trainer: TrainerLike, history: History) -> None:
        if self._file is not None:
            self.write_csv()
            f, self._file = self._file, None
            try:
                f.close()
            except OSError as exc:
                raise self._failed(self.run_dir / JSONL, exc) from None

    def state_dict(self) -> dict:
        return {"lines": self.lines, "elapsed": self.now(), "sums": dict(self._train.sums),
                "count": self._train.rows}

    def load_state_dict(self, state: dict) -> None:
        self.lines = int(state["lines"])
        self.elapsed = float(state["elapsed"])
        self._train = EpochMean(state.get("sums", {}), int(state.get("count", 0)))
