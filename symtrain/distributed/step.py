"""The synchronous data-parallel step: compiled gradients -> one flat buffer -> Allreduce -> compiled update.

``grad_fn(i)`` returns one flat vector ``[valid*grads | valid | valid*metrics | valid | 0]`` (the last slot
carries this rank's stop request). Its sum over ranks, divided by the summed valid rows, is the gradient
and the metrics of the whole global batch, row-weighted exactly as one process with batch N*B computes
them (a partial batch included; a rank with no valid rows adds zeros). ``update_fn(buffer)`` divides and
applies the optimizer's own update rule, so clipping sees the global norm of the averaged gradient.

With ``accumulate=k`` each rank sums its weighted gradients locally for k micro-batches (only the small
metrics tail is reduced per micro-batch) and the gradient buffer crosses the network once per update.
Between updates the accumulators differ per rank; only their sum matters, so before a checkpoint
``gather_state`` puts the global sum in rank 0's accumulator variables (named as in a one-process step,
so checkpoints resume under any rank count) and ``scatter_state`` takes it back on resume.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from symtrain.backend import function, grad, pt, shared
from symtrain.distributed.comm import FAREWELL, Comm, RanksDivergedError
from symtrain.errors import ConfigError
from symtrain.optim.updates import slot
from symtrain.train.step import StepControls, _by_name, _check_updates, _compile, _no_clash, _updated_shared


def _widest(params: list) -> str:
    return str(np.result_type(*[p.dtype for p in params]))


class DistributedStep(StepControls):
    """A Step look-alike (``step(i)``, ``flush()``, ``state_variables()``) averaging over every rank."""

    def __init__(self, step: Any, comm: Comm):
        r = getattr(step, "recipe", None)
        if not r:
            raise ConfigError("distributed training needs a step from st.compile_step (it recompiles the "
                              f"gradient and the update separately), got {type(step).__name__}")
        t0 = time.perf_counter()
        self.comm = comm
        self.name, self.names, self.accumulate = step.name, list(step.names), int(step.accumulate)
        self.schedules, self.mode, self.linker = list(step.schedules), step.mode, step.linker
        params = self.params = list(r["params"])
        stream, dtype = r["stream"], _widest(params)
        self.dtype = np.dtype(dtype)
        cost, metrics = r["cost"], list(r["metrics"].values())
        grads = grad(cost, params)
        valid = stream.batch_valid().astype(dtype)
        one = pt.reshape(valid, (1,))

        def weighted(x: Any) -> Any:  # a rank without valid rows adds exact zeros (its mean may be 0/0)
            return pt.switch(pt.gt(valid, 0), x.astype(dtype) * valid, pt.zeros_like(x, dtype=dtype))

        parts = [weighted(g).ravel() for g in grads]
        parts += [one, *[pt.reshape(weighted(m), (1,)) for m in [cost, *metrics]], one,
                  pt.zeros((1,), dtype=dtype)]
        self.sizes = [int(np.prod(p.get_value(borrow=True).shape, dtype=np.int64)) for p in params]
        self.n_grad = sum(self.sizes)  # P; slot P holds the rows the gradient sums cover
        self.n_acc = self.n_grad + 1
        self.n_metrics = len(self.names)
        self.length = self.n_acc + self.n_metrics + 2
        extra = r["updates"]
        self._fn = _compile([stream.index], [pt.concatenate(parts)], dict(extra) or None, r["givens"],
                            r["mode"], "distributed step")
        self._fn.trust_input = True
        flat = pt.vector("grad_sums", dtype=dtype)
        rows = pt.maximum(flat[self.n_grad], 1)
        mean, pos = [], 0
        for p, n in zip(params, self.sizes):
            mean.append((flat[pos:pos + n] / rows).reshape(p.shape).astype(p.dtype))
            pos += n
        try:
            updates = _check_updates(r["optimizer"](mean, params), "optimizer")
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"distributed training applies the optimizer to averaged gradients; "
                              f"optimizer(grads, params) failed: {exc}") from exc
        _no_clash(extra, updates, "updates= and the optimizer both update")
        self._update = function([flat], [], updates=list(updates.items()), mode=r["mode"])
        self._update.trust_input = True
        self._acc_vars: list = []
        if self.accumulate > 1:  # the one-process step's accumulator names, so checkpoints interchange
            self._acc_vars = [slot(p, self.name, "grad_sum") for p in params]
            self._acc_rows = shared(np.asarray(0, dtype=np.int64), name=f"{self.name}/accum_rows")
            self._acc_count = shared(np.asarray(0, dtype=np.int64), name=f"{self.name}/accum_count")
            self._acc_vars += [self._acc_rows, self._acc_count]
        extra_state = [s.variable for s in self.schedules]
        self._state = _by_name([*params, *_updated_shared([self._fn, self._update], self.name), *extra_state,
                                *self._acc_vars])
        self._buf = np.zeros(self.length, dtype=self.dtype)  # the accumulation group (accumulate > 1)
        self._count = 0
        self.stop_requested = False  # set by the trainer; folded into the next reduction
        self.stop_agreed = False  # some rank asked to stop at the last step
        self.compile_seconds = time.perf_counter() - t0

    def __call__(self, index: int | np.integer) -> dict[str, float]:
        out = self._fn(np.asarray(index, dtype=np.int64))[0]
        out[-1] = 1.0 if self.stop_requested else 0.0
        tail = slice(self.n_acc, self.length)
        if self.accumulate == 1:
            self.comm.allreduce_sum(out)
            metrics = self._metrics(out)
            if np.isfinite(metrics["loss"]):
                self._update(out)
            return metrics
        self.comm.allreduce_sum(out[tail])
        metrics = self._metrics(out)
        if np.isfinite(metrics["loss"]):  # a skipped (non-finite) micro-batch joins no group
            self._buf[:self.n_acc] += out[:self.n_acc]
            self._count += 1
            if self._count >= self.accumulate:
                self._apply()
        return metrics

    @property
    def exchange_length(self) -> int:
        """Floats of the per-step reduction: the whole buffer, or its metrics tail when accumulating."""
        return self.length if self.accumulate == 1 else self.length - self.n_acc

    def _metrics(self, buf: np.ndarray) -> dict[str, float]:
        tail = buf[self.n_acc:]
        if tail[-1] >= FAREWELL:
            raise RanksDivergedError(
                "another rank left the training loop while this one was still training: a stop was "
                "requested on some ranks only (stop only on values every rank shares, such as the step's "
                "metrics or the validation metrics)")
        rows = max(float(tail[-2]), 1.0)
        self.stop_agreed = bool(tail[-1] > 0)
        return {k: float(v) / rows for k, v in zip(self.names, tail[:self.n_metrics])}

    def _apply(self) -> None:
        self.comm.allreduce_sum(self._buf[:self.n_acc])
        self._update(self._buf)
        self._buf[:] = 0
        self._count = 0

    @property
    def pending(self) -> int:
        """Micro-batches accumulated and not yet applied (the same on every rank)."""
        return self._count

    def gather_state(self) -> None:
        """Before a checkpoint: rank 0's accumulators get the sum of every rank's group (collective)."""
        if self.accumulate == 1:
            return
        total = self._buf[:self.n_acc].copy()
        self.comm.allreduce_sum(total)
        pos = 0
        for var, n in zip(self._acc_vars, self.sizes):
            var.set_value(total[pos:pos + n].reshape(var.get_value(borrow=True).shape).astype(var.dtype))
            pos += n
        self._acc_rows.set_value(np.asarray(round(float(total[self.n_grad])), dtype=np.int64))
        self._acc_count.set_value(np.asarray(self._count, dtype=np.int64))

    def scatter_state(self) -> None:
        """After a restore: the group restarts from the accumulators on rank 0 only (their sum is global)."""
        if self.accumulate == 1:
            return
        self._buf[:] = 0
        self._count = int(self._acc_count.get_value())
        if self.comm.rank == 0:
            pieces = [np.ravel(v.get_value(borrow=True)) for v in self._acc_vars[:len(self.sizes)]]
            self._buf[:self.n_grad] = np.concatenate(pieces)
            self._buf[self.n_grad] = float(self._acc_rows.get_value())

    def checksum(self) -> float:
        """A cheap fingerprint of every numeric state variable (equal on all ranks while they agree)."""
        total, skip = 0.0, {id(v) for v in self._acc_vars}
        for var in self._state.values():
            value = var.get_value(borrow=True)
            if isinstance(value, np.ndarray) and value.dtype.kind in "fiub" and id(var) not in skip:
                flat = value.ravel()
                total += float(np.sum(flat, dtype=np.float64)) + float(np.dot(flat, flat))
        return total

    def sizes_summary(self) -> Mapping[str, int]:
        """Buffer facts for logs and benchmarks: floats reduced per update and their bytes."""
        return {"floats": self.length, "bytes": self.length * self.dtype.itemsize}

    def __repr__(self) -> str:
        return (f"DistributedStep(name={self.name!r}, rank={self.comm.rank}/{self.comm.size}, "
                f"accumulate={self.accumulate}, buffer={self.length} x {self.dtype})")
