"""End to end: one epoch of the same MLP on the same multi-GiB digits-derived dataset, symtrain vs PyTorch.

The model is 784-256-10 (ReLU, softmax cross-entropy), float32, batch 128, Adam(1e-3). Contenders:
  - symtrain, ``st.compile_step`` + ``st.fit`` over a ``ChunkStream(policy="shuffle")``, in Numba mode and
    in C ("CVM") mode, with the process loader (it overlaps a step that holds the GIL);
  - PyTorch on the CPU, the batched loader from benchmarks/loaders.py (one fancy-index read per batch,
    the best PyTorch loader there) with 0 and 2 workers.
Every run is a FRESH subprocess (so memory peaks are its own), with the same thread settings: BLAS
env vars (OPENBLAS/OMP/MKL_NUM_THREADS) pinned by ``benchmarks/__init__.py`` and
``torch.set_num_threads`` set to the same count. Reported per contender: rows/s over the epoch, time to
first step (from the child's start, imports and compile/warm-up included; the first repetition of a
symtrain mode uses an empty compile cache, the others the cache it left), the peak anonymous memory of
the process tree (sampled every 20 ms: sum of RssAnon over the process and its children + the largest
RssShmem), VmHWM and RssFile, and where the epoch's time went (waiting for data vs the rest).

    .venv/bin/python -m benchmarks.end_to_end               # full run (2 GiB, 3 repetitions; 5-15 min)
    .venv/bin/python -m benchmarks.end_to_end --quick       # smoke run
    .venv/bin/python -m benchmarks.end_to_end --profile     # also cProfile one run of each contender
    .venv/bin/python -m benchmarks.run --only end_to_end    # full run, rewrites benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import common
from benchmarks.common import ROOT, MiB, Table, median, proc_status, show
from symtrain.cli import doc_summary

T_START = time.perf_counter()
NAME = "end_to_end"
BATCH = 128
CONTENDERS = ("symtrain/NUMBA", "symtrain/CVM", "symtrain/NUMBA/thread", "symtrain/NUMBA/process/8192",
              "torch/batched/0", "torch/batched/2")
LABELS = {"symtrain/NUMBA": "symtrain, Numba mode, loader=\"process\"",
          "symtrain/CVM": "symtrain, C (CVM) mode, loader=\"process\"",
          "symtrain/NUMBA/thread": "symtrain, Numba mode, loader=\"thread\"",
          "symtrain/NUMBA/process/8192": "symtrain, Numba mode, loader=\"process\", chunk_rows=8192",
          "torch/batched/0": "PyTorch, batched loader, 0 workers",
          "torch/batched/2": "PyTorch, batched loader, 2 workers",
          "torch/tutorial/0": "PyTorch, tutorial loader, 0 workers"}


@dataclass(frozen=True)
class Config:
    size: int = 2 * 2**30          # dataset bytes
    chunk_rows: int = 16384
    reps: int = 3
    contenders: tuple[str, ...] = CONTENDERS
    profile: bool | None = None    # True: profile every contender; None: the best two when rows/s is missed
    profile_steps: int = 3000
    cold_cache: bool = True        # repetition 0 of a symtrain mode compiles into an empty cache


QUICK = Config(size=32 * MiB, chunk_rows=2048, reps=1, profile=False, profile_steps=200, cold_cache=False)


# ----- memory sampling (in the child) -------------------------------------------------------------------
class MemorySampler:
    """Samples the process tree's memory every ``interval`` s on a daemon thread; keeps the peaks."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._me = psutil.Process()
        self.peak_anon = self.peak_anon_main = self.peak_shmem = self.peak_file = 0
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-sampler")
        self._thread.start()

    def sample(self) -> None:
        main = proc_status()
        anon, shmem, file = main.get("RssAnon", 0), main.get("RssShmem", 0), main.get("RssFile", 0)
        for child in self._me.children(recursive=True):
            try:
                st = proc_status(child.pid)
            except OSError:  # exited between listing and reading
                continue
            anon += st.get("RssAnon", 0)
            shmem = max(shmem, st.get("RssShmem", 0))
            file = max(file, st.get("RssFile", 0))
        self.peak_file = max(self.peak_file, file)
        self.peak_anon_main = max(self.peak_anon_main, main.get("RssAnon", 0))
        self.peak_anon = max(self.peak_anon, anon)
        self.peak_shmem = max(self.peak_shmem, shmem)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        self.sample()
        end = proc_status()
        return {"peak_anon_tree": self.peak_anon, "peak_anon_main": self.peak_anon_main,
                "peak_shmem": self.peak_shmem, "vm_hwm": end["VmHWM"], "peak_file": self.peak_file}


# ----- the contenders (in the child) --------------------------------------------------------------------
def _profiled(fn, enabled: bool, out: dict):
    if not enabled:
        return fn()
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    result = prof.runcall(fn)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    total = sum(v[2] for v in stats.stats.values())  # tottime summed over functions = profiled time
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]
    out["profile"] = [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1],
                       "tottime_s": round(v[2], 3), "share": round(v[2] / total, 3) if total else 0}
                      for k, v in rows]
    out["profile_total_s"] = round(total, 3)
    return result


def child_symtrain(path: str, mode: str, chunk_rows: int, profile_steps: int | None,
                   loader: str = "process") -> dict:

    import symtrain as st
    from symtrain.backend import pt

    out: dict = {}
    stream = st.ChunkStream(path, batch_size=BATCH, chunk_rows=chunk_rows, policy="shuffle", seed=0,
                            loader=loader, name="e2e")
    x, y = stream.batch("x"), stream.batch("y")
    params = common.mlp_params()
    logp = common.mlp_log_probs(x, params)
    cost = -pt.mean(logp[pt.arange(BATCH), y])
    t0 = time.perf_counter()
    step = st.compile_step(cost, params, stream, st.optim.adam(1e-3), mode=mode)
    out["compile_s"] = time.perf_counter() - t0
    # time to first step: a real step on the first chunk (Numba JITs on its first call), then the epoch
    # proper starts from a fresh stream state; the extra step is one of ~10^4 and does not change rows/s.
    chunks = stream.epoch(0)
    chunk = next(chunks)
    first = step(chunk.indices[0])
    out["first_step_s"] = time.perf_counter() - T_START
    chunks.close()
    out["first_loss"] = first["loss"]
    wait0 = stream.wait_seconds
    if profile_steps:
        def partial() -> int:
            done = 0
            for c in stream.epoch(0):
                for i in c.indices:
                    step(i)
                    done += 1
                    if done >= profile_steps:
                        return done
            return done
        t0 = time.perf_counter()
        done = _profiled(partial, True, out)
        secs, rows = time.perf_counter() - t0, done * BATCH
        hist = None
    else:
        t0 = time.perf_counter()
        hist = st.fit(step, stream, epochs=1, progress=False, handle_signals=False,
                      checkpoint_every_epochs=None)
        secs, rows = time.perf_counter() - t0, stream.steps_per_epoch * BATCH
    out.update(rows=rows, epoch_s=secs, wait_s=stream.wait_seconds - wait0, linker=step.linker)
    if hist is not None and hist.epochs:
        out["mean_loss"] = float(hist.epochs[-1].get("loss", float("nan")))
    stream.close()
    return out


def child_torch(path: str, style: str, workers: int, profile_steps: int | None) -> dict:
    import torch

    from benchmarks.torch_baselines import make_loader, mlp, set_threads, train_epoch

    out: dict = {}
    set_threads(int(common.BLAS_THREADS))
    out["torch_threads"] = torch.get_num_threads()
    model = mlp(0)
    loader = make_loader(path, style, workers, BATCH)
    # warm-up: one step (first call of autograd/Adam), timed to first step like symtrain's compile
    train_epoch(model, make_loader(path, style, 0, BATCH), max_steps=1)
    out["first_step_s"] = time.perf_counter() - T_START
    t0 = time.perf_counter()
    if profile_steps:
        res = _profiled(lambda: train_epoch(model, loader, max_steps=profile_steps), True, out)
    else:
        res = train_epoch(model, loader)
    out.update(rows=res["rows"], epoch_s=time.perf_counter() - t0, wait_s=res["wait_s"],
               first_loss=res["first_loss"], mean_loss=res["mean_loss"])
    return out


def child(contender: str, path: str, chunk_rows: int, profile_steps: int | None) -> dict:
    """Runs in a fresh subprocess: train one epoch (or ``profile_steps`` under cProfile), report numbers."""
    mem = MemorySampler()
    kind, *rest = contender.split("/")
    if kind == "symtrain":  # symtrain/MODE[/LOADER[/CHUNK_ROWS]]
        loader = rest[1] if len(rest) > 1 else "process"
        chunk_rows = int(rest[2]) if len(rest) > 2 else chunk_rows
        out = child_symtrain(path, rest[0], chunk_rows, profile_steps, loader)
    else:
        out = child_torch(path, rest[0], int(rest[1]), profile_steps)
    out.update(mem.stop())
    out["contender"] = contender
    return out


# ----- the parent ----------------------------------------------------------------------------------------
def run_child(contender: str, path: Path, chunk_rows: int, compiledir: str | None = None,
              profile_steps: int | None = None) -> dict:
    """One fresh subprocess; ``compiledir`` points PyTensor's compile cache (C and Numba) somewhere else."""
    env = dict(os.environ)
    flags = [env.get("PYTENSOR_FLAGS", ""), "floatX=float32"]
    if compiledir:
        flags.append(f"base_compiledir={compiledir}")
    env["PYTENSOR_FLAGS"] = ",".join(f for f in flags if f)
    cmd = [sys.executable, "-m", "benchmarks.end_to_end", "--child", contender, "--data", str(path),
           "--chunk-rows", str(chunk_rows), "--blas-threads", common.BLAS_THREADS]
    if profile_steps:
        cmd += ["--profile-steps", str(profile_steps)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-3:]
        return {"contender": contender, "error": " | ".join(last)[-600:], "wall_s": time.perf_counter() - t0}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def _mib(b: float) -> str:
    return f"{b / MiB:.0f} MiB"


def _rows_s(r: float) -> str:
    return f"{r / 1e3:.1f} k"


def bench(cfg: Config) -> list[Table]:
    path = common.dataset(common.rows_for(cfg.size))
    from symtrain.storage import open_dataset

    with open_dataset(path) as ds:
        n_rows, nbytes = ds.rows, sum(ds.field(f).row_bytes for f in ds.names) * ds.rows
        files = [ds.field(f).path for f in ds.names]
    names = list(cfg.contenders)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="symtrain-e2e-cache-") as cache:
        for rep in range(cfg.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                common.warm(files)
                r = run_child(name, path, cfg.chunk_rows,
                              compiledir=f"{cache}/{name.replace('/', '-')}" if cfg.cold_cache else None)
                r["rep"] = rep
                runs[name].append(r)
                if "error" in r:
                    print(f"  rep {rep} {name}: FAILED {r['error']}", flush=True)
                else:
                    print(f"  rep {rep} {name:16s} {r['rows'] / r['epoch_s'] / 1e3:6.1f} k rows/s, first "
                          f"step {r['first_step_s']:.1f} s, peak anon {_mib(r['peak_anon_tree'])}",
                          flush=True)
        ok = {n: [r for r in v if "error" not in r] for n, v in runs.items()}
        rates = {n: median([r["rows"] / r["epoch_s"] for r in v]) for n, v in ok.items() if v}
        anon = {n: median([r["peak_anon_tree"] for r in v]) for n, v in ok.items() if v}
        best_torch = max((n for n in rates if n.startswith("torch")), key=lambda n: rates[n], default=None)
        best_sym = max((n for n in rates if n.startswith("symtrain")), key=lambda n: rates[n], default=None)
        missed = best_torch and best_sym and rates[best_sym] < rates[best_torch]
        profiles = {}
        if cfg.profile or (cfg.profile is None and missed):  # None: profile when the rows/s target is missed
            for name in (names if cfg.profile else [best_sym, best_torch]):
                print(f"  profiling {name} ({cfg.profile_steps} steps)", flush=True)
                profiles[name] = run_child(name, path, cfg.chunk_rows, profile_steps=cfg.profile_steps,
                                           compiledir=f"{cache}/{name.replace('/', '-')}" if cfg.cold_cache
                                           else None)
    table = Table(f"End to end: one epoch of the MLP ({n_rows} rows, {nbytes / 2**30:.2f} GiB, batch "
                  f"{BATCH}, {common.BLAS_THREADS} thread(s), warm page cache)",
                  ["contender", "rows/s (median)", f"x {best_torch or 'PyTorch'}", "epoch s (min-max)",
                   "waited for data", "time to first step: cold cache / warm", "peak anon (tree)",
                   "peak RssShmem",
                   "VmHWM", "peak RssFile", "loss: first step / epoch mean"])
    for n in names:
        v = ok[n]
        if not v:
            table.rows.append([LABELS.get(n, n), f"failed: {runs[n][0]['error'][:200]}"] + ["-"] * 9)
            continue
        first = [r["first_step_s"] for r in v]
        coldrun = cfg.cold_cache and n.startswith("symtrain")
        cold = next((r["first_step_s"] for r in v if r["rep"] == 0), None) if coldrun else None
        warm_first = [r["first_step_s"] for r in v if not (coldrun and r["rep"] == 0)] or first
        first_cell = (f"{cold:.1f} s / {median(warm_first):.1f} s" if cold is not None
                      else f"- / {median(warm_first):.1f} s")
        ratio = f"{rates[n] / rates[best_torch]:.2f}" if best_torch else "-"
        mean = v[-1].get("mean_loss")
        table.rows.append([
            LABELS.get(n, n), _rows_s(rates[n]), ratio, common.spread([r["epoch_s"] for r in v]),
            f"{median([r['wait_s'] / r['epoch_s'] for r in v]):.0%}", first_cell, _mib(anon[n]),
            _mib(median([r["peak_shmem"] for r in v])), _mib(median([r["vm_hwm"] for r in v])),
            _mib(median([r["peak_file"] for r in v])),
            f"{v[-1]['first_loss']:.3f} / {mean:.3f}" if isinstance(mean, float)
            else f"{v[-1]['first_loss']:.3f} / -"])
    sym = [n for n in rates if n.startswith("symtrain")]
    table.notes += [
        f"{cfg.reps} repetition(s) per contender, each a fresh subprocess, contenders alternating in a "
        "rotated order; files read once before each run (warm page cache). Threads: BLAS env vars and "
        f"torch.set_num_threads = {common.BLAS_THREADS}.",
        "symtrain: `st.compile_step(cost, params, stream, st.optim.adam(1e-3), mode=...)` + `st.fit(step, "
        f"stream, epochs=1, progress=False)`, ChunkStream(policy=\"shuffle\", chunk_rows={cfg.chunk_rows} "
        "unless stated, loader=\"process\" unless stated). "
        "PyTorch: nn.Sequential(Linear, ReLU, Linear), CrossEntropyLoss, torch.optim.Adam(1e-3), loader from "
        "benchmarks/torch_baselines.py.",
        "Time to first step: from the child's first line (imports, dataset open, graph build, compile or "
        "autograd warm-up, first fill) to the end of the first training step. Cold = an empty PyTensor/Numba "
        "compile cache (repetition 0); warm = the cache that run left.",
        "peak anon (tree): largest sum of RssAnon over the process and its children (DataLoader workers, the "
        "symtrain loader process), sampled every 20 ms; the process loader's staging buffers are shared "
        "memory (peak RssShmem column). VmHWM (the main process's peak RSS) also counts file pages mapped by "
        "memmaps; peak RssFile is the largest process's mapped file pages (shared libraries ~100 MiB, plus "
        "the data a memmap reader has touched), which the OS may evict but cgroup limits count.",
    ]
    if sym and best_torch:
        r_rate = rates[best_sym] / rates[best_torch]
        shm = {n: median([r["peak_shmem"] for r in ok[n]]) for n in rates}
        mem = {n: anon[n] + shm[n] for n in rates}
        torch_names = [n for n in rates if n.startswith("torch")]
        lean_sym = min(sym, key=lambda n: mem[n])
        lean_torch = min(torch_names, key=lambda n: mem[n])
        lean_gap = mem[lean_sym] - mem[lean_torch]
        table.notes.append(
            f"**Targets.** rows/s: {LABELS[best_sym]} at {r_rate:.2f}x {LABELS[best_torch]}, the fastest "
            f"PyTorch contender ({'met' if r_rate >= 1 else f'missed by {1 - r_rate:.0%}'}). Anonymous "
            "memory (RssAnon of the tree + shared-memory staging): "
            + ", ".join(f"{LABELS.get(n, n)} {_mib(mem[n])}" for n in names if n in mem)
            + f". Leanest symtrain ({LABELS[lean_sym]}) vs leanest PyTorch ({LABELS[lean_torch]}): "
            f"{_mib(mem[lean_sym])} vs {_mib(mem[lean_torch])} "
            f"({'met' if lean_gap <= 0 else f'missed by {_mib(lean_gap)}'}); "
            f"fastest symtrain vs fastest PyTorch: {_mib(mem[best_sym])} vs {_mib(mem[best_torch])}.")
    tables = [table]
    if profiles:
        tables.append(_profile_table(profiles, cfg))
    return tables


def _profile_table(profiles: dict[str, dict], cfg: Config) -> Table:
    t = Table(f"Where the time goes: cProfile of {cfg.profile_steps} training steps per contender (top "
              "functions by own time)", ["contender", "rows/s under the profiler", "function", "calls",
                                         "own time",
                               "share"])
    for name, p in profiles.items():
        if "error" in p:
            t.rows.append([LABELS.get(name, name), f"failed: {p['error'][:200]}", "", "", "", ""])
            continue
        for k, f in enumerate(p.get("profile", [])[:6]):
            t.rows.append([LABELS.get(name, name) if k == 0 else "",
                           _rows_s(p["rows"] / p["epoch_s"]) if k == 0 else "",
                           f"`{f['function']}`", str(f["calls"]), f"{f['tottime_s']:.2f} s",
                           f"{f['share']:.0%}"])
    t.notes.append("A compiled PyTensor function shows up as one entry (its whole call is native code); "
                   "torch's forward/backward/Adam show up as their C++-backed calls. cProfile adds overhead "
                   "to each Python-level call, so rows/s here are lower than in the table above.")
    return t


def run(quick: bool = False, **overrides) -> list[Table]:
    cfg = replace(QUICK if quick else Config(), **overrides)
    return [show(t) for t in bench(cfg)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=doc_summary(__doc__))
    ap.add_argument("--quick", action="store_true", help="small data, one repetition (a smoke run)")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--size-mib", type=int, help="dataset size in MiB")
    ap.add_argument("--contenders",
                    help=f"comma-separated subset of {','.join(CONTENDERS)} (also torch/tutorial/0)")
    ap.add_argument("--profile", action="store_true", help="also profile each contender with cProfile")
    ap.add_argument("--blas-threads", type=int, default=int(common.BLAS_THREADS),
                    help="threads (BLAS and torch intra-op), pinned before numpy loads; default 1")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--chunk-rows", type=int, default=Config().chunk_rows, help=argparse.SUPPRESS)
    ap.add_argument("--profile-steps", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.data, a.chunk_rows, a.profile_steps), default=float))
        return
    overrides: dict = {k: v for k, v in (("reps", a.reps), ("size", a.size_mib and a.size_mib * MiB)) if v}
    if a.contenders:
        overrides["contenders"] = tuple(c.strip() for c in a.contenders.split(",") if c.strip())
    if a.profile:
        overrides["profile"] = True
    run(a.quick, **overrides)


if __name__ == "__main__":
    main()
