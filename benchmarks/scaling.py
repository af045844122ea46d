"""Scaling: the end-to-end epoch (benchmarks/end_to_end.py) at several dataset sizes, to show that time
grows linearly with the rows and anonymous memory stays flat.

Each (size, contender) is one fresh subprocess (``end_to_end.run_child``), warm page cache, the same
thread settings; sizes alternate in a rotated order per contender. Reported: epoch seconds, seconds per
GiB, rows/s, peak anonymous memory of the process tree and its difference from the smallest size, and
RssFile (file pages, the OS's to evict).

    .venv/bin/python -m benchmarks.scaling             # full run (0.5, 1, 2, 4 GiB; ~5 min)
    .venv/bin/python -m benchmarks.scaling --quick     # smoke run
    .venv/bin/python -m benchmarks.run --only scaling  # full run, rewrites benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, replace

from benchmarks import common
from benchmarks.common import ROOT, MiB, Table, median, show
from benchmarks.end_to_end import LABELS, run_child
from symtrain.cli import doc_summary

NAME = "scaling"


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (2**29, 2**30, 2**31, 2**32)
    contenders: tuple[str, ...] = ("symtrain/NUMBA", "torch/batched/0")
    chunk_rows: int = 16384
    reps: int = 2


QUICK = Config(sizes=(16 * MiB, 32 * MiB, 64 * MiB), chunk_rows=2048, reps=1)


def bench(cfg: Config) -> Table:
    from symtrain.storage import open_dataset

    paths = {s: common.dataset(common.rows_for(s)) for s in cfg.sizes}
    info = {}
    for s, p in paths.items():
        with open_dataset(p) as ds:
            info[s] = (ds.rows, [ds.field(f).path for f in ds.names],
                       ds.rows * sum(ds.field(f).row_bytes for f in ds.names))
    runs: dict[tuple[str, int], list[dict]] = {}
    sizes = list(cfg.sizes)
    for rep in range(cfg.reps):
        for k, name in enumerate(cfg.contenders):
            for s in sizes[(k + rep) % len(sizes):] + sizes[:(k + rep) % len(sizes)]:
                common.warm(info[s][1])
                r = run_child(name, paths[s], cfg.chunk_rows)
                runs.setdefault((name, s), []).append(r)
                if "error" in r:
                    print(f"  {name} {s / 2**30:.2f} GiB: FAILED {r['error']}", flush=True)
                else:
                    print(f"  rep {rep} {name:16s} {s / 2**30:5.2f} GiB {r['epoch_s']:7.1f} s, peak anon "
                          f"{r['peak_anon_tree'] / MiB:.0f} MiB", flush=True)
    res = {}
    for key, v in runs.items():  # the median epoch; memory peaks are the largest seen
        good = [r for r in v if "error" not in r]
        if not good:
            res[key] = v[0]
            continue
        res[key] = dict(good[0], epoch_s=median([r["epoch_s"] for r in good]),
                        wait_s=median([r["wait_s"] for r in good]),
                        **{m: max(r[m] for r in good) for m in ("peak_anon_tree", "peak_shmem", "peak_file")})
    free = shutil.disk_usage(ROOT).free
    with open("/proc/meminfo") as f:
        mem = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal"))) * 1024
    table = Table("Scaling: one epoch at several dataset sizes (fresh process each, warm page cache)",
                  ["contender", "dataset", "epoch s", "s per GiB", "rows/s", "waited for data",
                   "peak anon (tree)",
                   "anon - smallest size's", "peak RssFile"])
    for name in cfg.contenders:
        base = res.get((name, sizes[0]), {})
        for s in sizes:
            r = res[(name, s)]
            rows, _, nbytes = info[s]
            if "error" in r:
                table.rows.append([LABELS.get(name, name), f"{nbytes / 2**30:.2f} GiB",
                                   f"failed: {r['error'][:150]}",
                                   "-", "-", "-", "-", "-", "-"])
                continue
            mem_cell = r["peak_anon_tree"] + r["peak_shmem"]
            diff = "-" if s == sizes[0] or "error" in base else \
                f"{(mem_cell - base['peak_anon_tree'] - base['peak_shmem']) / MiB:+.0f} MiB"
            table.rows.append([LABELS.get(name, name), f"{nbytes / 2**30:.2f} GiB ({rows} rows)",
                               f"{r['epoch_s']:.1f}", f"{r['epoch_s'] / (nbytes / 2**30):.1f}",
                               f"{r['rows'] / r['epoch_s'] / 1e3:.1f} k", f"{r['wait_s'] / r['epoch_s']:.0%}",
                               f"{mem_cell / MiB:.0f} MiB", diff,
                               f"{r['peak_file'] / MiB:.0f} MiB"])
    table.notes += [
        "Linear time shows as a constant `s per GiB`; flat memory as `anon - smallest size's` near 0. `peak "
        "anon (tree)` here is RssAnon summed over the process tree plus the largest RssShmem (the process "
        "loader's staging buffers are shared memory), sampled every 20 ms. A PyTorch `RandomSampler` "
        "materialises each epoch's permutation as a Python list of n ints (`torch.randperm(n).tolist()`, ~36 "
        "B per row), which is where its anonymous memory grows with the row count.",
        f"Median epoch of {cfg.reps} run(s) per point, largest memory peak (a shared 2-core machine: compare "
        "within a row group, not across runs). The largest "
        f"size is {max(sizes) / 2**30:.2f} GiB on a machine with {mem / 2**30:.0f} GiB of RAM and "
        f"{free / 2**30:.0f} GiB of free disk (shared with other work): a dataset larger than RAM (> 24 GiB, "
        "several times over for a clean cold measurement) did not fit the disk and time budget of this run, "
        "so flatness is shown up to the largest size measured, and the files stay in the page cache "
        "(`RssFile` is what a memmap reader keeps mapped; the OS can evict it, but cgroup limits count it).",
    ]
    return table


def run(quick: bool = False, **overrides) -> list[common.Table]:
    cfg = replace(QUICK if quick else Config(), **overrides)
    return [show(bench(cfg))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=doc_summary(__doc__))
    ap.add_argument("--quick", action="store_true", help="small data (a smoke run)")
    ap.add_argument("--sizes-mib", help="comma-separated dataset sizes in MiB")
    ap.add_argument("--contenders", help="comma-separated, as in benchmarks.end_to_end")
    ap.add_argument("--blas-threads", type=int, default=int(common.BLAS_THREADS),
                    help="threads (BLAS and torch intra-op), pinned before numpy loads; default 1")
    a = ap.parse_args(argv)
    overrides: dict = {}
    if a.sizes_mib:
        overrides["sizes"] = tuple(int(x) * MiB for x in a.sizes_mib.split(","))
    if a.contenders:
        overrides["contenders"] = tuple(c.strip() for c in a.contenders.split(","))
    run(a.quick, **overrides)


if __name__ == "__main__":
    main()
