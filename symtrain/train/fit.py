"""``fit``: the chunked epoch scheduler (epochs -> chunks -> steps), with validation, best tracking, early
stopping, checkpoints, exact resume, signal handling and a non-finite-loss guard.

The row order of every epoch is a pure function of (seed, epoch), so the resume state is a cursor
(epoch, step in epoch) plus every shared variable of the step; resuming restarts the epoch iterator at
that step and the final parameters equal those of an uninterrupted run bit for bit. See
docs/tutorial.md, docs/callbacks.md and docs/checkpoints.md.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.errors import CheckpointError, ConfigError, DatasetError, NonFiniteLossError
from symtrain.train import checkpoint as ckpt
from symtrain.train.callbacks import Callback, CallbackList
from symtrain.train.checkpointer import Checkpointer
from symtrain.train.early_stopping import EarlyStopping, better, check_mode
from symtrain.train.history import History
from symtrain.train.metrics import CSV, JSONL, MetricsLog, history_records
from symtrain.train.progress import ProgressBar
from symtrain.train.signals import GracefulInterrupt
from symtrain.validate import check_path_arg, check_path_writable

log = logging.getLogger("symtrain.fit")

CHECKPOINTS = "checkpoints"
HISTORY_TAIL = 20  # epochs/validations a checkpoint embeds; older ones are read back from metrics.jsonl
NONFINITE = ("raise", "skip")


def _int(name: str, v: Any, minimum: int, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
        raise ConfigError(f"{name} must be {'None or ' if allow_none else ''}an integer >= {minimum}, got {v!r}")
    return int(v)


def _validate_fn(validation: Any) -> Callable[[], Mapping[str, float]] | None:
    """An Evaluator (``.run()``), or any callable returning a dict of metrics."""
    if validation is None:
        return None
    if hasattr(validation, "run") and callable(validation.run):
        return validation.run
    if callable(validation):
        return validation
    raise ConfigError(f"validation must be an Evaluator (st.compile_eval over a validation stream) or a callable "
                      f"returning a dict of metrics, got {type(validation).__name__}")


class Trainer:
    """The running state callbacks see: the cursor, the history, the best so far, and ``request_stop``.

    Cursor: ``epoch`` (0-based, the epoch being trained), ``step_in_epoch`` (steps done in it),
    ``global_step`` (steps done in the run). ``cursor()`` is where a checkpoint taken now resumes.
    """

    def __init__(self, step: Any, stream: Any, epochs: int, callbacks: CallbackList, run_dir: Path | None,
                 keep: int, loss_key: str, monitor: str, mode: str):
        self.step = step
        self.stream = stream
        self.epochs = epochs
        self.steps_per_epoch = int(stream.steps_per_epoch)
        self.callbacks = callbacks
        self.run_dir = run_dir
        self.keep = keep
        self.loss_key = loss_key
        self.monitor = monitor
        self.mode = mode
        self.variables = step.state_variables()
        self.history = History()
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_finished = False
        self.epoch_sums: dict[str, float] = {}
        self.epoch_count = 0
        self.epoch_validation: dict[str, float] = {}
        self.improved = False
        self.last_validated = -1  # global step of the last validation (none yet)
        self.best_values: dict[str, Any] | None = None
        self.keep_best_in_memory = False
        self.stop_reason = ""
        self.resumed = False
        self.last_checkpoint: Path | None = None

    # ----- for callbacks ---------------------------------------------------------------------------
    @property
    def best(self) -> dict | None:
        return self.history.best

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

    # ----- checkpoints -----------------------------------------------------------------------------
    def meta(self, reason: str) -> dict:
        epoch, step_in_epoch = self.cursor()
        state = self.stream.state()
        plan = state.get("plan", {})
        return {
            "reason": reason,
            "cursor": {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": self.global_step,
                       "seed": plan.get("seed"), "batch_size": self.stream.batch_size,
                       "chunk_rows": self.stream.chunk_rows, "steps_per_epoch": self.steps_per_epoch},
            "stream": state,
            "accumulate": int(getattr(self.step, "accumulate", 1)),
            "epochs": self.epochs,
            "epoch_state": {"sums": self.epoch_sums, "count": self.epoch_count,
                            "validation": self.epoch_validation, "last_validated": self.last_validated},
            "history": self.history.to_checkpoint(HISTORY_TAIL),
            "callbacks": self.callbacks.state(),
        }

    def save_checkpoint(self, reason: str) -> Path | None:
        """Write a checkpoint now (``reason`` "best" goes to ``checkpoints/best``); None without a run dir."""
        if self.checkpoint_dir is None:
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

    def restore_checkpoint(self, c: ckpt.Checkpoint) -> None:
        """Check ``c`` against this run (CheckpointError on any mismatch) and load it."""
        meta = c.meta
        _check_stream_state(meta.get("stream", {}), self.stream.state(), c.path)
        acc = int(getattr(self.step, "accumulate", 1))
        if meta.get("accumulate", 1) != acc:
            raise CheckpointError(f"{c.path}: the checkpoint accumulates {meta.get('accumulate')} micro-batches "
                                  f"per update, the step {acc}; compile the step with the same accumulate=")
        saved = {e["name"]: ({"dtype": e["dtype"], "shape": e["shape"]} if "key" in e else {"kind": e["kind"]})
                 for e in meta["variables"]}
        ckpt.check_variables(saved, self.variables, c.path)
        cur = meta["cursor"]
        if cur["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(f"{c.path}: {cur['steps_per_epoch']} steps per epoch in the checkpoint, "
                                  f"{self.steps_per_epoch} now")
        ckpt.restore(c.arrays, self.variables)
        self.epoch, self.step_in_epoch, self.global_step = cur["epoch"], cur["step_in_epoch"], cur["global_step"]
        es = meta.get("epoch_state", {})
        self.epoch_sums = dict(es.get("sums", {}))
        self.epoch_count = int(es.get("count", 0))
        self.epoch_validation = dict(es.get("validation", {}))
        self.last_validated = int(es.get("last_validated", -1))
        callbacks = meta.get("callbacks", {})
        lines = callbacks.get(MetricsLog.state_key, {}).get("lines", 0)
        logged = history_records(self.run_dir, lines) if self.run_dir is not None and lines else None
        self.history, incomplete = History.from_checkpoint(meta.get("history", {}), logged)
        if incomplete:
            log.warning("%s: the metrics log %s lacks the older entries of the history (%s); the history "
                        "continues from the last %d the checkpoint holds", c.path,
                        None if self.run_dir is None else self.run_dir / JSONL, ", ".join(incomplete),
                        HISTORY_TAIL)
        self.history.stop_reason, self.history.message = "", ""
        self.history.resumed_from.append(str(c.path))
        self.callbacks.load_state(callbacks)
        self.resumed = True
        self.last_checkpoint = c.path


def _check_stream_state(saved: Mapping[str, Any], live: Mapping[str, Any], where: Path) -> None:
    """CheckpointError naming each difference in dataset fingerprint, batch size, chunk size, plan."""
    problems = []
    if saved.get("fingerprint") != live.get("fingerprint"):
        problems.append(f"dataset fingerprint {saved.get('fingerprint')!r} != {live.get('fingerprint')!r} "
                        "(a different dataset, or its files changed)")
    sp, lp = saved.get("plan", {}), live.get("plan", {})
    labels = {"batch_size": "batch size", "chunk_rows": "chunk size (rows)"}
    for key in ("batch_size", "chunk_rows", *sorted(set(sp) | set(lp) - {"batch_size", "chunk_rows"})):
        if sp.get(key) != lp.get(key):
            problems.append(f"{labels.get(key, key)}: checkpoint {sp.get(key)!r}, now {lp.get(key)!r}")
    for key in ("fields", "rows"):
        if saved.get(key) != live.get(key):
            problems.append(f"{key}: checkpoint {saved.get(key)!r}, now {live.get(key)!r}")
    if problems:
        raise CheckpointError(f"{where}: refusing to resume, the checkpoint does not match this run: "
                              + "; ".join(problems))


def _check_run_dir(run_dir: Path) -> None:
    """ConfigError naming run_dir unless it is (or can be created as) a writable directory.

    A missing run_dir is diagnosed at its first missing component (parent not a directory, read-only,
    /proc, ...) so nothing is created or deleted before the error.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={str(run_dir)!r} is not a directory (a file of that name exists)")
    probe = run_dir / CHECKPOINTS
    if not run_dir.is_dir():  # the first component that does not exist yet must be creatable
        probe = run_dir.absolute()
        while probe.parent != probe and not probe.parent.exists():
            probe = probe.parent
    elif probe.exists():
        return
    try:
        check_path_writable(probe)
    except DatasetError as exc:
        raise ConfigError(f"run_dir={str(run_dir)!r} cannot be used: {exc}") from None


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    _check_run_dir(run_dir)
    cdir = run_dir / CHECKPOINTS
    if overwrite and not resume:
        shutil.rmtree(cdir, ignore_errors=True)
        for name in (JSONL, CSV):
            (run_dir / name).unlink(missing_ok=True)
    elif not resume and ckpt.list_checkpoints(cdir):
        raise ConfigError(f"run_dir={str(run_dir)!r} already holds checkpoints of a run: pass resume=True to "
                          "continue it, overwrite=True to start over, or choose another run_dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"run_dir={str(run_dir)!r} cannot be created ({exc.strerror or exc})") from None
    ckpt.clean_leftovers(cdir)


def fit(step: Any, stream: Any, epochs: int, *, validation: Any = None, validate_every: int | None = 1,
        validate_every_steps: int | None = None, monitor: str = "loss", mode: str = "min",
        early_stopping: EarlyStopping | None = None, run_dir: str | Path | None = None, resume: bool = False,
        overwrite: bool = False, checkpoint_every_steps: int | None = None,
        checkpoint_every_epochs: int | None = 1, checkpoint_best: bool = True, keep: int = 3,
        restore_best: bool = False, callbacks: Sequence[Callback] = (), progress: bool = True,
        log_every: int = 50, on_nonfinite: str = "raise", loss_key: str = "loss",
        handle_signals: bool = True) -> History:
    """Train ``step`` over ``stream`` until ``epochs`` epochs are done (counted from the run's start).

    ``validation``: an Evaluator (``st.compile_eval`` over a sequential validation stream) or a callable
    returning a dict of metrics; run after every ``validate_every``-th epoch and/or every
    ``validate_every_steps`` steps. ``monitor``/``mode``: the validation metric that defines "best".
    ``early_stopping``: an :class:`EarlyStopping`. ``run_dir``: where checkpoints and the metrics log go
    (None: neither). ``resume=True`` continues from the newest valid checkpoint of ``run_dir`` (or starts
    fresh when there is none). ``restore_best``: load the best validation state into the variables at the
    end. ``on_nonfinite``: "raise" (NonFiniteLossError) or "skip" (undo the step and go on; costs one copy of
    the state per step). Returns the :class:`History`.
    """
    epochs = _int("epochs", epochs, 1)
    validate_every = _int("validate_every", validate_every, 1, allow_none=True)
    validate_every_steps = _int("validate_every_steps", validate_every_steps, 1, allow_none=True)
    keep = ckpt.check_keep(keep)
    mode = check_mode(mode)
    if on_nonfinite not in NONFINITE:
        raise ConfigError(f"on_nonfinite must be one of {NONFINITE}, got {on_nonfinite!r}")
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise ConfigError(f"early_stopping must be an EarlyStopping, got {type(early_stopping).__name__}")
    if early_stopping is not None and validation is None:
        raise ConfigError("early_stopping needs validation= (it watches a validation metric)")
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks must be Callback instances, got {type(cb).__name__}")
    validate = _validate_fn(validation)
    for attr in ("state_variables", "__call__"):
        if not hasattr(step, attr):
            raise ConfigError(f"step must be a compiled Step (st.compile_step), got {type(step).__name__}")
    if resume and run_dir is None:
        raise ConfigError("resume=True needs run_dir= (the directory holding the checkpoints)")
    run_dir = None if run_dir is None else check_path_arg("run_dir", run_dir)
    if run_dir is not None:
        _prepare_run_dir(run_dir, resume, overwrite)

    builtins: list[Callback] = []
    if early_stopping is not None:
        builtins.append(early_stopping)
    if run_dir is not None:
        builtins.append(MetricsLog(run_dir, every=log_every))
    if progress:
        builtins.append(ProgressBar())
    if run_dir is not None:
        builtins.append(Checkpointer(checkpoint_every_steps, checkpoint_every_epochs, checkpoint_best))
    cbs = CallbackList([*callbacks, *builtins])
    trainer = Trainer(step, stream, epochs, cbs, run_dir, keep, loss_key, monitor, mode)
    trainer.keep_best_in_memory = restore_best

    if resume:
        c = ckpt.load_latest(run_dir / CHECKPOINTS)
        if c is None:
            log.info("resume: no checkpoint in %s; starting from the beginning", run_dir / CHECKPOINTS)
        else:
            trainer.restore_checkpoint(c)
            log.info("resumed from %s (epoch %d, step %d of %d, global step %d)", c.path, trainer.epoch + 1,
                     trainer.step_in_epoch, trainer.steps_per_epoch, trainer.global_step)
            if restore_best and (run_dir / CHECKPOINTS / ckpt.BEST).is_dir():
                try:
                    trainer.best_values = ckpt.read_checkpoint(run_dir / CHECKPOINTS / ckpt.BEST).arrays
                except CheckpointError as exc:
                    log.warning("best checkpoint unreadable, restore_best will use later bests only: %s", exc)
    return _run(trainer, validate, validate_every, validate_every_steps, on_nonfinite, handle_signals,
                restore_best)


def _run(t: Trainer, validate: Callable | None, every_epochs: int | None, every_steps: int | None,
         on_nonfinite: str, handle_signals: bool, restore_best: bool) -> History:
    cbs, step, stream, spe = t.callbacks, t.step, t.stream, t.steps_per_epoch
    finished_ok = False

    def run_validation() -> None:
        if validate is None:
            return
        t0 = time.perf_counter()
        metrics = {k: float(v) for k, v in dict(validate()).items()}
        if t.monitor not in metrics:
            raise ConfigError(f"monitor={t.monitor!r} is not among the validation metrics {sorted(metrics)}")
        score = metrics[t.monitor]
        best = t.history.best
        t.improved = better(score, None if best is None else best["score"], t.mode)
        rec = {"epoch": t.epoch, "step": t.global_step, **metrics}
        t.history.validations.append(rec)
        if t.improved:
            t.history.best = {"score": score, "epoch": t.epoch, "step": t.global_step, "metrics": metrics}
            if t.keep_best_in_memory:
                t.best_values = ckpt.snapshot(t.variables)
        t.epoch_validation = metrics
        t.last_validated = t.global_step
        log.debug("validation at step %d took %.2f s: %s", t.global_step, time.perf_counter() - t0, metrics)
        cbs.call("on_validation_end", t, metrics)

    skip = on_nonfinite == "skip"
    advance = getattr(step, "advance_schedules", None)
    if advance is None:
        def advance(g: int, e: int) -> None:
            for s in getattr(step, "schedules", ()):
                s.advance(g, e)

    with GracefulInterrupt(handle_signals) as interrupt:
        try:
            cbs.call("on_fit_begin", t)
            if t.epoch >= t.epochs:
                log.info("nothing to do: the run already has %d epochs (epochs=%d)", t.epoch, t.epochs)
            while t.epoch < t.epochs and not t.stop_reason:
                e = t.epoch
                t_epoch, w_epoch = time.perf_counter(), stream.wait_seconds
                cbs.call("on_epoch_begin", t, e)
                if t.step_in_epoch < spe:
                    chunks = stream.epoch(e, t.step_in_epoch)
                    try:
                        for chunk in chunks:
                            cbs.call("on_chunk_begin", t, chunk)
                            for i in chunk.indices:
                                advance(t.global_step, e)
                                backup = ckpt.snapshot(t.variables) if skip else None
                                metrics = step(i)
                                loss = metrics.get(t.loss_key) if isinstance(metrics, Mapping) else None
                                if loss is None:
                                    raise ConfigError(f"loss_key={t.loss_key!r} is not among the step's outputs "
                                                      f"{sorted(metrics) if isinstance(metrics, Mapping) else metrics}")
                                g = t.global_step
                                if not np.isfinite(loss):
                                    where = (f"global step {g} (epoch {e + 1}, step {t.step_in_epoch} of {spe} "
                                             f"in the epoch, batch {i} of chunk {chunk.number})")
                                    if not skip:
                                        raise NonFiniteLossError(
                                            f"{t.loss_key} is {loss} at {where}; "
                                            + (f"the last good checkpoint is {t.last_checkpoint}; "
                                               if t.last_checkpoint else "")
                                            + "lower the learning rate, clip gradients, or pass "
                                              "on_nonfinite='skip' to skip such batches")
                                    ckpt.restore(backup, t.variables)
                                    t.history.skipped_steps.append({"epoch": e, "step_in_epoch": t.step_in_epoch,
                                                                    "global_step": g})
                                    log.warning("skipped the batch of %s: %s is %s", where, t.loss_key, loss)
                                else:
                                    for k, v in metrics.items():
                                        t.epoch_sums[k] = t.epoch_sums.get(k, 0.0) + v
                                    t.epoch_count += 1
                                t.global_step += 1
                                t.step_in_epoch += 1
                                t.history.global_step = t.global_step
                                t.improved = False
                                if interrupt.requested:
                                    t.request_stop("interrupted", f"{interrupt.requested} received")
                                if every_steps and t.global_step % every_steps == 0 and not t.stop_reason:
                                    run_validation()
                                cbs.call("on_step_end", t, g, metrics)
                                if t.stop_reason:
                                    break
                            if t.stop_reason:
                                break
                            cbs.call("on_chunk_end", t, chunk)
                    finally:
                        chunks.close()
                if t.stop_reason:
                    break
                flushed = bool(step.flush()) if hasattr(step, "flush") else False
                t.improved = False
                if (every_epochs and (e + 1) % every_epochs == 0 or e + 1 == t.epochs) and (
                        validate is not None and (t.last_validated != t.global_step or flushed)):
                    run_validation()
                if interrupt.requested:
                    t.request_stop("interrupted", f"{interrupt.requested} received")
                means = {k: v / t.epoch_count for k, v in t.epoch_sums.items()} if t.epoch_count else {}
                seconds = time.perf_counter() - t_epoch
                record = {"epoch": e, "step": t.global_step, **means,
                          **{f"val_{k}": v for k, v in t.epoch_validation.items()},
                          "seconds": seconds, "wait_share": (stream.wait_seconds - w_epoch) / max(seconds, 1e-9)}
                t.history.epochs.append(record)
                t.epoch_finished = True
                _log_epoch(t, record)
                cbs.call("on_epoch_end", t, e, record)
                t.epoch, t.step_in_epoch, t.epoch_finished = e + 1, 0, False
                t.epoch_sums, t.epoch_count, t.epoch_validation = {}, 0, {}
            if not t.stop_reason:
                t.stop_reason = t.history.stop_reason = "completed"
            finished_ok = True
        finally:
            if finished_ok or t.stop_reason:
                cbs.call("on_fit_end", t, t.history)
            else:  # an error: close what callbacks hold open (progress bar, log) without a final checkpoint
                for cb in cbs:
                    if not isinstance(cb, Checkpointer):
                        try:
                            cb.on_fit_end(t, t.history)
                        except Exception:  # never mask the original error
                            log.debug("callback %r failed while closing", cb, exc_info=True)
    if t.stop_reason == "interrupted":
        where = (f"checkpoint {t.last_checkpoint}" if t.last_checkpoint else "no checkpoint (no run_dir given)")
        log.warning("training interrupted at epoch %d, step %d of %d (global step %d); %s. Resume with "
                    "fit(..., run_dir=%r, resume=True) or `symtrain train ... --resume`.", t.epoch + 1,
                    t.step_in_epoch, spe, t.global_step, where, str(t.run_dir) if t.run_dir else None)
    elif restore_best and t.best_values is not None:
        ckpt.restore(t.best_values, t.variables)
        log.info("restored the best validation state (step %d, %s=%.6g)", t.history.best["step"], t.monitor,
                 t.history.best["score"])
    return t.history


def _log_epoch(t: Trainer, record: Mapping[str, Any]) -> None:
    shown = " ".join(f"{k}={v:.5g}" for k, v in record.items()
                     if k not in ("epoch", "step", "seconds", "wait_share") and isinstance(v, float)
                     and not k.startswith("val_rows"))
    best = t.history.best
    mark = " (best)" if best is not None and best["step"] == t.global_step and best["epoch"] == t.epoch else ""
    log.info("epoch %d/%d: %s%s [%.1f s, waiting for data %.0f%%]", record["epoch"] + 1, t.epochs, shown, mark,
             record["seconds"], 100 * record["wait_share"] if math.isfinite(record["wait_share"]) else 0)
