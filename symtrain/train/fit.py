"""``fit``: check the arguments, prepare the run directory, and run a :class:`Trainer` over the stream.

The loop itself (epochs -> chunks -> steps, validation, best tracking, checkpoints, exact resume, signal
handling, the non-finite-loss guard) is :class:`~symtrain.train.trainer.Trainer`. See docs/tutorial.md,
docs/callbacks.md and docs/checkpoints.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from symtrain.errors import ConfigError
from symtrain.train import checkpoint as ckpt
from symtrain.train import rundir
from symtrain.train.callbacks import Callback, CallbackList
from symtrain.train.checkpointer import Checkpointer
from symtrain.train.contracts import StepLike, StreamLike
from symtrain.train.early_stopping import EarlyStopping, check_best_mode
from symtrain.train.history import History
from symtrain.train.metrics import MetricsLog
from symtrain.train.progress import ProgressBar
from symtrain.train.trainer import CHECKPOINTS, HISTORY_TAIL, NONFINITE, Trainer, validation_fn
from symtrain.validate import check_int, check_path_arg

__all__ = ["fit", "Trainer", "CHECKPOINTS", "HISTORY_TAIL"]

log = logging.getLogger("symtrain.fit")


def fit(step: StepLike, stream: StreamLike, epochs: int, *, validation: Any = None,
        validate_every: int | None = 1,
        validate_every_steps: int | None = None, monitor: str = "loss", mode: str = "min",
        early_stopping: EarlyStopping | None = None, run_dir: str | Path | None = None, resume: bool = False,
        overwrite: bool = False, checkpoint_every_steps: int | None = None,
        checkpoint_every_epochs: int | None = 1, checkpoint_best: bool = True, keep: int = 3,
        restore_best: bool = False, callbacks: Sequence[Callback] = (), progress: bool = True,
        log_every: int = 50, on_nonfinite: str = "raise", loss_key: str = "loss",
        handle_signals: bool = True, distributed: bool = False, comm: Any = None,
        check_sync_every: int | None = None) -> History:
    """Train ``step`` over ``stream`` until ``epochs`` epochs are done (counted from the run's start).

    ``validation``: an Evaluator (``st.compile_eval`` over a sequential validation stream) or a callable
    returning a dict of metrics; run after every ``validate_every``-th epoch and/or every
    ``validate_every_steps`` steps. ``monitor``/``mode``: the validation metric that defines "best".
    ``early_stopping``: an :class:`EarlyStopping`. ``run_dir``: where checkpoints and the metrics log go
    (None: neither). ``resume=True`` continues from the newest valid checkpoint of ``run_dir`` (or starts
    fresh when there is none). ``restore_best``: load the best validation state into the variables at the
    end. ``on_nonfinite``: "raise" (NonFiniteLossError) or "skip" (undo the step and go on; costs one copy of
    the state per step). Returns the :class:`History`.

    ``distributed=True`` (or an mpi4py ``comm=``) trains data-parallel over the MPI job's ranks (started
    with ``mpiexec -n N`` or ``symtrain train --ranks N``): the stream's batch size is the per-rank batch,
    rank 0 writes checkpoints, logs and progress, and a single rank runs exactly as without MPI.
    ``check_sync_every=K`` compares a checksum of the state across ranks every K steps (a debug aid).
    See docs/distributed.md.
    """
    epochs = check_int("epochs", epochs, 1)
    validate_every = check_int("validate_every", validate_every, 1, allow_none=True)
    validate_every_steps = check_int("validate_every_steps", validate_every_steps, 1, allow_none=True)
    keep = ckpt.check_keep(keep)
    mode = check_best_mode(mode)
    if on_nonfinite not in NONFINITE:
        raise ConfigError(f"on_nonfinite must be one of {NONFINITE}, got {on_nonfinite!r}")
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise ConfigError(f"early_stopping must be an EarlyStopping, got {type(early_stopping).__name__}")
    if early_stopping is not None and validation is None:
        raise ConfigError("early_stopping needs validation= (it watches a validation metric)")
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks must be Callback instances, got {type(cb).__name__}")
    validate = validation_fn(validation)
    if not isinstance(step, StepLike):
        raise ConfigError(f"step must be a compiled Step (st.compile_step), got {type(step).__name__}")
    if resume and run_dir is None:
        raise ConfigError("resume=True needs run_dir= (the directory holding the checkpoints)")
    run_dir = None if run_dir is None else check_path_arg("run_dir", run_dir)
    options = dict(run_dir=run_dir, keep=keep, loss_key=loss_key, monitor=monitor, best_mode=mode,
                   validate_every=validate_every, validate_every_steps=validate_every_steps,
                   on_nonfinite=on_nonfinite, handle_signals=handle_signals, restore_best=restore_best)
    builtins = dict(early_stopping=early_stopping, log_every=log_every, progress=progress,
                    checkpoints=(checkpoint_every_steps, checkpoint_every_epochs, checkpoint_best))
    mpi = None
    if distributed is not False or comm is not None:
        from symtrain.distributed import run as dist

        mpi = dist.resolve_comm(distributed, comm)
    if mpi is None:
        with contextlib.ExitStack() as held:
            if run_dir is not None:  # the lock (held for the run), ownership checks, overwrite: rundir.py
                held.enter_context(rundir.session(run_dir, resume, overwrite))
            trainer = Trainer(step, stream, epochs, validation=validate, **options)
            return _start(trainer, callbacks, resume, **builtins)

    def start_distributed() -> History:
        from symtrain.distributed.trainer import DistributedTrainer

        with contextlib.ExitStack() as held:
            if run_dir is not None:  # rank 0 writes, so rank 0 holds the run dir's lock for the run
                dist.on_root(mpi, lambda: held.enter_context(rundir.session(run_dir, resume, overwrite)))
            trainer = DistributedTrainer(step, stream, epochs, comm=mpi, validation=validation,
                                         check_every=check_sync_every, **options)
            return _start(trainer, callbacks, resume, **builtins)

    return dist.guarded(mpi, start_distributed)


def _start(trainer: Trainer, callbacks: Sequence[Callback], resume: bool, *,
           early_stopping: EarlyStopping | None, log_every: int, progress: bool,
           checkpoints: tuple) -> History:
    """Attach the built-in callbacks (writers only log; under MPI every rank checkpoints collectively,
    rank 0 writes), resume when asked, run."""
    run_dir = trainer.run_dir
    collective = getattr(trainer, "comm", None) is not None
    builtins: list[Callback] = []
    if early_stopping is not None:
        builtins.append(early_stopping)
    if run_dir is not None and trainer.is_writer:
        builtins.append(MetricsLog(run_dir, every=log_every))
    if progress and trainer.is_writer:
        builtins.append(ProgressBar())
    if run_dir is not None and (trainer.is_writer or collective):
        builtins.append(Checkpointer(*checkpoints))
    trainer.callbacks = CallbackList([*callbacks, *builtins])
    if resume:
        trainer.resume()
    return trainer.run()
