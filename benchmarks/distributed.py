"""Data-parallel training end to end: the benchmark MLP on the multi-GiB digits-derived dataset, one epoch,
symtrain on 1 and 2 MPI ranks side by side with PyTorch on 2 threads and PyTorch DDP on 2 processes.

Contenders (every run a fresh process tree; 1 BLAS/intra-op thread per process unless stated):
  - ``symtrain/1``: ``st.fit`` in one process, as without MPI (the one-rank baseline);
  - ``symtrain/2``: ``mpiexec -n 2`` (the wheel's launcher next to this Python), each rank
    ``st.fit(..., distributed=True)``, per-rank batch 128 (global batch 256); ``symtrain/2/throttle``
    the same with MPICH's progress throttle (``MPIR_CVAR_CH4_PROGRESS_THROTTLE=1``: a rank waiting in
    ``Allreduce`` sleeps now and then instead of spinning on a core the other rank needs);
  - ``torch/threads2``: one PyTorch process, ``torch.set_num_threads(2)``, batch 128; ``/passive`` adds
    ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead of spinning: 20x faster on a loaded
    machine); ``torch/threads2/256/passive`` uses batch 256, the global batch of the 2-process contenders;
  - ``torch/ddp2``: ``torchrun --nproc-per-node 2``, ``DistributedDataParallel`` over gloo, one thread per
    process, ``DistributedSampler`` + the batched fancy-index loader, per-rank batch 128.
Loaders: symtrain's ``loader="process"`` (``symtrain/2/thread`` tries the thread loader), PyTorch's batched
loader with 0 workers (the fastest PyTorch loader in benchmarks/end_to_end.py). Model, optimizer (Adam 1e-3)
and data are those of benchmarks/end_to_end.py.

Reported per contender (median over repetitions, contenders alternating in a rotated order): rows/s over
the epoch after the first step (the first step compiles/JITs and is left out), Allreduce time per step
(symtrain: the ``Allreduce`` calls of the step; DDP: from the gradient bucket's hook to its future's
completion; both include waiting for the slower rank), share of the epoch spent waiting for data, the
peak memory of the whole process tree (launcher, ranks, loader processes; proportional set size, so pages
shared between processes count once) and the load average when the run started.

    .venv/bin/python -m benchmarks.distributed               # full run (2 GiB, 3 repetitions; 15-30 min)
    .venv/bin/python -m benchmarks.distributed --quick       # smoke run (64 MiB, 1 repetition)
    .venv/bin/python -m benchmarks.run --only distributed    # full run, rewrites benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import common
from benchmarks.common import ROOT, MiB, Table, median, show
from symtrain.cli import doc_summary

NAME = "distributed"
BATCH = 128
CONTENDERS = (
    "symtrain/1",
    "symtrain/2",
    "symtrain/2/throttle",
    "torch/threads2",
    "torch/threads2/passive",
    "torch/threads2/256/passive",
    "torch/ddp2",
)
LABELS = {
    "symtrain/1": "symtrain, 1 rank (plain `st.fit`)",
    "symtrain/2": 'symtrain, 2 MPI ranks, loader="process"',
    "symtrain/2/thread": 'symtrain, 2 MPI ranks, loader="thread"',
    "symtrain/1/thread": 'symtrain, 1 rank, loader="thread"',
    "torch/threads2": "PyTorch, 2 threads, batch 128",
    "torch/threads2/256": "PyTorch, 2 threads, batch 256",
    "torch/ddp2": "PyTorch DDP, 2 processes (gloo)",
}
TARGET_VS_ONE_RANK = 1.7
TARGET_VS_TORCH = 1.2


@dataclass(frozen=True)
class Config:
    size: int = 2 * 2**30  # dataset bytes
    chunk_rows: int = 16384
    reps: int = 3
    contenders: tuple[str, ...] = CONTENDERS
    timeout_s: float = 900.0  # one contender's run; a hung launch is killed and reported as failed
    # one-process PyTorch stops after this many seconds of training: with 2 threads on a loaded machine
    # it can run 100x slower than quiet (every parallel region waits for a descheduled thread)
    torch_cap_s: float = 60.0


QUICK = Config(size=64 * MiB, chunk_rows=2048, reps=1, timeout_s=300.0, torch_cap_s=30.0)
CAP_ENV = "SYMTRAIN_BENCH_TORCH_CAP_S"


# ----- what a contender spec means ------------------------------------------------------------------------
# Options a contender spec may end with: environment settings of its processes.
ENV_OPTIONS = {
    # libgomp threads sleep instead of spinning at the end of a parallel region (PyTorch's intra-op pool)
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    # MPICH's progress loop sleeps 1 us every 4096 idle polls instead of spinning on a shared core
    "throttle": {"MPIR_CVAR_CH4_PROGRESS_THROTTLE": "1"},
}


def parse(spec: str) -> dict:
    """``symtrain/RANKS[/LOADER]``, ``torch/threadsT[/BATCH]`` or ``torch/ddpN``, each optionally followed by
    ``/passive`` or ``/throttle`` (ENV_OPTIONS), as a dict of settings."""
    kind, what, *rest = spec.split("/")
    env: dict[str, str] = {}
    while rest and rest[-1] in ENV_OPTIONS:
        env.update(ENV_OPTIONS[rest.pop()])
    if kind == "symtrain":
        return {
            "kind": kind,
            "ranks": int(what),
            "loader": rest[0] if rest else "process",
            "batch": BATCH,
            "env": env,
        }
    if kind == "torch" and what.startswith("threads"):
        batch = int(rest[0]) if rest else BATCH
        return {"kind": "torch", "ranks": 1, "threads": int(what[7:]), "batch": batch, "env": env}
    if kind == "torch" and what.startswith("ddp"):
        return {"kind": "ddp", "ranks": int(what[3:]), "threads": 1, "batch": BATCH, "env": env}
    raise ValueError(f"unknown contender {spec!r}")


def label(spec: str) -> str:
    """The contender's name in the table."""
    if spec in LABELS:
        return LABELS[spec]
    parts = spec.split("/")
    opts = [p for p in parts if p in ENV_OPTIONS]
    base = LABELS.get("/".join(p for p in parts if p not in ENV_OPTIONS), spec)
    return base + "".join(f", {' '.join(f'{k}={v}' for k, v in ENV_OPTIONS[o].items())}" for o in opts)


# ----- in the children ---------------------------------------------------------------------------------
class _Clock:
    """Wall-clock marks of a training loop (the end of the first step, the end of the epoch) and what the
    ``probes`` (running totals: seconds waited, Allreduce seconds and calls) added after the first step,
    which includes compilation, JIT warm-up and waiting for the slower rank's start-up."""

    def __init__(self, probes: dict[str, Callable[[], float]]) -> None:
        self.first = self.end = float("nan")
        self.steps = 0
        self.probes = probes
        self.base = dict.fromkeys(probes, 0.0)

    def step_done(self) -> None:
        self.steps += 1
        now = time.perf_counter()
        if self.steps == 1:
            self.first = now
            self.base = {k: f() for k, f in self.probes.items()}
        self.end = now

    def result(self) -> dict[str, float]:
        """steps, first, end and each probe's growth since the first step."""
        out = {"steps": self.steps, "first": self.first, "end": self.end}
        out.update({k: f() - self.base[k] for k, f in self.probes.items()})
        return out


def _alone(reduce_once: Callable[[], None], barrier: Callable[[], None], reps: int = 200) -> float:
    """Median seconds of one Allreduce of the gradient buffer, back to back after a barrier: the transfer
    itself, without the waiting for a slower rank that the in-training times include."""
    for _ in range(10):
        reduce_once()
    barrier()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        reduce_once()
        times.append(time.perf_counter() - t0)
    return median(times)


def _write(out: str, rank: int, res: dict) -> None:
    res["rank"] = rank
    Path(f"{out}.rank{rank}.json").write_text(json.dumps(res, default=float), encoding="utf-8")


class _TimedComm:
    """Wraps an mpi4py communicator and times its ``Allreduce`` calls (everything else is passed through)."""

    def __init__(self, comm) -> None:
        self._comm = comm
        self.allreduce_s = 0.0
        self.allreduce_calls = 0

    def Allreduce(self, *args, **kwargs):  # noqa: N802 (mpi4py's name)
        t0 = time.perf_counter()
        try:
            return self._comm.Allreduce(*args, **kwargs)
        finally:
            self.allreduce_s += time.perf_counter() - t0
            self.allreduce_calls += 1

    def __getattr__(self, name: str):
        return getattr(self._comm, name)


def child_symtrain(path: str, spec: dict, chunk_rows: int, out: str) -> None:
    """One process of a symtrain run: plain ``fit`` for 1 rank, ``fit(distributed=True)`` under mpiexec."""
    import symtrain as st
    from symtrain.backend import pt
    from symtrain.train.callbacks import Callback

    distributed = spec["ranks"] > 1
    kwargs: dict = {}
    rank, timed = 0, None
    if distributed:
        from mpi4py import MPI

        timed = _TimedComm(MPI.COMM_WORLD)
        rank = MPI.COMM_WORLD.Get_rank()
        kwargs = {"distributed": True, "comm": timed}
    stream = st.ChunkStream(
        path,
        batch_size=BATCH,
        chunk_rows=chunk_rows,
        policy="shuffle",
        seed=0,
        loader=spec["loader"],
        name="dist",
    )
    x, y = stream.batch("x"), stream.batch("y")
    params = common.mlp_params()
    logp = common.mlp_log_probs(x, params)
    cost = -pt.mean(logp[pt.arange(x.shape[0]), y])
    step = st.compile_step(cost, params, stream, st.optim.adam(1e-3), mode="NUMBA")
    probes = {"wait_s": lambda: stream.wait_seconds}
    if timed is not None:
        probes.update(allreduce_s=lambda: timed.allreduce_s, allreduce_calls=lambda: timed.allreduce_calls)
    clock = _Clock(probes)

    class Tick(Callback):
        def on_step_end(self, trainer, step, metrics) -> None:
            clock.step_done()

    hist = st.fit(
        step,
        stream,
        epochs=1,
        progress=False,
        handle_signals=False,
        checkpoint_every_epochs=None,
        callbacks=[Tick()],
        **kwargs,
    )
    res = {**clock.result(), "rows_per_step": BATCH * spec["ranks"], "threads": common.BLAS_THREADS}
    if distributed:
        import numpy as np
        from mpi4py import MPI

        buf = np.zeros(sum(p.get_value(borrow=True).size for p in params) + 4, dtype=np.float32)
        world = MPI.COMM_WORLD
        res["allreduce_alone_s"] = _alone(lambda: world.Allreduce(MPI.IN_PLACE, buf), world.Barrier)
    if hist.epochs:
        res["mean_loss"] = float(hist.epochs[-1].get("loss", float("nan")))
    stream.close()
    _write(out, rank, res)


def _torch_epoch(
    model, loader, clock: _Clock, counters: dict, lr: float = 1e-3, cap_s: float | None = None
) -> dict:
    """One epoch of Adam on cross-entropy, ticking ``clock`` after every step; ``counters["wait_s"]`` adds up
    the seconds spent waiting for batches. ``cap_s``: stop after that many seconds past the first step."""
    import torch
    from torch import nn

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    rows, total, steps = 0, 0.0, 0
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            break
        counters["wait_s"] += time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        total += loss.item()
        rows += len(y)
        steps += 1
        clock.step_done()
        if cap_s is not None and clock.end - clock.first > cap_s:
            return {"rows": rows, "mean_loss": total / max(steps, 1), "capped": True}
    return {"rows": rows, "mean_loss": total / max(steps, 1)}


def child_torch(path: str, spec: dict, out: str) -> None:
    """One PyTorch process with ``spec['threads']`` intra-op threads."""
    from benchmarks.torch_baselines import make_loader, mlp, set_threads

    set_threads(spec["threads"])
    counters = {"wait_s": 0.0}
    clock = _Clock({"wait_s": lambda: counters["wait_s"]})
    loader = make_loader(path, "batched", 0, spec["batch"])
    cap = float(os.environ[CAP_ENV]) if os.environ.get(CAP_ENV) else None
    res = _torch_epoch(mlp(0), loader, clock, counters, cap_s=cap)
    res.update(clock.result(), rows_per_step=spec["batch"], threads=spec["threads"], epoch_steps=len(loader))
    _write(out, 0, res)


def child_ddp(path: str, spec: dict, out: str) -> None:
    """One rank of a torchrun-launched DDP run: gloo, DistributedSampler, one timed bucket a step."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import BatchSampler, DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from benchmarks.torch_baselines import BatchReadDataset, mlp, set_threads

    set_threads(spec["threads"])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DistributedDataParallel(mlp(0))  # broadcasts rank 0's parameters
    timing = {"s": 0.0, "calls": 0}

    def timed_allreduce(state: dict, bucket) -> torch.futures.Future:
        t0 = time.perf_counter()
        grad = bucket.buffer().div_(world)

        def done(fut):
            state["s"] += time.perf_counter() - t0
            state["calls"] += 1
            return fut.value()[0]

        return dist.all_reduce(grad, async_op=True).get_future().then(done)

    timed_allreduce.__annotations__["return"] = torch.futures.Future[torch.Tensor]  # DDP checks the object
    model.register_comm_hook(timing, timed_allreduce)
    ds = BatchReadDataset(path)
    sampler = BatchSampler(
        DistributedSampler(ds, world, rank, shuffle=True, seed=0), spec["batch"], drop_last=False
    )
    counters = {"wait_s": 0.0}
    clock = _Clock(
        {
            "wait_s": lambda: counters["wait_s"],
            "allreduce_s": lambda: timing["s"],
            "allreduce_calls": lambda: timing["calls"],
        }
    )
    loader = DataLoader(ds, sampler=sampler, batch_size=None, num_workers=0)
    res = _torch_epoch(model, loader, clock, counters)
    dist.barrier()
    res.update(clock.result(), rows_per_step=spec["batch"] * world, threads=spec["threads"])
    flat = torch.zeros(sum(p.numel() for p in model.parameters()))
    res["allreduce_alone_s"] = _alone(lambda: dist.all_reduce(flat), dist.barrier)
    dist.destroy_process_group()
    _write(out, rank, res)


def child(contender: str, path: str, chunk_rows: int, out: str) -> None:
    spec = parse(contender)
    if spec["kind"] == "symtrain":
        child_symtrain(path, spec, chunk_rows, out)
    elif spec["kind"] == "torch":
        child_torch(path, spec, out)
    else:
        child_ddp(path, spec, out)


# ----- the parent: launch, sample memory, collect ----------------------------------------------------------
_PSS = re.compile(r"^(Pss_Anon|Pss_Shmem|Pss_File):\s+(\d+) kB", re.M)


def tree_pss(pid: int) -> dict[str, int]:
    """Pss_Anon/Pss_Shmem/Pss_File (bytes) summed over ``pid`` and its descendants (shared pages once)."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    total = {"Pss_Anon": 0, "Pss_Shmem": 0, "Pss_File": 0, "procs": 0}
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                text = f.read()
        except OSError:  # exited between listing and reading
            continue
        total["procs"] += 1
        for key, kb in _PSS.findall(text):
            total[key] += int(kb) * 1024
    return total


class TreeSampler:
    """Samples a process tree's proportional memory every ``interval`` s on a thread; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak_mem = self.peak_file = self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            s = tree_pss(self.pid)
            if s:
                self.peak_mem = max(self.peak_mem, s["Pss_Anon"] + s["Pss_Shmem"])
                self.peak_file = max(self.peak_file, s["Pss_File"])
                self.peak_procs = max(self.peak_procs, s["procs"])

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return {"peak_mem": self.peak_mem, "peak_file": self.peak_file, "procs": self.peak_procs}


def mpiexec() -> str:
    """The MPI launcher: the one installed next to this Python (the mpich wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        raise RuntimeError("no mpiexec: install the mpi extra (pip install -e '.[mpi]') or put one on PATH")
    return found


def command(contender: str, path: Path, chunk_rows: int, out: str) -> list[str]:
    spec = parse(contender)
    me = [
        "-m",
        "benchmarks.distributed",
        "--child",
        contender,
        "--data",
        str(path),
        "--chunk-rows",
        str(chunk_rows),
        "--out",
        out,
        "--blas-threads",
        common.BLAS_THREADS,
    ]
    if spec["kind"] == "symtrain" and spec["ranks"] > 1:
        return [mpiexec(), "-n", str(spec["ranks"]), sys.executable, *me]
    if spec["kind"] == "ddp":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes",
            "1",
            "--nproc-per-node",
            str(spec["ranks"]),
            *me,
        ]
    return [sys.executable, *me]


def run_contender(contender: str, path: Path, chunk_rows: int, timeout_s: float, cap_s: float) -> dict:
    """One fresh process tree; the per-rank results merged (global rows/s, Allreduce per step, ...)."""
    spec = parse(contender)
    env = dict(os.environ)
    env["PYTENSOR_FLAGS"] = ",".join(f for f in (env.get("PYTENSOR_FLAGS", ""), "floatX=float32") if f)
    env[CAP_ENV] = str(cap_s)
    env.update(spec["env"])
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="symtrain-dist-") as tmp:
        out = f"{tmp}/res"
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            command(contender, path, chunk_rows, out),
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        sampler = TreeSampler(proc.pid)
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            _, err = proc.communicate()
            err += f"\ntimed out after {timeout_s:.0f} s"
        mem = sampler.stop()
        wall = time.perf_counter() - t0
        ranks = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("res.rank*.json"))]
    if proc.returncode != 0 or len(ranks) != spec["ranks"]:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.search(r"\w(Error|Exception|Interrupt)\b|timed out", ln)]
        why = (
            " | ".join(errors[-2:] or lines[-3:])[-600:]
            or f"exit {proc.returncode}, {len(ranks)} of {spec['ranks']} rank reports"
        )
        return {"contender": contender, "error": why, "wall_s": wall, "load": load}
    steps = ranks[0]["steps"]
    timed_steps = steps - 1
    secs = max((r["end"] - r["first"] for r in ranks if r["steps"] > 1), default=float("nan"))
    rows = timed_steps * ranks[0]["rows_per_step"]
    res = {
        "contender": contender,
        "rows_s": rows / secs if secs > 0 else float("nan"),
        "epoch_s": secs,
        "steps": steps,
        "wait_share": max(r["wait_s"] for r in ranks) / secs,
        "wall_s": wall,
        "load": load,
        "mean_loss": ranks[0].get("mean_loss", float("nan")),
        **mem,
    }
    if ranks[0].get("capped"):
        res["epoch_fraction"] = steps / max(ranks[0].get("epoch_steps", steps), 1)
    if "allreduce_s" in ranks[0]:
        res["allreduce_ms"] = 1e3 * median([r["allreduce_s"] for r in ranks]) / max(timed_steps, 1)
        res["allreduce_share"] = median([r["allreduce_s"] for r in ranks]) / secs
        res["allreduce_per_step"] = ranks[0]["allreduce_calls"] / max(timed_steps, 1)
        res["allreduce_alone_ms"] = 1e3 * median([r.get("allreduce_alone_s", float("nan")) for r in ranks])
    return res


def _rows_s(r: float) -> str:
    return f"{r / 1e3:.1f} k"


def _capped(v: list[dict]) -> str:
    """A marker for runs stopped by the time cap: the share of the epoch they trained."""
    parts = [r["epoch_fraction"] for r in v if "epoch_fraction" in r]
    return f" (time cap: {min(parts):.0%}-{max(parts):.0%} of the epoch)" if parts else ""


def bench(cfg: Config) -> list[Table]:
    path = common.dataset(common.rows_for(cfg.size))
    from symtrain.storage import open_dataset

    with open_dataset(path) as ds:
        n_rows, nbytes = ds.rows, sum(ds.field(f).row_bytes for f in ds.names) * ds.rows
        files = [ds.field(f).path for f in ds.names]
    names = list(cfg.contenders)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(cfg.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            common.warm(files)
            r = run_contender(name, path, cfg.chunk_rows, cfg.timeout_s, cfg.torch_cap_s)
            r["rep"] = rep
            runs[name].append(r)
            if "error" in r:
                print(f"  rep {rep} {name}: FAILED {r['error']}", flush=True)
            else:
                ar = f", Allreduce {r['allreduce_ms']:.2f} ms/step" if "allreduce_ms" in r else ""
                print(
                    f"  rep {rep} {name:20s} {r['rows_s'] / 1e3:6.1f} k rows/s, wait "
                    f"{r['wait_share']:.0%}{ar}, "
                    f"tree {r['peak_mem'] / MiB:.0f} MiB, load {r['load']:.2f}",
                    flush=True,
                )
    return [table(cfg, runs, n_rows, nbytes)]


def table(cfg: Config, runs: dict[str, list[dict]], n_rows: int, nbytes: int) -> Table:
    names = list(runs)
    ok = {n: [r for r in v if "error" not in r] for n, v in runs.items()}
    rates = {n: median([r["rows_s"] for r in v]) for n, v in ok.items() if v}
    one = rates.get("symtrain/1")
    torch_names = [n for n in rates if n.startswith("torch")]
    best_torch = max(torch_names, key=lambda n: rates[n], default=None)
    t = Table(
        f"Data parallel: one epoch of the MLP on 2 cores ({n_rows} rows, {nbytes / 2**30:.2f} GiB, per-rank "
        f"batch {BATCH}, warm page cache)",
        [
            "contender",
            "processes",
            "rows/s (median)",
            "x symtrain 1 rank",
            f"x {label(best_torch)}" if best_torch else "x fastest PyTorch",
            "Allreduce per step: in training (alone)",
            "Allreduce share",
            "waited for data",
            "peak memory (tree)",
            "peak file pages (tree)",
            "load avg at start",
            "epoch mean loss",
        ],
    )
    for n in names:
        v = ok[n]
        if not v:
            t.rows.append([label(n), "-", f"failed: {runs[n][0]['error'][:300]}"] + ["-"] * 9)
            continue
        ar = [r["allreduce_ms"] for r in v if "allreduce_ms" in r]
        t.rows.append(
            [
                label(n),
                str(max(r["procs"] for r in v)),
                _rows_s(rates[n]) + _capped(v),
                f"{rates[n] / one:.2f}" if one else "-",
                f"{rates[n] / rates[best_torch]:.2f}" if best_torch else "-",
                f"{median(ar):.2f} ms ({median([r['allreduce_alone_ms'] for r in v]):.2f} ms)" if ar else "-",
                f"{median([r['allreduce_share'] for r in v if 'allreduce_share' in r]):.0%}" if ar else "-",
                f"{median([r['wait_share'] for r in v]):.0%}",
                f"{median([r['peak_mem'] for r in v]) / MiB:.0f} MiB",
                f"{median([r['peak_file'] for r in v]) / MiB:.0f} MiB",
                ", ".join(f"{r['load']:.1f}" for r in v),
                f"{v[-1]['mean_loss']:.3f}",
            ]
        )
    t.notes += [
        f"{cfg.reps} repetition(s) per contender, each a fresh process tree, contenders alternating in a "
        "rotated order; dataset files read once before each run (warm page cache). rows/s = rows trained "
        "after the first step / wall time from the end of the first step to the end of the epoch (the "
        "slowest rank's), so compilation and JIT warm-up are left out for every contender.",
        "Threads: 1 BLAS thread per symtrain process (OPENBLAS/OMP/MKL_NUM_THREADS=1), "
        "torch.set_num_threads(1) per DDP process, torch.set_num_threads(2) for the 2-thread contenders. "
        f'symtrain: Numba mode, ChunkStream(policy="shuffle", chunk_rows={cfg.chunk_rows}), Adam(1e-3), '
        "`st.fit(..., distributed=True)` under `mpiexec -n 2` (the mpich wheel's). PyTorch: "
        "nn.Sequential(Linear, ReLU, Linear), CrossEntropyLoss, Adam(1e-3), the batched loader with 0 "
        "workers (benchmarks/torch_baselines.py); DDP adds DistributedSampler(shuffle=True, seed=0) and is "
        "started by torchrun.",
        "Allreduce per step, in training: symtrain times its `Allreduce` calls (one flat gradient buffer per "
        "step, in place); DDP times its gradient bucket (one bucket for this 0.8 MB model) from its hook to "
        "the future's completion. Both include waiting for the slower rank to arrive, so they grow when a "
        "rank is descheduled. Alone: the median of 200 back-to-back Allreduces of a buffer of the same size "
        "after the epoch (the transfer itself). Allreduce share = in-training Allreduce time / epoch time.",
        "peak memory (tree): the largest sum over the launcher, the ranks and their loader processes of "
        "Pss_Anon + Pss_Shmem (/proc/PID/smaps_rollup, sampled every 100 ms): proportional set size counts "
        "a page shared by k processes as 1/k in each, so the sum is the tree's real anonymous + "
        "shared-memory footprint. peak file pages: the same sum of Pss_File (shared libraries, plus the "
        "data a memmap reader has touched; the OS may evict these).",
        f"Time cap: a one-process PyTorch run stops {cfg.torch_cap_s:.0f} s after its first step (its "
        "rows/s is then over the part of the epoch it trained): with 2 threads on a loaded machine every "
        "parallel region waits for a descheduled thread and a full epoch took over half an hour.",
        "Load avg at start: the 1-minute load average when each repetition started. The machine has "
        f"{os.cpu_count()} cores and is shared: a load above the core count means the contenders shared "
        "the cores with other work, which hurts the 2-process contenders most.",
    ]
    t.notes += verdict(runs, rates, ok, best_torch)
    return t


def verdict(
    runs: dict[str, list[dict]], rates: dict[str, float], ok: dict[str, list[dict]], best_torch: str | None
) -> list[str]:
    """The targets, met or by how much missed, and what bounds the 2-rank rate (a per-step time budget)."""
    two = max((n for n in rates if n.startswith("symtrain/2")), key=lambda n: rates[n], default=None)
    one = rates.get("symtrain/1")
    if two is None or one is None:
        asked = [n for n in runs if n.startswith("symtrain/2")]
        why = "no 1-rank run succeeded" if two is not None else "no 2-rank contender was run"
        if two is None and asked:
            why = f"the 2-rank run failed ({runs[asked[0]][0].get('error', '?')[:200]})"
        return [f"**Targets.** not evaluated: {why}."]
    r1 = rates[two] / one

    def verdict_of(ratio: float, target: float) -> str:
        return (
            "met"
            if ratio >= target
            else f"missed by {(target - ratio) / target:.0%} ({ratio:.2f}x vs {target}x)"
        )

    notes = [
        f"**Targets.** {label(two)} vs 1 rank: {r1:.2f}x, target {TARGET_VS_ONE_RANK}x: "
        f"{verdict_of(r1, TARGET_VS_ONE_RANK)}."
    ]
    if best_torch:
        r2 = rates[two] / rates[best_torch]
        notes[0] += (
            f" vs the fastest PyTorch 2-core setup ({label(best_torch)}): {r2:.2f}x, "
            f"target {TARGET_VS_TORCH}x: {verdict_of(r2, TARGET_VS_TORCH)}."
        )
    # per-step budget: a rank's step time with 2 ranks vs the step time of one rank alone
    v2, v1 = ok[two], ok["symtrain/1"]
    t1 = BATCH / one  # s per step, one rank
    t2 = 2 * BATCH / rates[two]  # s per global step (each rank does BATCH rows)
    ar = median([r.get("allreduce_ms", 0.0) for r in v2]) / 1e3
    alone = median([r.get("allreduce_alone_ms", 0.0) for r in v2]) / 1e3
    w2 = median([r["wait_share"] for r in v2]) * t2
    w1 = median([r["wait_share"] for r in v1]) * t1
    compute2 = t2 - ar - w2
    load = median([r["load"] for r in v2])
    notes.append(
        f"**What bounds 2 ranks.** Per step: 1 rank {t1 * 1e3:.2f} ms (of which waiting for data "
        f"{w1 * 1e3:.2f} ms); 2 ranks {t2 * 1e3:.2f} ms = Allreduce {ar * 1e3:.2f} ms (the transfer alone "
        f"{alone * 1e3:.2f} ms, the rest waiting for the other rank) + waiting for data {w2 * 1e3:.2f} ms + "
        f"gradient, update and loop {compute2 * 1e3:.2f} ms. A perfect 2x needs the 2-rank step to take the "
        f"1-rank step's time: the Allreduce adds {ar / t1:.0%} of it, and the computation takes "
        f"{compute2 / max(t1 - w1, 1e-9):.2f}x the 1-rank step's computation (two ranks and their loader "
        f"processes share {os.cpu_count()} cores and the memory bandwidth; a rank that is descheduled shows "
        f"up as the other rank's wait in the Allreduce; load average {load:.1f} when the "
        "2-rank runs started, so other work took cores too)."
    )
    return notes


def run(quick: bool = False, **overrides) -> list[Table]:
    cfg = replace(QUICK if quick else Config(), **overrides)
    return [show(t) for t in bench(cfg)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=doc_summary(__doc__))
    ap.add_argument("--quick", action="store_true", help="small data, one repetition (a smoke run)")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--size-mib", type=int, help="dataset size in MiB")
    ap.add_argument(
        "--contenders", help=f"comma-separated subset of {','.join(CONTENDERS)} (also symtrain/2/thread)"
    )
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=int(common.BLAS_THREADS),
        help="BLAS threads per symtrain process, pinned before numpy loads; default 1",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--chunk-rows", type=int, default=Config().chunk_rows, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child, a.data, a.chunk_rows, a.out)
        return
    overrides: dict = {k: v for k, v in (("reps", a.reps), ("size", a.size_mib and a.size_mib * MiB)) if v}
    if a.contenders:
        overrides["contenders"] = tuple(c.strip() for c in a.contenders.split(",") if c.strip())
    run(a.quick, **overrides)


if __name__ == "__main__":
    main()
