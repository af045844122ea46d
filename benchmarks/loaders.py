"""Loader alone, no model: rows delivered to the training loop per second by symtrain's ChunkStream and by
the PyTorch loaders users would pick instead, on the same memmapped digits-derived data, cached and not.

Contenders (alternated in a rotated order for several repetitions; medians; ratios from the same run):
  - symtrain ``ChunkStream(policy="shuffle")`` with ``loader="thread"`` and ``loader="process"``: rows are
    in the device buffers when a chunk is handed out (what the compiled step slices);
  - PyTorch, tutorial pattern (one memmap row per ``__getitem__``, ``DataLoader(shuffle=True)``), 0 and 2
    workers, and the batched variant (one sorted fancy-index read per batch), 0 and 2 workers
    (benchmarks/torch_baselines.py);
  - physical limits: a sequential ``readinto`` of the files, and memcpy bandwidth.
"Cold" passes start right after fsync + ``posix_fadvise(POSIX_FADV_DONTNEED)`` of every file.
TensorFlow's ``tf.data`` is not measured: see ``TF_NOTE``.

    .venv/bin/python -m benchmarks.loaders            # full run (1 GiB, 3 repetitions; a few minutes)
    .venv/bin/python -m benchmarks.loaders --quick    # smoke run
    .venv/bin/python -m benchmarks.run --only loaders # same, and rewrites benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import common
from benchmarks.common import MiB, Table, median, rate, show
from symtrain.cli import doc_summary

NAME = "loaders"
BATCH = 128
SYMTRAIN = ("thread", "process")
TORCH = (("tutorial", 0), ("tutorial", 2), ("batched", 0), ("batched", 2))
TF_NOTE = ("TensorFlow (`tf.data.Dataset.from_generator`) is not measured: `pip download --no-deps "
           "tensorflow-cpu==2.21.0` is a 274 MB wheel (about 1 GB installed, with keras, protobuf, grpcio "
           "and tensorboard), past what a benchmark-only extra should cost here, and its dependency pins "
           "would share the venv with pytensor's numpy 2.4. A `from_generator` over memmap slices would run "
           "the same per-batch Python generator as the PyTorch batched variant, behind tf.data's own "
           "threads.")


@dataclass(frozen=True)
class Config:
    size: int = 2**30              # dataset bytes
    chunk_rows: int = 16384
    reps: int = 3
    cap_s: float = 30.0            # a pass stops after this many seconds (rows/s counts the rows it did)
    memcpy_bytes: int = 256 * MiB


QUICK = Config(size=32 * MiB, chunk_rows=2048, reps=1, cap_s=5.0, memcpy_bytes=32 * MiB)


def _names() -> list[str]:
    return ["readinto", *(f"symtrain/{lo}" for lo in SYMTRAIN), *(f"torch/{s}/{w}" for s, w in TORCH)]


LABELS = {
    "readinto": ("sequential `readinto` of the files (one reader's ceiling)", "none (file order)"),
    "symtrain/thread": ("symtrain ChunkStream, loader=\"thread\"", "chunk order + rows within each buffer"),
    "symtrain/process": ("symtrain ChunkStream, loader=\"process\"", "chunk order + rows within each buffer"),
    "torch/tutorial/0": ("PyTorch tutorial pattern, 0 workers", "full random permutation"),
    "torch/tutorial/2": ("PyTorch tutorial pattern, 2 workers", "full random permutation"),
    "torch/batched/0": ("PyTorch batch sampler + fancy-index read, 0 workers", "full random permutation"),
    "torch/batched/2": ("PyTorch batch sampler + fancy-index read, 2 workers", "full random permutation"),
}


def _epoch_rows(stream, e: int, cap_s: float) -> tuple[int, float]:
    rows, t0 = 0, time.perf_counter()
    chunks = stream.epoch(e)
    for chunk in chunks:
        rows += chunk.n_valid
        if time.perf_counter() - t0 > cap_s:
            chunks.close()
            break
    return rows, time.perf_counter() - t0


def _symtrain_pass(path: Path, loader: str, cfg: Config, prepare) -> tuple[int, float, float]:
    """Epoch 0 of a fresh stream (timed, start-up included), then ``prepare()`` (warm or evict the files) and
    epoch 1 (timed: the steady state of a multi-epoch run). Returns (rows, epoch-1 seconds, epoch-0
    seconds)."""
    from symtrain.stream import ChunkStream

    with ChunkStream(path, BATCH, cfg.chunk_rows, policy="shuffle", seed=0, loader=loader,
                     name=f"bench-{loader}") as s:
        rows0, secs0 = _epoch_rows(s, 0, cfg.cap_s)
        prepare()
        rows, secs = _epoch_rows(s, 1, cfg.cap_s)
        return rows, secs, secs0 * rows / rows0


def _torch_pass(path: Path, style: str, workers: int, cfg: Config) -> tuple[int, float]:
    """Rows and seconds of one shuffled epoch (or ``cap_s``), worker start-up included, every batch
    touched."""
    from benchmarks.torch_baselines import make_loader

    loader = make_loader(path, style, workers, BATCH)
    rows, t0 = 0, time.perf_counter()
    it = iter(loader)
    for x, _y in it:
        rows += x.shape[0]
        if time.perf_counter() - t0 > cfg.cap_s:
            break
    secs = time.perf_counter() - t0
    del it  # shuts the workers down
    return rows, secs


def run_loaders(cfg: Config) -> Table:
    from benchmarks.stream_overhead import _memcpy, _sequential_readinto
    from benchmarks.torch_baselines import set_threads
    from symtrain.storage import open_dataset

    set_threads(int(common.BLAS_THREADS))
    path = common.dataset(common.rows_for(cfg.size))
    with open_dataset(path) as ds:
        files = [ds.field(f).path for f in ds.names]
        row_bytes = sum(ds.field(f).row_bytes for f in ds.names)
        n_rows = ds.rows
    names = _names()
    results: dict[tuple[str, str], list[tuple[int, float]]] = {}
    first_epoch: dict[tuple[str, str], list[float]] = {}
    evicted: list[float] = []
    for rep in range(cfg.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for cache in ("warm", "cold"):
            def prepare(cache=cache) -> None:
                if cache == "warm":
                    common.warm(files)
                else:
                    common.evict(files)
                    evicted.append(max(common.cached_fraction(f) for f in files))

            for name in order:
                kind, *rest = name.split("/")
                if kind == "readinto":
                    prepare()
                    rows, secs = n_rows, _sequential_readinto(files, cfg.chunk_rows * 784 * 4)
                elif kind == "symtrain":
                    prepare()
                    rows, secs, secs0 = _symtrain_pass(path, rest[0], cfg, prepare)
                    first_epoch.setdefault((name, cache), []).append(secs0 / rows)
                else:
                    prepare()
                    rows, secs = _torch_pass(path, rest[0], int(rest[1]), cfg)
                results.setdefault((name, cache), []).append((rows, secs))
                print(f"  rep {rep} {cache} {name:18s} {rows / secs / 1e3:9.1f} k rows/s ({rows} rows, "
                      f"{secs:.1f} s)", flush=True)
    copy = _memcpy(cfg.memcpy_bytes)
    per_row = {k: median([s / r for r, s in v]) for k, v in results.items()}  # seconds per row
    memcpy_per_row = copy / (cfg.memcpy_bytes / row_bytes)
    tut = {c: per_row[("torch/tutorial/0", c)] for c in ("warm", "cold")}
    table = Table(f"Loader alone, no model ({n_rows} rows, {n_rows * row_bytes / 2**30:.2f} GiB, shuffled; "
                  f"chunk_rows={cfg.chunk_rows}, batch {BATCH})",
                  ["reader", "shuffles", "warm rows/s", "warm GB/s", "warm x tutorial", "cold rows/s",
                   "cold GB/s",
                   "cold x tutorial"])
    for name in names:
        label, shuffles = LABELS[name]
        cells = [label, shuffles]
        for cache in ("warm", "cold"):
            cells += [*rate(1, row_bytes, per_row[(name, cache)]),
                      f"{tut[cache] / per_row[(name, cache)]:.1f}"]
        table.rows.append(cells)
    table.rows.append([f"memcpy (`np.copyto`, {cfg.memcpy_bytes // MiB} MiB in RAM)", "-",
                       *rate(1, row_bytes, memcpy_per_row), f"{tut['warm'] / memcpy_per_row:.1f}", "-", "-",
                       "-"])
    best_sym = min(per_row[(f"symtrain/{lo}", "warm")] for lo in SYMTRAIN)
    best_sym_cold = min(per_row[(f"symtrain/{lo}", "cold")] for lo in SYMTRAIN)
    ratio_tut = tut["warm"] / best_sym
    ratio_copy = best_sym / memcpy_per_row
    table.notes += [
        f"Rows of {row_bytes} B (x float32[784] + y int64), digits-derived. Medians of {cfg.reps} pass(es) "
        "per contender and cache state, contenders alternating in a rotated order; a pass is a whole "
        f"shuffled epoch or {cfg.cap_s:.0f} s, whichever ends first (rows/s counts the rows it delivered), "
        "timed from asking for the epoch (worker start-up and the first fill included) to the last batch. "
        "symtrain rows are the stream's second epoch (epoch 1; its staging buffers touched and its loader "
        "running, as in every epoch of a training run after the first; cold, its first fill was read ahead "
        "before the eviction); its first epoch on a fresh stream (buffer allocation, first touch, process "
        "start) ran at "
        + ", ".join(f"{n.split('/')[1]} {c} {rate(1, row_bytes, median(v))[0]}"
                    for (n, c), v in sorted(first_epoch.items())) + " rows/s.",
        f"Cold: files fsynced and evicted with `posix_fadvise(POSIX_FADV_DONTNEED)` right before each pass "
        f"(largest fraction still cached after eviction: {max(evicted, default=0):.1%}). The dataset fits in "
        "the page cache here, so a cold random reader gets help from kernel read-around as the pass goes on; "
        "on data larger than RAM the tutorial pattern's cold rate falls further (an earlier measurement on "
        "data larger than RAM: ~6-9 k rows/s).",
        "`x tutorial`: the contender's rows/s over the PyTorch tutorial pattern's (0 workers), same run.",
        f"**Targets.** symtrain >= 20x the tutorial pattern (warm): best symtrain loader "
        f"{ratio_tut:.1f}x ({'met' if ratio_tut >= 20 else 'missed'}); cold "
        f"{tut['cold'] / best_sym_cold:.1f}x. Within 2x of memcpy when cached: best symtrain loader takes "
        f"{ratio_copy:.2f}x memcpy's time per row ({'met' if ratio_copy <= 2 else 'missed'}).",
        "Shuffle quality: PyTorch's samplers draw a full random permutation of all rows per epoch; "
        "symtrain's `policy=\"shuffle\"` permutes the order of chunk-sized blocks and the rows inside each "
        "buffer (add `mix=K` to draw each buffer from K blocks, or pre-shuffle once with `symtrain "
        "shuffle`).",
        TF_NOTE,
    ]
    return table


def fill_breakdown(cfg: Config) -> Table:
    """What bounds symtrain's loader, warm: ``load.fill`` on the main thread over one shuffled epoch's loads
    (one copy: a gather from a mapping of each fill's span), the same ranges read in file order (``preadv``
    straight into the staging buffer), and the previous two-pass fill (read into scratch, then gather)."""
    from benchmarks.augment import two_pass_fill
    from symtrain.storage import open_dataset
    from symtrain.stream.load import Load, fill, sources_of
    from symtrain.stream.plan import epoch_loads, make_spec

    path = common.dataset(common.rows_for(cfg.size))
    ds = open_dataset(path)
    try:
        sources = sources_of(ds)
        files = [ds.field(f).path for f in ds.names]
        row_bytes = sum(ds.field(f).row_bytes for f in ds.names)
        spec = make_spec(ds.rows, cfg.chunk_rows, BATCH, policy="shuffle", seed=0, start=ds.start)
        plan = epoch_loads(spec, 0)
        loads = [plan.load(g) for g in range(len(plan))]
        out = {name: src.empty(spec.chunk_rows) for name, src in sources.items()}
        scratch: dict = {}
        common.warm(files)
        fill(sources, loads[0], out)  # touch the staging arrays once
        two_pass_fill(sources, loads[0], out, scratch)  # and the old scratch
        times: dict[str, list[float]] = {"shuffle": [], "read": [], "two_pass": []}
        rows = sum(ld.n_valid for ld in loads)
        plain = [Load(ld.ranges, None, ld.n_valid) for ld in loads]
        for _ in range(cfg.reps):
            times["shuffle"].append(common.timed(lambda: [fill(sources, ld, out) for ld in loads]))
            times["read"].append(common.timed(lambda: [fill(sources, ld, out) for ld in plain]))
            times["two_pass"].append(common.timed(
                lambda: [two_pass_fill(sources, ld, out, scratch) for ld in loads]))
    finally:
        ds.close()
    table = Table("What bounds symtrain's loader (warm): `load.fill` over one shuffled epoch, on the main "
                  "thread",
                  ["part", "seconds per epoch", "rows/s", "GB/s"])
    labels = {"read": "the same rows in file order (`os.preadv` straight into the staging buffer)",
              "shuffle": "shuffled fill, what the loaders run (one copy: `np.take(mode='clip')` from a "
                         "mapping of the fill's span into the staging buffer, then unmap)",
              "two_pass": "for comparison: the previous two-pass fill (`preadv` into scratch, then gather)"}
    for key in ("read", "shuffle", "two_pass"):
        secs = median(times[key])
        table.rows.append([labels[key], f"{secs:.2f}", *rate(rows, rows * row_bytes, secs)])
    table.notes.append(f"Medians of {cfg.reps} epoch(s) of {len(loads)} fills of {spec.chunk_rows} rows. The "
                       "loaders run exactly this `fill` on their threads or processes; what they deliver "
                       "beyond it is hand-off (install into the device buffers, wake-ups) and competition "
                       "for the 2 cores. The mapping lives for one gather only, so RssFile rises by at most "
                       "one fill's span while it is gathered and none of it stays mapped.")
    return table


def run(quick: bool = False, **overrides) -> list[Table]:
    cfg = replace(QUICK if quick else Config(), **overrides)
    return [show(run_loaders(cfg)), show(fill_breakdown(cfg))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=doc_summary(__doc__))
    ap.add_argument("--quick", action="store_true", help="small data, one repetition (a smoke run)")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--size-mib", type=int, help="dataset size in MiB")
    ap.add_argument("--cap-s", type=float, help="seconds after which a pass stops")
    ap.add_argument("--blas-threads", type=int, default=int(common.BLAS_THREADS),
                    help="threads (BLAS and torch intra-op), pinned before numpy loads; default 1")
    a = ap.parse_args(argv)
    overrides = {k: v for k, v in (("reps", a.reps), ("cap_s", a.cap_s),
                                   ("size", a.size_mib and a.size_mib * MiB)) if v}
    run(a.quick, **overrides)


if __name__ == "__main__":
    main()
