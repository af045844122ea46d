"""symtrain benchmarks: ``python -m benchmarks.run`` (``make bench``) runs them and rewrites RESULTS.md.

Performance is measured here, never by timed assertions in the tests.

Importing this package pins the BLAS threads through the environment, which BLAS libraries read only
when they load, so it happens before any benchmark module imports numpy (``python -m benchmarks.X``
imports the package first). The count comes from ``--blas-threads N`` on the command line, else
``SYMTRAIN_BENCH_BLAS_THREADS``, else 1: multithreaded OpenBLAS made steps 3-5x slower on the shared
2-core machine this project is measured on (see docs/streaming.md).
"""

from __future__ import annotations

import os
import sys


def _blas_threads_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--blas-threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--blas-threads="):
            return arg.split("=", 1)[1]
    return None


BLAS_THREADS = _blas_threads_from_argv(sys.argv) or os.environ.get("SYMTRAIN_BENCH_BLAS_THREADS") or "1"
if not BLAS_THREADS.isdigit() or int(BLAS_THREADS) < 1:
    raise SystemExit(f"--blas-threads must be a positive integer, got {BLAS_THREADS!r}")
os.environ["SYMTRAIN_BENCH_BLAS_THREADS"] = BLAS_THREADS  # inherited by benchmark subprocesses
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = BLAS_THREADS
BLAS_PINNED_EARLY = "numpy" not in sys.modules
