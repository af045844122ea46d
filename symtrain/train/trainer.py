"""Trainer: the chunked epoch loop (epochs -> chunks -> steps) behind ``fit``, one small method per level.

``run`` loops ``run_epoch``; ``run_epoch`` iterates the stream's chunks through ``run_chunk``, which calls
``run_step`` per minibatch index; ``run_step`` executes the step through ``compute_step`` (the one place a
step runs) and handles a non-finite loss; ``validate`` runs the validation pass and tracks the best;
``end_epoch`` flushes, validates, records and advances the cursor. Other loops (data-parallel training)
subclass it and override ``compute_step``, ``agree_stop`` and ``is_writer``.

The row order of every epoch is a pure function of (seed, epoch), so the resume state is a cursor
(epoch, step in epoch) plus every shared variable of the step; resuming restarts the epoch iterator at
that step and the final parameters equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.errors import CheckpointError, ConfigError, NonFiniteLossError
from symtrain.train import checkpoint as ckpt
from symtrain.train.callbacks import Callback, CallbackList
from symtrain.train.checkpointer import Checkpointer
from symtrain.train.contracts import (
    AccumulatingStep,
    ChunkLike,
    EvaluatorLike,
    ScheduledStep,
    StepLike,
    StreamLike,
)
from symtrain.train.early_stopping import better
from symtrain.train.history import History
from symtrain.train.means import EpochMean
from symtrain.train.metrics import MetricsLog, history_records
from symtrain.train.rundir import CHECKPOINTS, JSONL
from symtrain.train.signals import GracefulInterrupt

log = logging.getLogger("symtrain.fit")

HISTORY_TAIL = 20  # epochs/validations a checkpoint embeds; older ones are read back from metrics.jsonl
NONFINITE = ("raise", "skip")

Validation = Callable[[], Mapping[str, float]]


def validation_fn(validation: Any) -> Validation | None:
    """An Evaluator's ``run`` (EvaluatorLike), or any callable returning a dict of metrics, or None."""
    if validation is None:
        return None
    if isinstance(validation, EvaluatorLike) and callable(validation.run):
        return validation.run
    if callable(validation):
        return validation
    raise ConfigError(f"validation must be an Evaluator (st.compile_eval over a validation stream) or a "
                      f"callable returning a dict of metrics, got {type(validation).__name__}")


class Trainer:
    """The running state callbacks see: the cursor, the history, the best so far, and ``request_stop``.

    Cursor: ``epoch`` (0-based, the epoch being trained), ``step_in_epoch`` (steps done in it),
    ``global_step`` (steps done in the run). ``cursor()`` is where a checkpoint taken now resumes.
    ``validate_every`` (epochs) and ``validate_every_steps`` say when ``validation`` runs; ``monitor`` /
    ``best_mode`` ("min" or "max") define the best; ``on_nonfinite`` is "raise" or "skip".
    """

    def __init__(self, step: StepLike, stream: StreamLike, epochs: int, callbacks: Sequence[Callback] = (), *,
                 run_dir: Path | None = None, keep: int = 3, loss_key: str = "loss", monitor: str = "loss",
                 best_mode: str = "min", validation: Validation | None = None,
                 validate_every: int | None = 1, validate_every_steps: int | None = None,
                 on_nonfinite: str = "raise", handle_signals: bool = True, restore_best: bool = False):
        self.step = step
        self.stream = stream
        self.epochs = epochs
        self.steps_per_epoch = int(stream.steps_per_epoch)
        self.callbacks = callbacks if isinstance(callbacks, CallbackList) else CallbackList(list(callbacks))
        self.run_dir = run_dir
        self.keep = keep
        self.loss_key = loss_key
        self.monitor = monitor
        self.best_mode = best_mode
        self.validation = validation
        self.validate_every = validate_every
        self.validate_every_steps = validate_every_steps
        self.skip_nonfinite = on_nonfinite == "skip"
        self.handle_signals = handle_signals
        self.keep_best_in_memory = restore_best
        self.accumulate = int(step.accumulate) if isinstance(step, AccumulatingStep) else 1
        self._scheduled = isinstance(step, ScheduledStep)  # checked once: the protocol check is not free
        self.variables = step.state_variables()
        self.history = History()
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_finished = False
        self.epoch_mean = EpochMean()
        self.epoch_validation: dict[str, float] = {}
        self.improved = False
        self.last_validated = -1  # global step of the last validation (none yet)
        self.best_values: dict[str, Any] | None = None
        self.stop_reason = ""
        self.resumed = False
        self.last_checkpoint: Path | None = None
        self.interrupt = GracefulInterrupt(False)
        self._epoch_clock = (0.0, 0.0)  # (perf_counter, stream.wait_seconds) when the epoch began

    # ----- hooks a distributed trainer overrides -----------------------------------------------------
    @property
    def is_writer(self) -> bool:
        """True: this process writes checkpoints, the metrics log, progress and epoch logs (one per run)."""
        return True

    def compute_step(self, index: int) -> Mapping[str, float]:
        """Execute the step on minibatch ``index`` of the installed chunk; the metrics every process sees."""
        return self.step(index)

    def agree_stop(self, flag: bool) -> bool:
        """Whether any process wants to stop now (identity on one process; collective under MPI)."""
        return flag

    # ----- for callbacks ---------------------------------------------------------------------------
    @property
    def best(self) -> dict | None:
        return self.history.best

    @property
    def mode(self) -> str:
        """Deprecated alias of ``best_mode`` ("min" or "max"), kept for callbacks written against it."""
        return self.best_mode

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / CHECKPOINTS

    def cursor(self) -> tuple[int, int]:
        """(epoch, step in epoch) at which a checkpoint taken now resumes."""
        return (self.epoch + 1, 0) if self.epoch_finished else (self.epoch, self.step_in_epoch)

    def request_stop(self, reason: str, message: str = "") -> None:
        """Stop after the current step's callbacks (``reason``: "early_stopping", "interrupted", ...)."""
        if not self.stop_reason:
            self.stop_reason = reason
            self.history.stop_reason = reason
            self.history.message = message
            if message:
                log.info("stopping: %s", message)

    # ----- the loop ----------------------------------------------------------------------------------
    def run(self) -> History:
        """Train until ``epochs`` epochs are done or a stop is requested; returns the History."""
        finished_ok = False
        with GracefulInterrupt(self.handle_signals) as self.interrupt:
            try:
                self.callbacks.call("on_fit_begin", self)
                if self.epoch >= self.epochs:
                    log.info("nothing to do: the run already has %d epochs (epochs=%d)", self.epoch,
                             self.epochs)
                while self.epoch < self.epochs and not self.stop_reason:
                    self.run_epoch(self.epoch)
                if not self.stop_reason:
                    self.stop_reason = self.history.stop_reason = "completed"
                finished_ok = True
            finally:
                self._close_callbacks(finished_ok)
        self._finish()
        return self.history

    def run_epoch(self, e: int) -> None:
        """Train the rest of epoch ``e`` chunk by chunk, then ``end_epoch(e)`` unless a stop was requested."""
        self._epoch_clock = (time.perf_counter(), self.stream.wait_seconds)
        self.callbacks.call("on_epoch_begin", self, e)
        if self.step_in_epoch < self.steps_per_epoch:
            chunks = self.stream.epoch(e, self.step_in_epoch)
            try:
                for chunk in chunks:
                    self.run_chunk(chunk)
                    if self.stop_reason:
                        break
            finally:
                chunks.close()
        if not self.stop_reason:
            self.end_epoch(e)

    def run_chunk(self, chunk: ChunkLike) -> None:
        """Run a step on every index of the installed ``chunk`` (stops early when a stop is requested)."""
        self.callbacks.call("on_chunk_begin", self, chunk)
        for i in chunk.indices:
            self.run_step(i, chunk)
            if self.stop_reason:
                return
        self.callbacks.call("on_chunk_end", self, chunk)

    def run_step(self, i: int, chunk: ChunkLike) -> None:
        """One step: schedules, ``compute_step(i)``, the non-finite check, the cursor, step validation."""
        if self._scheduled:
            self.step.advance_schedules(self.global_step, self.epoch)
        backup = ckpt.snapshot(self.variables) if self.skip_nonfinite else None
        metrics = self.compute_step(i)
        loss = metrics.get(self.loss_key) if isinstance(metrics, Mapping) else None
        if loss is None:
            raise ConfigError(f"loss_key={self.loss_key!r} is not among the step's outputs "
                              f"{sorted(metrics) if isinstance(metrics, Mapping) else metrics}")
        g = self.global_step
        if np.isfinite(loss):
            self.epoch_mean.add(metrics)
        else:
            self.nonfinite(loss, i, chunk, backup)
        self.global_step += 1
        self.step_in_epoch += 1
        self.history.global_step = self.global_step
        self.improved = False
        self._check_interrupt()
        every = self.validate_every_steps
        if every and self.global_step % every == 0 and not self.stop_reason:
            self.validate()
        self.callbacks.call("on_step_end", self, g, metrics)

    def nonfinite(self, loss: float, i: int, chunk: ChunkLike, backup: dict[str, Any] | None) -> None:
        """A non-finite loss: NonFiniteLossError naming the step, or (``skip``) undo the step, record it."""
        g, e = self.global_step, self.epoch
        where = (f"global step {g} (epoch {e + 1}, step {self.step_in_epoch} of {self.steps_per_epoch} "
                 f"in the epoch, batch {i} of chunk {chunk.number})")
        if backup is None:
            last = f"the last good checkpoint is {self.last_checkpoint}; " if self.last_checkpoint else ""
            raise NonFiniteLossError(f"{self.loss_key} is {loss} at {where}; {last}lower the learning rate, "
                                     "clip gradients, or pass on_nonfinite='skip' to skip such batches")
        ckpt.restore(backup, self.variables)
        self.history.skipped_steps.append({"epoch": e + 1, "step_in_epoch": self.step_in_epoch,
                                           "global_step": g})
        log.warning("skipped the batch of %s: %s is %s", where, self.loss_key, loss)

    def validate(self) -> dict[str, float] | None:
        """Run the validation pass (None without one), track the best, call ``on_validation_end``."""
        if self.validation is None:
            return None
        t0 = time.perf_counter()
        metrics = {k: float(v) for k, v in dict(self.validation()).items()}
        if self.monitor not in metrics:
            raise ConfigError(f"monitor={self.monitor!r} is not among the validation metrics "
                              f"{sorted(metrics)}")
        score = metrics[self.monitor]
        best = self.history.best
        self.improved = better(score, None if best is None else best["score"], self.best_mode)
        self.history.validations.append({"epoch": self.epoch + 1, "step": self.global_step, **metrics})
        if self.improved:
            self.history.best = {"score": score, "epoch": self.epoch + 1, "step": self.global_step,
                                 "metrics": metrics}
            if self.keep_best_in_memory:
                self.best_values = ckpt.snapshot(self.variables)
        self.epoch_validation = metrics
        self.last_validated = self.global_step
        log.debug("validation at step %d took %.2f s: %s", self.global_step, time.perf_counter() - t0,
                  metrics)
        self.callbacks.call("on_validation_end", self, metrics)
        return metrics

    def end_epoch(self, e: int) -> None:
        """Flush a partial accumulation, validate when due, record the epoch, advance the cursor."""
        flushed = bool(self.step.flush()) if isinstance(self.step, AccumulatingStep) else False
        self.improved = False
        every = self.validate_every
        due = bool(every and (e + 1) % every == 0) or e + 1 == self.epochs
        if due and self.validation is not None and (self.last_validated != self.global_step or flushed):
            self.validate()
        self._check_interrupt()
        means = self.epoch_mean.result()
        t0, w0 = self._epoch_clock
        seconds = time.perf_counter() - t0
        record = {"epoch": e + 1, "step": self.global_step, **means,
                  **{f"val_{k}": v for k, v in self.epoch_validation.items()},
                  "seconds": seconds, "wait_share": (self.stream.wait_seconds - w0) / max(seconds, 1e-9)}
        self.history.epochs.append(record)
        self.epoch_finished = True
        if self.is_writer:
            self._log_epoch(record)
        self.callbacks.call("on_epoch_end", self, e, record)
        self.epoch, self.step_in_epoch, self.epoch_finished = e + 1, 0, False
        self.epoch_mean, self.epoch_validation = EpochMean(), {}

    def _check_interrupt(self) -> None:
        """Request the "interrupted" stop when a signal arrived (on any process: ``agree_stop``)."""
        if self.agree_stop(self.interrupt.requested is not None):
            self.request_stop("interrupted", f"{self.interrupt.requested or 'a signal on another process'} "
                                             "received")

    def _close_callbacks(self, finished_ok: bool) -> None:
        """``on_fit_end`` for all; after an error only close what callbacks hold open (no final save)."""
        if finished_ok or self.stop_reason:
            self.callbacks.call("on_fit_end", self, self.history)
            return
        for cb in self.callbacks:
            if not isinstance(cb, Checkpointer):
                try:
                    cb.on_fit_end(self, self.history)
                except Exception:  # never mask the original error
                    log.debug("callback %r failed while closing", cb, exc_info=True)

    def _finish(self) -> None:
        """Say how to resume an interrupted run, or load the best validation state when asked to."""
        if self.stop_reason == "interrupted":
            where = (f"checkpoint {self.last_checkpoint}" if self.last_checkpoint
                     else "no checkpoint (no run_dir given)")
            log.warning("training interrupted at epoch %d, step %d of %d (global step %d); %s. Resume with "
                        "fit(..., run_dir=%r, resume=True) or `symtrain train ... --resume`.", self.epoch + 1,
                        self.step_in_epoch, self.steps_per_epoch, self.global_step, where,
                        str(self.run_dir) if self.run_dir else None)
        elif self.keep_best_in_memory and self.best_values is not None:
            ckpt.restore(self.best_values, self.variables)
            log.info("restored the best validation state (step %d, %s=%.6g)", self.history.best["step"],
                     self.monitor, self.history.best["score"])

    def _log_epoch(self, record: Mapping[str, Any]) -> None:
        shown = " ".join(f"{k}={v:.5g}" for k, v in record.items()
                         if k not in ("epoch", "step", "seconds", "wait_share") and isinstance(v, float)
                         and not k.startswith("val_rows"))
        best = self.history.best
        is_best = best is not None and best["step"] == self.global_step and best["epoch"] == self.epoch + 1
        mark = " (best)" if is_best else ""
        share = record["wait_share"]
        log.info("epoch %d/%d: %s%s [%.1f s, waiting for data %.0f%%]", record["epoch"], self.epochs,
                 shown, mark, record["seconds"], 100 * share if math.isfinite(share) else 0)

    # ----- checkpoints -----------------------------------------------------------------------------
    def meta(self, reason: str) -> dict:
        """The checkpoint's metadata: cursor, stream state, epoch state, history tail, callback states."""
        epoch, step_in_epoch = self.cursor()
        state = self.stream.state()
        plan = state.get("plan", {})
        return {
            "reason": reason,
            "cursor": {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": self.global_step,
                       "seed": plan.get("seed"), "batch_size": self.stream.batch_size,
                       "chunk_rows": self.stream.chunk_rows, "steps_per_epoch": self.steps_per_epoch},
            "stream": state,
            "accumulate": self.accumulate,
            "epochs": self.epochs,
            "epoch_state": {"sums": self.epoch_mean.sums, "count": self.epoch_mean.rows,
                            "validation": self.epoch_validation, "last_validated": self.last_validated},
            "history": self.history.to_checkpoint(HISTORY_TAIL),
            "callbacks": self.callbacks.state(),
        }

    def save_checkpoint(self, reason: str) -> Path | None:
        """Write a checkpoint now (``reason`` "best" goes to ``checkpoints/best``); None without a run dir
        or on a process that is not the writer."""
        if self.checkpoint_dir is None or not self.is_writer:
            return None
        t0 = time.perf_counter()
        name = ckpt.BEST if reason == "best" else ckpt.checkpoint_name(*self.cursor())
        values = ckpt.snapshot(self.variables)
        path = ckpt.write_checkpoint(self.checkpoint_dir / name, values, self.meta(reason))
        if reason != "best":
            self.last_checkpoint = path
            ckpt.prune(self.checkpoint_dir, self.keep)
        log.debug("checkpoint (%s) written to %s in %.3f s", reason, path, time.perf_counter() - t0)
        self.callbacks.call("on_checkpoint", self, path, reason)
        return path

    def resume(self) -> None:
        """Load the newest valid checkpoint of ``run_dir`` (and, for ``restore_best``, the best one)."""
        cdir = self.checkpoint_dir
        if cdir is None:
            raise ConfigError("resume=True needs run_dir= (the directory holding the checkpoints)")
        c = ckpt.load_latest(cdir)
        if c is None:
            log.info("resume: no checkpoint in %s; starting from the beginning", cdir)
            return
        self.restore_checkpoint(c)
        log.info("resumed from %s (epoch %d, step %d of %d, global step %d)", c.path, self.epoch + 1,
                 self.step_in_epoch, self.steps_per_epoch, self.global_step)
        if self.keep_best_in_memory and (cdir / ckpt.BEST).is_dir():
            try:
                best = ckpt.read_checkpoint(cdir / ckpt.BEST).arrays
                ckpt.check_variables(ckpt.describe(best), self.variables, cdir / ckpt.BEST)  # same shapes
                self.best_values = best
            except CheckpointError as exc:
                log.warning("best checkpoint unreadable, restore_best will use later bests only: %s", exc)

    def restore_checkpoint(self, c: ckpt.Checkpoint) -> None:
        """Check ``c`` against this run (CheckpointError on any mismatch) and load it."""
        meta = c.meta
        try:
            self.stream.check_state(meta.get("stream", {}))
        except CheckpointError as exc:
            raise CheckpointError(f"{c.path}: refusing to resume, {exc}") from None
        if meta.get("accumulate", 1) != self.accumulate:
            raise CheckpointError(f"{c.path}: the checkpoint accumulates {meta.get('accumulate')} "
                                  f"micro-batches per update, the step {self.accumulate}; compile the step "
                                  "with the same accumulate=")
        saved = {e["name"]: {"dtype": e["dtype"], "shape": e["shape"]} if "key" in e else {"kind": e["kind"]}
                 for e in meta["variables"]}
        ckpt.check_variables(saved, self.variables, c.path)
        cur = meta["cursor"]
        if cur["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(f"{c.path}: {cur['steps_per_epoch']} steps per epoch in the checkpoint, "
                                  f"{self.steps_per_epoch} now")
        ckpt.restore(c.arrays, self.variables)
        self.epoch, self.step_in_epoch = cur["epoch"], cur["step_in_epoch"]
        self.global_step = cur["global_step"]
        es = meta.get("epoch_state", {})
        self.epoch_mean = EpochMean(es.get("sums", {}), int(es.get("count", 0)))
        self.epoch_validation = dict(es.get("validation", {}))
        self.last_validated = int(es.get("last_validated", -1))
        self._restore_history(meta, c.path)
        self.callbacks.load_state(meta.get("callbacks", {}))
        self.resumed = True
        self.last_checkpoint = c.path

    def _restore_history(self, meta: Mapping[str, Any], where: Path) -> None:
        """The checkpoint's history tail, completed from metrics.jsonl when the log has the older entries."""
        lines = meta.get("callbacks", {}).get(MetricsLog.state_key, {}).get("lines", 0)
        logged = history_records(self.run_dir, lines) if self.run_dir is not None and lines else None
        self.history, incomplete = History.from_checkpoint(meta.get("history", {}), logged)
        if incomplete:
            log.warning("%s: the metrics log %s lacks the older entries of the history (%s); the history "
                        "continues from the last %d the checkpoint holds", where,
                        None if self.run_dir is None else self.run_dir / JSONL, ", ".join(incomplete),
                        HISTORY_TAIL)
        self.history.stop_reason, self.history.message = "", ""
        self.history.resumed_from.append(str(where))
