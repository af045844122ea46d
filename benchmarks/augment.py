"""Augmentation in the loader: symtrain with 1 and 2 workers vs PyTorch DataLoader with 0 and 2 workers.

Same digits-derived data (x float32[784], y int64), same numpy augmentation for every contender
(``augment_rows``: random crop of a 2-pixel-padded 28x28 image, horizontal flip of half the rows,
Gaussian noise), same batch size. Contenders alternate in a rotated order for ``reps`` repetitions;
medians; the load average is recorded before and after each table (the machine is shared).

1. Loader alone: rows/s a training loop receives (symtrain: rows installed in the device buffers;
   PyTorch: batches out of the iterator). Also the plain shuffled fill (no augmentation) with the
   single-copy fill against the previous two-pass fill (``two_pass_fill`` below), and RssFile.
2. End to end with the benchmark MLP (784-256-10, Adam; symtrain Numba mode): rows/s and the share of
   the epoch the step waited for data.

    .venv/bin/python -m benchmarks.augment            # full run (a few minutes)
    .venv/bin/python -m benchmarks.augment --quick    # smoke run
    .venv/bin/python -m benchmarks.run --only augment # same, and rewrites benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.common import MiB, Table, median, show
from symtrain.cli import doc_summary

if "pytensor" not in sys.modules:  # the benchmark MLP is float32 end to end, as in the other benchmarks
    _flags = (os.environ.get("PYTENSOR_FLAGS"), "floatX=float32")
    os.environ["PYTENSOR_FLAGS"] = ",".join(f for f in _flags if f)

NAME = "augment"
BATCH = 128
PAD = 2
SIDE = 28


@dataclass(frozen=True)
class Config:
    size: int = 96 * MiB           # dataset bytes
    chunk_rows: int = 8192
    reps: int = 3
    cap_s: float = 20.0            # a pass stops after this many seconds (rows/s counts the rows it did)
    min_s: float = 3.0             # a loader-alone pass runs whole epochs for at least this long


QUICK = Config(size=16 * MiB, chunk_rows=2048, reps=1, cap_s=4.0, min_s=0.5)


# ----- the augmentation (one definition for every contender) -------------------------------------------
def augment_rows(x: np.ndarray, rng: np.random.Generator) -> None:
    """In place on rows of 784 floats: random 28x28 crop of the 32x32 zero-padded image, flip half, noise."""
    n = len(x)
    if n == 0:
        return
    img = x.reshape(n, SIDE, SIDE)
    padded = np.zeros((n, SIDE + 2 * PAD, SIDE + 2 * PAD), dtype=x.dtype)
    padded[:, PAD:PAD + SIDE, PAD:PAD + SIDE] = img
    dy, dx = rng.integers(0, 2 * PAD + 1, (2, n))
    r = dy[:, None] + np.arange(SIDE)
    c = dx[:, None] + np.arange(SIDE)
    flip = rng.random(n) < 0.5
    c[flip] = c[flip, ::-1]
    img[...] = padded[np.arange(n)[:, None, None], r[:, :, None], c[:, None, :]]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.05)


def symtrain_augment(arrays: Mapping[str, np.ndarray], ctx) -> None:
    """The ChunkStream transform: the context's generator is a pure function of the plan."""
    augment_rows(arrays["x"], ctx.rng)


def waiting_transform(arrays: Mapping[str, np.ndarray], ctx) -> None:
    """A synthetic transform that needs no CPU: 2 ms per 128 rows of waiting (like remote I/O or a GPU
    call), releasing the GIL. It shows the worker structure's speed-up when the CPU is not the limit."""
    time.sleep(0.002 * len(arrays["x"]) / 128)


def torch_dataset(path: str | Path, augment: bool):
    """A batch-per-``__getitem__`` PyTorch dataset applying ``augment_rows`` (seeded per batch)."""
    from benchmarks.torch_baselines import BatchReadDataset

    global AugmentedBatches
    if AugmentedBatches is None:
        import torch

        class _AugmentedBatches(BatchReadDataset):
            augment = True

            def __getitem__(self, idx: list[int]):
                x, y = self._maps()
                rows = np.sort(np.asarray(idx, dtype=np.int64))
                xb = x[rows]
                if self.augment:
                    augment_rows(xb, np.random.default_rng([0, int(rows[0]), len(rows)]))
                return torch.from_numpy(xb), torch.from_numpy(y[rows])

        _AugmentedBatches.__qualname__ = _AugmentedBatches.__name__ = "AugmentedBatches"
        AugmentedBatches = _AugmentedBatches
    ds = AugmentedBatches(path)
    ds.augment = augment
    return ds


AugmentedBatches = None  # defined on first use (imports torch), module-level so workers can unpickle it


def torch_loader(path: str | Path, workers: int, augment: bool = True):
    from torch import Generator
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    ds = torch_dataset(path, augment)
    sampler = BatchSampler(RandomSampler(ds, generator=Generator().manual_seed(0)), BATCH, drop_last=True)
    return DataLoader(ds, sampler=sampler, batch_size=None, num_workers=workers,
                      persistent_workers=workers > 0)


# ----- the previous fill, kept as the baseline of the single-copy fill -----------------------------------
def two_pass_fill(sources, load, out, scratch=None, lo=0, hi=None, zero_tail=True) -> None:
    """The fill before the single-copy change: ``os.preadv`` the blocks into scratch, then gather."""
    from symtrain.stream.load import _read_ranges, _sub_ranges

    n = load.n_valid
    hi = n if hi is None else hi
    scratch = {} if scratch is None else scratch
    for name, src in sources.items():
        dst = out[name]
        if load.perm is None:
            _read_ranges(src, _sub_ranges(load.ranges, lo, hi), dst[lo:hi])
        else:
            tmp = scratch.get(name)
            if tmp is None or tmp.shape[0] < n:
                tmp = scratch[name] = src.empty(n)
            _read_ranges(src, load.ranges, tmp[:n])
            np.take(tmp[:n], load.perm[lo:hi], axis=0, out=dst[lo:hi], mode="clip")
        if zero_tail and dst.shape[0] > n:
            dst[n:] = 0


# ----- loader alone ----------------------------------------------------------------------------------------
def _passes(epoch: Callable[[int], int], cfg: Config) -> tuple[int, float]:
    """Epoch 0 untimed (start-up, first touch of the staging memory), then whole epochs 1, 2, ... until
    ``min_s`` seconds have passed (or ``cap_s``): (rows, seconds) of the timed epochs."""
    epoch(0)
    rows, t0, e = 0, time.perf_counter(), 1
    while time.perf_counter() - t0 < cfg.min_s:
        rows += epoch(e)
        e += 1
        if time.perf_counter() - t0 > cfg.cap_s:
            break
    return rows, time.perf_counter() - t0


def _symtrain_pass(path: Path, cfg: Config, workers: int, loader: str, augment: bool | Callable,
                   fill: Callable | None = None) -> tuple[int, float, int]:
    """(rows, seconds, peak RssFile growth) of a fresh stream's steady state (see ``_passes``)."""
    import symtrain.stream.load as load_mod
    from symtrain.stream import ChunkStream

    saved = load_mod.fill
    if fill is not None:
        load_mod.fill = fill
    try:
        with ChunkStream(path, BATCH, cfg.chunk_rows, seed=0, loader=loader, workers=workers,
                         transform=(augment if callable(augment)
                                    else symtrain_augment if augment else None)) as s:
            rss0 = common.proc_status()["RssFile"]
            peak = [rss0]

            def epoch(e: int) -> int:
                rows = 0
                for chunk in s.epoch(e):
                    rows += chunk.n_valid
                    peak[0] = max(peak[0], common.proc_status()["RssFile"])
                return rows

            rows, secs = _passes(epoch, cfg)
            return rows, secs, peak[0] - rss0
    finally:
        load_mod.fill = saved


def _torch_pass(path: Path, cfg: Config, workers: int, augment: bool) -> tuple[int, float, int]:
    loader = torch_loader(path, workers, augment)
    rss0 = common.proc_status()["RssFile"]

    def epoch(e: int) -> int:
        return sum(x.shape[0] for x, _y in loader)

    rows, secs = _passes(epoch, cfg)
    rss = common.proc_status()["RssFile"] - rss0
    return rows, secs, rss


LOADER_ALONE = {
    "symtrain, 1 worker (thread)": lambda p, c: _symtrain_pass(p, c, 1, "thread", True),
    "symtrain, 2 workers (thread)": lambda p, c: _symtrain_pass(p, c, 2, "thread", True),
    "symtrain, 2 workers (process)": lambda p, c: _symtrain_pass(p, c, 2, "process", True),
    "PyTorch DataLoader, 0 workers": lambda p, c: _torch_pass(p, c, 0, True),
    "PyTorch DataLoader, 2 workers": lambda p, c: _torch_pass(p, c, 2, True),
    "waiting transform: symtrain, 1 worker (thread)": lambda p, c: _symtrain_pass(p, c, 1, "thread",
                                                                                  waiting_transform),
    "waiting transform: symtrain, 2 workers (thread)": lambda p, c: _symtrain_pass(p, c, 2, "thread",
                                                                                   waiting_transform),
    "waiting transform: symtrain, 2 workers (process)": lambda p, c: _symtrain_pass(p, c, 2, "process",
                                                                                    waiting_transform),
    "no augmentation: symtrain, single-copy fill (now)": lambda p, c: _symtrain_pass(p, c, 1, "thread",
                                                                                     False),
    "no augmentation: symtrain, two-pass fill (before)": lambda p, c: _symtrain_pass(
        p, c, 1, "thread", False, two_pass_fill),
}


def _rate(rows: float, secs: float) -> str:
    r = rows / secs if secs > 0 else 0.0
    return f"{r / 1e3:.1f} k"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its live descendants (loader workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _alternate(names: list[str], reps: int, run_one: Callable[[str], dict]) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            c0 = cpu_seconds()
            res = run_one(n)
            res["cpu"] = cpu_seconds() - c0  # workers that exit within the pass are not counted
            results[n].append(res)
            print(f"  {n}: {results[n][-1]}", flush=True)
    return results


def loader_alone(cfg: Config, path: Path) -> Table:
    common.warm([path / "x.npy", path / "y.npy"])
    load0 = common.machine()["load average"]
    res = _alternate(list(LOADER_ALONE), cfg.reps, lambda n: dict(zip(("rows", "s", "rssfile"),
                                                                       LOADER_ALONE[n](path, cfg))))
    rates = {n: median([r["rows"] / r["s"] for r in rs]) for n, rs in res.items()}
    best_torch = max(v for n, v in rates.items() if n.startswith("PyTorch"))
    table = Table("Loader alone, warm page cache: rows/s delivered, with the same augmentation",
                  ["contender", "rows/s (median)", "x best PyTorch", "min-max rows/s", "peak RssFile growth"])
    for n, rs in res.items():
        v = [r["rows"] / r["s"] for r in rs]
        table.rows.append([n, _rate(rates[n], 1), f"{rates[n] / best_torch:.2f}",
                           f"{min(v) / 1e3:.1f}-{max(v) / 1e3:.1f} k",
                           f"{max(r['rssfile'] for r in rs) / MiB:.1f} MiB"])
    now = rates["no augmentation: symtrain, single-copy fill (now)"]
    before = rates["no augmentation: symtrain, two-pass fill (before)"]
    table.notes.append(f"Shuffled fill without augmentation: single-copy / two-pass = {now / before:.2f}x.")
    w1 = rates["waiting transform: symtrain, 1 worker (thread)"]
    table.notes.append("Waiting transform (2 ms per 128 rows, no CPU, GIL released; synthetic): "
                       "2 workers / 1 = "
                       f"{rates['waiting transform: symtrain, 2 workers (thread)'] / w1:.2f}x (thread), "
                       f"{rates['waiting transform: symtrain, 2 workers (process)'] / w1:.2f}x (process).")
    table.notes.append(f"{cfg.reps} alternated repetition(s); a pass runs one untimed epoch, then whole "
                       "epochs "
                       f"for >= {cfg.min_s:.1f} s; batch "
                       f"{BATCH}, chunk_rows {cfg.chunk_rows}; load average {load0} before, "
                       f"{common.machine()['load average']} after (2 cores shared with other work).")
    return table


# ----- end to end ------------------------------------------------------------------------------------------
def _symtrain_e2e(path: Path, cfg: Config, workers: int, loader: str, cache: dict) -> dict:
    import symtrain as st
    from symtrain.backend import pt

    key = (workers, loader)
    if key not in cache:
        s = st.ChunkStream(path, BATCH, cfg.chunk_rows, seed=0, loader=loader, workers=workers,
                           transform=symtrain_augment, name=f"aug-{workers}-{loader}")
        params = common.mlp_params()
        logp = common.mlp_log_probs(s.batch("x"), params)
        cost = -pt.mean(logp[pt.arange(BATCH), s.batch("y")])
        step = st.compile_step(cost, params, s, st.optim.adam(1e-3), mode="NUMBA")
        cache[key] = (s, step, [0])
    s, step, epoch = cache[key]
    wait0, done, t0 = s.wait_seconds, 0, time.perf_counter()
    for c in s.epoch(epoch[0]):  # whole epochs: the loader stays up and prefetches the next one
        for i in c.indices:
            step(i)
            done += 1
    epoch[0] += 1
    secs = time.perf_counter() - t0
    return {"rows": done * BATCH, "s": secs, "wait": s.wait_seconds - wait0}


def _torch_e2e(path: Path, cfg: Config, workers: int, cache: dict) -> dict:
    from benchmarks.torch_baselines import mlp, set_threads, train_epoch

    set_threads(int(common.BLAS_THREADS))
    if workers not in cache:
        cache[workers] = (mlp(0), torch_loader(path, workers))
    model, loader = cache[workers]
    t0 = time.perf_counter()
    res = train_epoch(model, loader)
    return {"rows": res["rows"], "s": time.perf_counter() - t0, "wait": res["wait_s"]}


def end_to_end(cfg: Config, path: Path) -> Table:
    cache: dict = {}
    contenders = {
        "symtrain, 1 worker (thread)": lambda: _symtrain_e2e(path, cfg, 1, "thread", cache),
        "symtrain, 2 workers (thread)": lambda: _symtrain_e2e(path, cfg, 2, "thread", cache),
        "symtrain, 2 workers (process)": lambda: _symtrain_e2e(path, cfg, 2, "process", cache),
        "PyTorch DataLoader, 0 workers": lambda: _torch_e2e(path, cfg, 0, cache),
        "PyTorch DataLoader, 2 workers": lambda: _torch_e2e(path, cfg, 2, cache),
    }
    load0 = common.machine()["load average"]
    for f in contenders.values():  # compile / JIT / worker start-up, untimed
        f()
    res = _alternate(list(contenders), cfg.reps, lambda n: contenders[n]())
    for v in cache.values():
        if hasattr(v[0], "close"):
            v[0].close()
    rates = {n: median([r["rows"] / r["s"] for r in rs]) for n, rs in res.items()}
    best_torch = max(v for n, v in rates.items() if n.startswith("PyTorch"))
    table = Table("End to end with the benchmark MLP (784-256-10, Adam) and the same augmentation",
                  ["contender", "rows/s (median)", "x best PyTorch", "waited for data (median)",
                   "min-max rows/s",
                   "CPU us per row (all processes)", "CPU cores used"])
    for n, rs in res.items():
        v = [r["rows"] / r["s"] for r in rs]
        table.rows.append([n, _rate(rates[n], 1), f"{rates[n] / best_torch:.2f}",
                           f"{median([r['wait'] / r['s'] for r in rs]) * 100:.0f}%",
                           f"{min(v) / 1e3:.1f}-{max(v) / 1e3:.1f} k",
                           f"{median([r['cpu'] / r['rows'] * 1e6 for r in rs]):.0f}",
                           f"{median([r['cpu'] / r['s'] for r in rs]):.2f}"])
    table.notes.append("CPU us per row: user+system CPU of the trainer and its live worker processes per row "
                       "trained (step + augmentation + loading); CPU cores used: that CPU time over the wall "
                       "time. "
                       "On a machine with no idle core, rows/s is about (cores this run gets) / (CPU per "
                       "row).")
    table.notes.append("One shuffled epoch per pass after an untimed warm-up epoch (compile, JIT, worker "
                       f"start-up); {cfg.reps} alternated repetition(s); symtrain in Numba mode, PyTorch "
                       "with "
                       f"{common.BLAS_THREADS} intra-op thread(s); load average {load0} before, "
                       f"{common.machine()['load average']} after.")
    return table


def augmentation_cost(path: Path) -> str:
    """Seconds per 1000 rows of ``augment_rows`` on one core (what a worker spends per fill)."""
    from symtrain.storage import open_dataset

    with open_dataset(path) as ds:
        x = np.array(ds["x"][:4096])
    rng = np.random.default_rng(0)
    augment_rows(x[:512], rng)
    t = median([common.timed(lambda: augment_rows(x, rng)) for _ in range(3)])
    return f"augment_rows costs {t / len(x) * 1e6:.1f} us per row on one core (median of 3 x {len(x)} rows)"


def run(quick: bool = False, **overrides) -> list[Table]:
    cfg = replace(QUICK if quick else Config(), **overrides)
    path = common.dataset(common.rows_for(cfg.size))
    alone = loader_alone(cfg, path)
    alone.notes.append(augmentation_cost(path))
    show(alone)
    return [alone, show(end_to_end(cfg, path))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=doc_summary(__doc__))
    ap.add_argument("--quick", action="store_true", help="small data, one repetition (a smoke run)")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--cap-s", type=float, help="seconds after which a loader pass stops")
    ap.add_argument("--blas-threads", type=int, default=int(common.BLAS_THREADS),
                    help="threads (BLAS and torch intra-op), pinned before numpy loads; default 1")
    a = ap.parse_args(argv)
    overrides = {k: v for k, v in (("reps", a.reps), ("cap_s", a.cap_s)) if v}
    run(a.quick, **overrides)


if __name__ == "__main__":
    main()
