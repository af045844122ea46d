"""What streaming costs: the same compiled step over data held whole vs streamed in chunks; the loader
alone (cached and uncached) next to plain sequential reads and memcpy; peak memory for two dataset sizes.

1. Training (warm page cache): one compiled MLP step (784-256-10, float32, batch 128, Adam written
   inline with ``backend.grad``, default Numba mode) is compiled once and reused by every contender by
   swapping its buffers' values: (a) the whole training set in one shared variable, (b) a ChunkStream
   with ``loader="thread"`` and (c) with ``loader="process"`` (both ``policy="shuffle"``). Contenders
   alternate, in a rotated order, for several repetitions; medians are reported with the ratio to (a).
2. Loader alone (no model): ChunkStream epochs with both loaders and both policies, warm and cold
   (pages evicted with fsync + ``posix_fadvise(DONTNEED)``), measured in steady state (from the first
   chunk handed out to the end), next to a sequential ``readinto`` of the files and memcpy bandwidth.
3. Memory: in a fresh subprocess per dataset size and loader, stream a whole epoch through the device
   buffers (calling the compiled step once per chunk) and record peak ``RssAnon`` (sampled per chunk),
   ``VmHWM`` and ``RssFile``, plus the worker's peak RSS for the process loader.

    .venv/bin/python -m benchmarks.stream_overhead            # full run (several minutes)
    .venv/bin/python -m benchmarks.stream_overhead --quick    # smoke run (small data, 2 repetitions)
    .venv/bin/python -m benchmarks.run --only stream_overhead # same, and rewrites benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.common import ROOT, MiB, Table, median, proc_status, rate, show
from symtrain.cli import doc_summary

os.environ["PYTENSOR_FLAGS"] = ",".join(f for f in (os.environ.get("PYTENSOR_FLAGS", ""), "floatX=float32")
                                        if f)

NAME = "stream_overhead"
BATCH = 128
LOADERS = ("thread", "process")
PARTS = ("train", "loader", "memory")


@dataclass(frozen=True)
class Config:
    chunk_rows: int = 16384
    train_rows: int = 65536         # 4 buffers of 16384 rows, 512 steps per epoch
    reps: int = 11                  # timed epochs per training contender (short and many: the box is noisy)
    loader_reps: int = 3
    sizes: tuple[int, ...] = (2**30, 4 * 2**30)  # dataset sizes for the memory comparison (bytes)
    memcpy_bytes: int = 256 * MiB
    mode: str = "NUMBA"
    memory_model: bool = True      # call the compiled step in the memory subprocesses


QUICK = Config(chunk_rows=4096, train_rows=16384, reps=2, loader_reps=1, sizes=(64 * MiB, 256 * MiB),
               memcpy_bytes=64 * MiB)


# ----- the model ---------------------------------------------------------------------------------------
def build_step(chunk_rows: int, mode: str):
    """The MLP train step over two buffer shared variables; returns (step, bx, by)."""
    from symtrain.backend import function, grad, pt, shared

    bx = shared(np.zeros((chunk_rows, 784), np.float32), name="bench/x", borrow=True)
    by = shared(np.zeros(chunk_rows, np.int64), name="bench/y", borrow=True)
    index = pt.lscalar("index")
    x, y = bx[index * BATCH:(index + 1) * BATCH], by[index * BATCH:(index + 1) * BATCH]

    params = common.mlp_params()
    logp = common.mlp_log_probs(x, params)
    cost = -pt.mean(logp[pt.arange(BATCH), y])
    grads = grad(cost, params)
    lr, beta1, beta2, eps = np.float32(1e-3), np.float32(0.9), np.float32(0.999), np.float32(1e-8)
    t = shared(np.float32(0), name="adam/t")
    t1 = t + np.float32(1)
    step_size = lr * pt.sqrt(1 - beta2 ** t1) / (1 - beta1 ** t1)
    updates = [(t, t1)]
    for p, g in zip(params, grads):
        m = shared(np.zeros_like(p.get_value()), name=f"adam/m/{p.name}")
        v = shared(np.zeros_like(p.get_value()), name=f"adam/v/{p.name}")
        m1 = beta1 * m + (1 - beta1) * g
        v1 = beta2 * v + (1 - beta2) * g * g
        updates += [(m, m1), (v, v1), (p, p - step_size * m1 / (pt.sqrt(v1) + eps))]
    step = function([index], cost, updates=updates, mode=mode)
    return step, bx, by


def _read_rows(ds, rows: int) -> dict[str, np.ndarray]:
    """Owned copies of the first ``rows`` rows of every field (read with preadv, no memmap)."""
    from symtrain.stream.load import Load, fill, sources_of

    sources = sources_of(ds)
    out = {name: src.empty(rows) for name, src in sources.items()}
    fill(sources, Load(((ds.start, ds.start + rows),), None, rows), out)
    return out


def _stream(ds, loader: str, policy: str = "shuffle", *, chunk_rows: int):
    from symtrain.stream.chunkstream import ChunkStream

    return ChunkStream(ds, BATCH, chunk_rows, policy=policy, seed=0, loader=loader, name=f"bench-{loader}")


# ----- 1. training -------------------------------------------------------------------------------------
def _epoch_in_memory(step, bx, by, data: dict[str, np.ndarray]) -> tuple[float, int, float]:
    bx.set_value(data["x"], borrow=True)
    by.set_value(data["y"], borrow=True)
    n = len(data["y"]) // BATCH
    t0 = time.perf_counter()
    for i in range(n):
        step(i)
    return time.perf_counter() - t0, n, 0.0


def _epoch_streamed(step, bx, by, stream, e: int) -> tuple[float, int, float]:
    bufx, bufy = stream.buffers["x"], stream.buffers["y"]
    waited0, steps = stream.wait_seconds, 0
    t0 = time.perf_counter()
    for chunk in stream.epoch(e):
        bx.set_value(bufx.get_value(borrow=True), borrow=True)  # alias the stream's device buffers: no copy
        by.set_value(bufy.get_value(borrow=True), borrow=True)
        for i in chunk.indices:
            step(i)
        steps += len(chunk.indices)
    return time.perf_counter() - t0, steps, stream.wait_seconds - waited0


def bench_training(cfg: Config, path: Path) -> Table:
    from symtrain.storage import open_dataset

    ds = open_dataset(path).split(0, cfg.train_rows)
    common.warm([ds.field(f).path for f in ds.names])
    data = _read_rows(ds, ds.rows)
    t0 = time.perf_counter()
    step, bx, by = build_step(cfg.chunk_rows, cfg.mode)
    t_function = time.perf_counter() - t0
    bx.set_value(data["x"][:cfg.chunk_rows].copy(), borrow=True)
    by.set_value(data["y"][:cfg.chunk_rows].copy(), borrow=True)
    t_first = common.timed(lambda: step(0))
    streams = {loader: _stream(ds, loader, chunk_rows=cfg.chunk_rows) for loader in LOADERS}
    names = ["in-memory", *LOADERS]
    epochs = {name: 0 for name in LOADERS}

    def run(name: str) -> tuple[float, int, float]:
        if name == "in-memory":
            return _epoch_in_memory(step, bx, by, data)
        e, epochs[name] = epochs[name], epochs[name] + 1
        return _epoch_streamed(step, bx, by, streams[name], e)

    times: dict[str, list[tuple[float, int, float]]] = {n: [] for n in names}
    try:
        for name in names:  # warm-up: loader start, first fills, caches
            run(name)
        for rep in range(cfg.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                times[name].append(run(name))
                print(f"  train rep {rep} {name:9s} {times[name][-1][0]:.2f} s", flush=True)
    finally:
        for s in streams.values():
            s.close()
    base = median([t for t, _, _ in times["in-memory"]])
    base_min = min(t for t, _, _ in times["in-memory"])
    table = Table(f"Training epoch: in-memory vs streamed ({cfg.train_rows} rows, {cfg.mode} mode, warm "
                  "cache)",
                  ["contender", "epoch time, median (min-max)", "per step", "rows/s", "ratio to in-memory",
                   "ratio of minima", "waited for data (median)"])
    for name in names:
        secs = [t for t, _, _ in times[name]]
        steps = times[name][0][1]
        med = median(secs)
        label = "in-memory (one shared variable)" if name == "in-memory" else f"streamed, loader=\"{name}\""
        table.rows.append([label, common.spread(secs), f"{med / steps * 1e3:.2f} ms",
                           rate(steps * BATCH, 0, med)[0], f"{med / base:.3f}", f"{min(secs) / base_min:.3f}",
                           "-" if name == "in-memory"
                           else f"{median([w for _, _, w in times[name]]) * 1e3:.0f} ms"])
    table.notes += [
        f"MLP 784-256-10 (ReLU, log-softmax NLL), batch {BATCH}, float32, Adam written inline; compiled once "
        f"(`function()` {t_function:.1f} s, first call incl. JIT {t_first:.1f} s) and reused by every "
        "contender.",
        f"Streamed: ChunkStream(policy=\"shuffle\", chunk_rows={cfg.chunk_rows}) over the same rows; the "
        "step's buffers alias the stream's device buffers per chunk (`set_value(borrow=True)`, no copy).",
        f"{cfg.reps} timed epochs per contender after one warm-up epoch each, contenders alternating in a "
        "rotated order; target: streamed <= 1.05x in-memory. The ratio of minima compares the least "
        "disturbed epochs.",
    ]
    return table


# ----- 2. loader alone ---------------------------------------------------------------------------------
def _sequential_readinto(files: Sequence[Path], block: int) -> float:
    buf = np.empty(block, np.uint8)
    view = memoryview(buf)
    t0 = time.perf_counter()
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(view):
                pass
    return time.perf_counter() - t0


def _stream_pass(stream, e: int) -> tuple[int, float]:
    """Rows and seconds from the first chunk handed out to the end of the epoch (steady state)."""
    chunks = stream.epoch(e)
    next(chunks)
    rows, t0 = 0, time.perf_counter()
    for chunk in chunks:
        rows += chunk.n_valid
    return rows, time.perf_counter() - t0


def _memcpy(nbytes: int, reps: int = 5) -> float:
    src = np.ones(nbytes // 8, np.float64)
    dst = np.zeros_like(src)
    np.copyto(dst, src)
    return median([common.timed(lambda: np.copyto(dst, src)) for _ in range(reps)])


def bench_loader(cfg: Config, path: Path) -> Table:
    from symtrain.storage import open_dataset

    ds = open_dataset(path)
    files = [ds.field(f).path for f in ds.names]
    row_bytes = sum(ds.field(f).row_bytes for f in ds.names)
    total = ds.rows * row_bytes
    contenders = ["readinto"] + [f"{loader}/{policy}" for loader in LOADERS
                                 for policy in ("sequential", "shuffle")]
    results: dict[tuple[str, str], list[tuple[int, float]]] = {}
    evicted: list[float] = []
    for rep in range(cfg.loader_reps):
        for cache in ("warm", "cold"):
            names = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
            if cache == "warm":
                common.warm(files)
            for name in names:
                stream = None
                if name != "readinto":  # a fresh stream per pass: no speculative fill of an earlier one
                    stream = _stream(ds, *name.split("/"), chunk_rows=cfg.chunk_rows)
                try:
                    if cache == "cold":
                        common.evict(files)
                        evicted.append(max(common.cached_fraction(f) for f in files))
                    if stream is None:
                        rows, secs = ds.rows, _sequential_readinto(files, cfg.chunk_rows * 784 * 4)
                    else:
                        rows, secs = _stream_pass(stream, 0)
                finally:
                    if stream is not None:
                        stream.close()
                results.setdefault((name, cache), []).append((rows, secs))
                print(f"  loader rep {rep} {cache} {name:18s} {rows / secs / 1e3:8.0f} k rows/s", flush=True)
    table = Table(f"Loader alone, no model ({ds.rows} rows, {total / 2**30:.2f} GiB, "
                  f"chunk_rows={cfg.chunk_rows})",
                  ["reader", "warm rows/s", "warm GB/s", "cold rows/s", "cold GB/s"])
    labels = {"readinto": "sequential `readinto` of the files (ceiling for one reader)"}
    for name in contenders:
        label = labels.get(name) or "ChunkStream loader=\"{}\", policy=\"{}\"".format(*name.split("/"))
        cells = [label]
        for cache in ("warm", "cold"):
            runs = results[(name, cache)]
            secs = median([s / r for r, s in runs])  # seconds per row
            cells += list(rate(1, row_bytes, secs))
        table.rows.append(cells)
    copy = _memcpy(cfg.memcpy_bytes)
    table.rows.append([f"memcpy (`np.copyto`, {cfg.memcpy_bytes // MiB} MiB, in RAM)",
                       *rate(cfg.memcpy_bytes / row_bytes, cfg.memcpy_bytes, copy), "-", "-"])
    table.notes += [
        f"Rows of {row_bytes} B (x float32[784] + y int64). Medians of {cfg.loader_reps} pass(es); streams "
        "are timed in steady state, from the first chunk handed out to the end of the epoch.",
        "Cold: every file fsynced and evicted with `posix_fadvise(POSIX_FADV_DONTNEED)` right before each "
        f"pass (largest fraction still cached after eviction: {max(evicted, default=0):.1%}).",
        "`shuffle` reads blocks contiguously and gathers the rows into the staging buffer in a random order "
        "(`np.take(..., mode='clip')`); `sequential` reads straight into it.",
    ]
    return table


# ----- 3. memory ---------------------------------------------------------------------------------------
def memory_child(path: str, loader: str, chunk_rows: int, mode: str, model: bool) -> dict:
    """Runs in a fresh subprocess: stream one epoch and report peak memory (bytes)."""
    from symtrain.storage import open_dataset

    before = proc_status()
    ds = open_dataset(path)
    step = None
    if model:
        step, bx, by = build_step(chunk_rows, mode)
    stream = _stream(ds, loader, chunk_rows=chunk_rows)
    peak_anon, worker_peak, chunks = 0, 0, 0
    try:
        for chunk in stream.epoch(0):
            if step is not None:
                bx.set_value(stream.buffers["x"].get_value(borrow=True), borrow=True)
                by.set_value(stream.buffers["y"].get_value(borrow=True), borrow=True)
                step(chunk.indices[0])
            chunks += 1
            peak_anon = max(peak_anon, proc_status()["RssAnon"])
            pid = getattr(stream._box.get("loader"), "pid", None)
            if pid is not None:
                worker_peak = max(worker_peak, proc_status(pid).get("VmHWM", 0))
        end = proc_status()
    finally:
        stream.close()
    return {"rows": ds.rows, "chunks": chunks, "peak_anon": peak_anon, "hwm": end["VmHWM"],
            "rss_file": end.get("RssFile", 0), "rss_shmem": end.get("RssShmem", 0),
            "start_anon": before["RssAnon"], "worker_hwm": worker_peak}


def bench_memory(cfg: Config, paths: dict[int, Path]) -> Table:
    out: dict[tuple[int, str], dict] = {}
    for loader in LOADERS:
        for size, path in paths.items():
            cmd = [sys.executable, "-m", "benchmarks.stream_overhead", "--memory-child", str(path),
                   "--loader",
                   loader, "--chunk-rows", str(cfg.chunk_rows), "--mode", cfg.mode]
            if not cfg.memory_model:
                cmd.append("--no-model")
            run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"memory subprocess failed:\n{run.stderr[-3000:]}")
            out[(size, loader)] = json.loads(run.stdout.strip().splitlines()[-1])
            r = out[(size, loader)]
            print(f"  memory {size / 2**30:.2f} GiB {loader}: peak RssAnon {r['peak_anon'] / MiB:.0f} MiB",
                  flush=True)
    small = min(paths)
    table = Table("Peak memory vs dataset size (one streamed epoch, fresh process each)",
                  ["dataset", "loader", "peak RssAnon", "VmHWM", "RssFile at end", "worker VmHWM",
                   "peak RssAnon - smaller dataset's"])
    for loader in LOADERS:
        for size in paths:
            r = out[(size, loader)]
            diff = r["peak_anon"] - out[(small, loader)]["peak_anon"]
            table.rows.append([f"{size / 2**30:.2f} GiB ({r['rows']} rows)", loader,
                               f"{r['peak_anon'] / MiB:.0f} MiB",
                               f"{r['hwm'] / MiB:.0f} MiB", f"{r['rss_file'] / MiB:.0f} MiB",
                               f"{r['worker_hwm'] / MiB:.0f} MiB" if r["worker_hwm"] else "-",
                               "-" if size == small else f"{diff / MiB:+.1f} MiB"])
    what = "streams every chunk through the device buffers and calls the compiled step once per chunk" \
        if cfg.memory_model else "streams every chunk through the device buffers (no model)"
    table.notes += [
        f"Each subprocess opens the dataset, builds the ChunkStream (chunk_rows={cfg.chunk_rows}, shuffle) "
        f"and {what}; RssAnon is sampled after every chunk. Target: the larger dataset within 32 MiB of the "
        "smaller.",
        "The process loader's staging sets are shared memory (RssShmem, counted in VmHWM, not in RssAnon); "
        "the worker's own peak RSS is in the worker column.",
    ]
    return table


# ----- entry points --------------------------------------------------------------------------------------
def run(quick: bool = False, parts: Sequence[str] = PARTS, **overrides) -> list[Table]:
    """Run the selected parts and return their tables (also printed as they complete)."""
    cfg = replace(QUICK if quick else Config(), **overrides)
    sizes = sorted(cfg.sizes)
    paths = {size: common.dataset(common.rows_for(size)) for size in sizes}
    tables = []
    if "train" in parts:
        from symtrain.storage import open_dataset

        train_path = next((p for s, p in paths.items() if open_dataset(p).rows >= cfg.train_rows), None)
        if train_path is None:
            train_path = common.dataset(cfg.train_rows)
        tables.append(show(bench_training(cfg, train_path)))
    if "loader" in parts:
        tables.append(show(bench_loader(cfg, paths[sizes[0]])))
    if "memory" in parts:
        tables.append(show(bench_memory(cfg, paths)))
    return tables


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=doc_summary(__doc__),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data, few repetitions (a smoke run)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--mode", default="NUMBA", help="PyTensor mode of the compiled step (default NUMBA)")
    ap.add_argument("--reps", type=int, help="timed epochs per training contender")
    ap.add_argument("--train-rows", type=int, help="rows per training epoch")
    ap.add_argument("--chunk-rows", type=int, help="rows per device buffer")
    ap.add_argument("--blas-threads", type=int, default=int(common.BLAS_THREADS),
                    help="BLAS threads (pinned via the environment before numpy loads; default 1)")
    ap.add_argument("--no-model", action="store_true", help="memory part: stream without calling the step")
    ap.add_argument("--memory-child", metavar="DATASET", help=argparse.SUPPRESS)
    ap.add_argument("--loader", default="thread", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.memory_child:
        res = memory_child(a.memory_child, a.loader, a.chunk_rows or Config().chunk_rows, a.mode,
                           not a.no_model)
        print(json.dumps(res))
        return
    overrides = {k: v for k, v in (("reps", a.reps), ("train_rows", a.train_rows),
                                   ("chunk_rows", a.chunk_rows))
                 if v is not None}
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"--parts: unknown {bad}; choose from {PARTS}")
    run(a.quick, parts, mode=a.mode, memory_model=not a.no_model, **overrides)


if __name__ == "__main__":
    main()
