"""DistributedTrainer: the Trainer loop on every rank, with the step averaged over ranks by MPI.

Every rank runs the same loop over its shard of each global batch; the reduced metrics are identical on
all ranks, so every decision (non-finite loss, validation best, early stopping, when to checkpoint) is
taken identically everywhere and no extra collective is needed for it. A stop request (SIGINT/SIGTERM
on any rank) travels in the step's buffer, so all ranks stop after the same step. Rank 0 alone writes
checkpoints, the metrics log and progress; the others take part in the same collectives.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.distributed.comm import FAREWELL, Comm, RanksDivergedError
from symtrain.distributed.shard import shard_stream
from symtrain.distributed.step import DistributedStep
from symtrain.errors import ConfigError, SymtrainError
from symtrain.stream.chunkstream import state_differences
from symtrain.train import checkpoint as ckpt
from symtrain.train.contracts import BatchEvaluator
from symtrain.train.history import History
from symtrain.train.trainer import Trainer, validation_fn
from symtrain.validate import check_int

log = logging.getLogger("symtrain.distributed")


def sharded_validation(validation: Any, comm: Comm) -> Callable[[], Mapping[str, float]] | None:
    """The validation pass over all ranks: an Evaluator's stream is sharded and its metrics reduced
    row-weighted (equal to the one-process value); any other callable runs everywhere, rank 0's result
    is used (so every rank takes the same decisions)."""
    if validation is None:
        return None
    if isinstance(validation, BatchEvaluator) and validation.stream is not None:
        stream = validation.stream
        shard_stream(stream, comm.rank, comm.size)
        names = list(validation.names)

        def run(epoch: int = 0) -> dict[str, float]:
            sums = np.zeros(len(names) + 1, dtype=np.float64)
            for chunk in stream.epoch(epoch):
                for i in chunk.indices:
                    metrics, valid = validation.batch(i)
                    sums[:-1] += [metrics[n] * valid for n in names]
                    sums[-1] += valid
            comm.allreduce_sum(sums)
            rows = float(sums[-1])
            means = {n: float(s) / rows for n, s in zip(names, sums[:-1])} if rows else {}
            return {**means, "rows": rows}

        return run
    validation = validation_fn(validation)

    def run_everywhere() -> dict[str, float]:
        return comm.bcast({k: float(v) for k, v in dict(validation()).items()})

    return run_everywhere


def rank_generator(generator: np.random.Generator, rank: int) -> np.random.Generator:
    """Rank 0 keeps ``generator``; rank r > 0 gets an independent one derived from its state and r.

    Identical generators would give every rank the same dropout masks (or other draws) for its different
    rows. Derived this way the ranks draw apart, deterministically: a resume derives them again from the
    generator rank 0 checkpointed.
    """
    if rank == 0:
        return generator
    entropy = copy.deepcopy(generator).integers(0, 2**63, size=4).tolist()
    return np.random.Generator(type(generator.bit_generator)(np.random.SeedSequence([*entropy, rank])))


class DistributedTrainer(Trainer):
    """A Trainer whose step is a :class:`DistributedStep` over ``comm``, its stream sharded by rank.

    ``check_every``: every that many steps, compare a checksum of the state across ranks
    (RanksDivergedError naming the ranks that differ); None or 0 turns it off.
    """

    def __init__(self, step: Any, stream: Any, epochs: int, *, comm: Comm, validation: Any = None,
                 check_every: int | None = None, **options: Any):
        every = check_int("check_sync_every", check_every, 0, allow_none=True) or 0  # before any compiling
        self.comm = comm
        shard_stream(stream, comm.rank, comm.size)
        dstep = DistributedStep(step, comm)
        self.data_streams = {"training": stream, "validation": getattr(validation, "stream", None)}
        super().__init__(dstep, stream, epochs, validation=sharded_validation(validation, comm), **options)
        self.check_every = every
        self._agreed: bool | None = None

    # ----- the hooks -----------------------------------------------------------------------------------
    @property
    def is_writer(self) -> bool:
        """Rank 0 writes checkpoints, the metrics log and progress."""
        return self.comm.rank == 0

    @property
    def global_batch_size(self) -> int:
        """Rows of one global step (rows/s and logs count all ranks)."""
        return self.stream.batch_size * self.comm.size

    def compute_step(self, index: int) -> Mapping[str, float]:
        """Gradients on this rank's share, Allreduce with every rank, the update; the global metrics."""
        self.step.stop_requested = self.interrupt.requested is not None
        metrics = self.step(index)
        self._agreed = self.step.stop_agreed
        if self.check_every and (self.global_step + 1) % self.check_every == 0:
            self.check_in_sync()
        return metrics

    def agree_stop(self, flag: bool) -> bool:
        """The stop decision of the last step's reduction; outside a step, one small Allreduce."""
        if self._agreed is not None:
            agreed, self._agreed = self._agreed, None
            return agreed
        buf = np.asarray([1.0 if flag else 0.0])
        self.comm.allreduce_sum(buf)
        return bool(buf[0] > 0)

    def check_in_sync(self) -> None:
        """RanksDivergedError unless every rank holds the same state (one small Allgather)."""
        sums = self.comm.allgather_float(self.step.checksum())
        bad = [r for r in range(self.comm.size) if sums[r] != sums[0]]
        if bad:
            raise RanksDivergedError(
                f"the training state differs across ranks after global step {self.global_step + 1}: "
                f"rank(s) {bad} differ from rank 0 (checksums {sums.tolist()}); a rank ran other data or a "
                "nondeterministic op")

    # ----- start, checkpoints, resume --------------------------------------------------------------------
    def run(self) -> History:
        """Start every rank from rank 0's state (after any resume), then train."""
        self.check_same_data()
        self.broadcast_state()
        calls0, seconds0 = self.comm.allreduce_calls, self.comm.allreduce_seconds
        steps0 = self.global_step
        history = super().run()
        self.farewell()
        steps = max(self.global_step - steps0, 1)
        log.info("%d ranks, global batch %d: %.3f ms in Allreduce per step (%d calls)", self.comm.size,
                 self.global_batch_size, 1e3 * (self.comm.allreduce_seconds - seconds0) / steps,
                 self.comm.allreduce_calls - calls0)
        return history

    def check_same_data(self) -> None:
        """ConfigError on every rank unless all ranks stream the same datasets with the same global plans.

        A rank reading other data (another --data path, another seed or batch) would still hold the same
        parameters as the others (the gradients are averaged), so no checksum would ever notice it."""
        mine = {}
        for what, stream in self.data_streams.items():
            state = getattr(stream, "state", None)
            mine[what] = state() if callable(state) else None
        root = self.comm.bcast(mine)
        diffs = []
        for what, state in mine.items():
            if state is not None and root.get(what) is not None:
                diffs += [f"{what} {d}".replace(": checkpoint ", ": rank 0 ")
                          .replace(", now ", ", this rank ") for d in state_differences(root[what], state)]
        every = self.comm.allgather("; ".join(diffs))
        bad = [f"rank {r}: {d}" for r, d in enumerate(every) if d]
        if bad:
            raise ConfigError("the ranks do not stream the same data (every rank must read the same "
                              "dataset with the same plan; the global plan is split among them): "
                              + " | ".join(bad))

    def farewell(self) -> None:
        """The last collective of a run: a buffer shaped like a step's whose stop slot says "left the loop".

        Ranks that all finished agree at once; a rank still training receives it in its step (and raises),
        so a stop requested on some ranks only (a callback deciding on local data) ends in an error
        naming the step instead of a job waiting forever."""
        buf = np.zeros(self.step.exchange_length, dtype=self.step.dtype)
        buf[-1] = FAREWELL
        self.comm.allreduce_sum(buf)
        if buf[-1] != FAREWELL * self.comm.size:
            raise RanksDivergedError(
                f"this rank left the training loop after global step {self.global_step} while other ranks "
                "were still training: a stop was requested on some ranks only (stop only on values every "
                "rank shares, such as the step's metrics or the validation metrics)")

    def broadcast_state(self) -> None:
        """Every rank starts from rank 0's values of every state variable (parameters, optimizer state);
        a random generator becomes rank 0's generator split by rank (see :func:`rank_generator`)."""
        for name in sorted(self.variables):
            var = self.variables[name]
            value = var.get_value(borrow=True)
            if isinstance(value, np.ndarray) and value.flags.c_contiguous and value.dtype.kind in "fiub":
                value = np.array(value, copy=True)
                self.comm.bcast_array(value)
            else:
                value = self.comm.bcast(value)
                if isinstance(value, np.random.Generator):
                    value = rank_generator(value, self.comm.rank)
            var.set_value(value)
        self.step.scatter_state()

    def meta(self, reason: str) -> dict:
        """The checkpoint metadata, its cursor in global terms (batch and buffer of all ranks together)."""
        meta = super().meta(reason)
        full = self.stream.spec.full
        meta["cursor"].update(batch_size=full.batch_size, chunk_rows=full.chunk_rows)
        return meta

    def save_checkpoint(self, reason: str) -> Path | None:
        """Gather the accumulation group into rank 0's state (collective), then rank 0 writes."""
        self.step.gather_state()
        path = super().save_checkpoint(reason)
        if not self.is_writer and self.checkpoint_dir is not None and reason != "best":
            self.last_checkpoint = self.checkpoint_dir / ckpt.checkpoint_name(*self.cursor())
        return path

    def resume(self) -> None:
        """Rank 0 reads the newest valid checkpoint and sends it to every rank (no shared disk needed)."""
        cdir = self.checkpoint_dir
        if cdir is None:
            raise ConfigError("resume=True needs run_dir= (the directory holding the checkpoints)")
        found: Any = None
        if self.is_writer:
            try:
                found = ckpt.load_latest(cdir)
            except SymtrainError as exc:
                found = exc
        found = self.comm.bcast(found)
        if isinstance(found, BaseException):
            raise found
        if found is None:
            log.info("resume: no checkpoint in %s; starting from the beginning", cdir)
            return
        self.restore_checkpoint(found)
        log.info("resumed from %s (epoch %d, step %d of %d, global step %d) on %d ranks", found.path,
                 self.epoch + 1, self.step_in_epoch, self.steps_per_epoch, self.global_step, self.comm.size)
        if self.keep_best_in_memory and self.is_writer and (cdir / ckpt.BEST).is_dir():
            try:
                self.best_values = ckpt.read_checkpoint(cdir / ckpt.BEST).arrays
            except SymtrainError as exc:
                log.warning("best checkpoint unreadable, restore_best will use later bests only: %s", exc)
        self.best_values = self.comm.bcast(self.best_values if self.is_writer else None)
