"""``make bench``: run the benchmarks and rewrite benchmarks/RESULTS.md (machine, versions, date, command).

    .venv/bin/python -m benchmarks.run                        # every benchmark, full size
    .venv/bin/python -m benchmarks.run --quick                # smoke run; prints, RESULTS.md untouched
    .venv/bin/python -m benchmarks.run --only stream_overhead # one benchmark; other RESULTS.md sections kept

A benchmark is a module under benchmarks/ with ``run(quick: bool) -> list[common.Table]``; add it to
BENCHMARKS. A ``--quick`` run never writes the committed RESULTS.md (its small-data numbers would replace
the real ones); ``--out PATH`` saves its tables elsewhere. BLAS threads are pinned (default 1,
``--blas-threads N``) before numpy is imported.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from pathlib import Path

from benchmarks import common

BENCHMARKS = ["stream_overhead", "loaders", "end_to_end", "scaling", "nnet_speed", "distributed", "augment"]


def results_path(quick: bool, no_write: bool, out: Path | None) -> Path | None:
    """Where this run writes its tables: None for --no-write or a quick run without --out."""
    if out is not None and quick and out.resolve() == common.RESULTS.resolve():
        raise SystemExit(f"benchmarks.run: error: --quick results must not replace {common.RESULTS.name}")
    if no_write or (quick and out is None):
        return None
    return out or common.RESULTS


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description="run the symtrain benchmarks and rewrite benchmarks/RESULTS.md")
    ap.add_argument("--quick", action="store_true", help="small data and few repetitions (a smoke run)")
    ap.add_argument("--only", action="append", choices=BENCHMARKS,
                    help="run only this benchmark (repeatable)")
    ap.add_argument("--blas-threads", type=int, default=int(common.BLAS_THREADS),
                    help="BLAS threads, pinned via the environment before numpy loads (default 1)")
    ap.add_argument("--no-write", action="store_true", help="print the tables but leave RESULTS.md alone")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the tables to this file instead of RESULTS.md (a --quick run writes only "
                         "here)")
    a = ap.parse_args(argv)
    target = results_path(a.quick, a.no_write, a.out)
    command = shlex.join(["python", "-m", "benchmarks.run", *argv])
    info = common.machine()
    print(f"{command}\n" + "\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    sections = {}
    for name in a.only or BENCHMARKS:
        t0 = time.perf_counter()
        print(f"\n== {name} ==", flush=True)
        sections[name] = importlib.import_module(f"benchmarks.{name}").run(quick=a.quick)
        print(f"== {name}: {time.perf_counter() - t0:.0f} s ==", flush=True)
    info["load average after"] = common.machine()["load average"]
    if target is not None:
        common.write_results(sections, command, info, path=target)
        print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
