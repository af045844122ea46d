"""Shared benchmark helpers: machine facts, timing, /proc memory, page-cache eviction, benchmark data,
markdown tables and the RESULTS.md writer. (BLAS threads are pinned by ``benchmarks/__init__.py``.)
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks import BLAS_PINNED_EARLY, BLAS_THREADS

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
GB = 1e9
MiB = 2**20


# ----- tables ------------------------------------------------------------------------------------------
@dataclass
class Table:
    """One result table: printed as it completes and written to RESULTS.md."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |",
               "|" + "|".join("---" for _ in self.headers) + "|"]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def show(table: Table) -> Table:
    print("\n" + table.markdown(), flush=True)
    return table


# ----- timing ------------------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """``median (min-max)`` of a list of seconds, in ms or s."""
    med, lo, hi = median(values), min(values), max(values)
    if hi < 1:
        return f"{med * 1e3:.1f} ms ({lo * 1e3:.1f}-{hi * 1e3:.1f})"
    return f"{med:.2f} s ({lo:.2f}-{hi:.2f})"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rate(rows: float, nbytes: float, seconds: float) -> tuple[str, str]:
    """(rows/s, GB/s) as display strings."""
    if seconds <= 0:
        return "-", "-"
    r = rows / seconds
    rows_s = f"{r / 1e6:.2f} M" if r >= 1e6 else f"{r / 1e3:.0f} k"
    return rows_s, f"{nbytes / seconds / GB:.2f}"


# ----- memory and page cache ---------------------------------------------------------------------------
def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmHWM, VmRSS, RssAnon, RssFile, RssShmem, ...) in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2)) * 1024
    return out


def evict(paths: Sequence[str | os.PathLike]) -> None:
    """Drop the files' pages from the page cache (fsync first: dirty pages cannot be dropped)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Sequence[str | os.PathLike], block: int = 16 * MiB) -> None:
    """Read the files once so their pages are in the page cache."""
    buf = bytearray(block)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def cached_fraction(path: str | os.PathLike) -> float:
    """Fraction of the file's pages resident in the page cache (``mincore`` on a read-only mapping)."""
    import ctypes
    import mmap

    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = np.zeros(pages, dtype=np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return float("nan")
        try:
            if libc.mincore(addr, size, vec.ctypes.data) != 0:
                return float("nan")
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return float((vec & 1).mean())


# ----- machine facts -----------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """CPU, cores, memory, kernel, versions and BLAS threading, for the RESULTS.md header."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal"))) * 1024
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("pytensor", "numba", "scipy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "not installed"
    from importlib.metadata import PackageNotFoundError, version

    try:  # the benchmark-only contender, by its metadata: importing torch here would load it in every run
        versions["torch"] = version("torch")
    except PackageNotFoundError:
        versions["torch"] = "not installed"
    blas = f"{BLAS_THREADS} thread(s) requested via OPENBLAS/OMP/MKL_NUM_THREADS"
    if not BLAS_PINNED_EARLY:
        blas += " (numpy was imported before the benchmarks package: the request may not have applied)"
    try:
        from threadpoolctl import threadpool_info

        pools = [f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)"
                 for p in threadpool_info()]
        blas += "; loaded: " + (", ".join(pools) or "none")
    except ImportError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{mem / 2**30:.1f} GiB",
            "kernel": platform.release(), "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
            "blas": blas, "load average": load,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


# ----- benchmark data ----------------------------------------------------------------------------------
ROW_BYTES = 784 * 4 + 8  # x float32[784] + y int64


def rows_for(nbytes: int) -> int:
    return max(1, round(nbytes / ROW_BYTES))


def dataset(rows: int, seed: int = 0, progress: bool | None = None) -> Path:
    """A train dataset of ``rows`` rows (x float32[784], y int64) under benchmarks/data, reused when present.

    Built with ``symtrain.storage.digits.build_digits`` (real digits plus distorted copies); falls back to
    random rows written with ``write_dataset`` when that module is not available.
    """
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    progress = sys.stderr.isatty() if progress is None else progress
    try:
        from symtrain.storage.digits import build_digits, digits_is_current
    except ImportError:
        build_digits = None
    if build_digits is not None:
        out = DATA_DIR / f"digits-{rows}"
        if not digits_is_current(out, rows, seed):
            print(f"building {out} ({rows} rows, {rows * ROW_BYTES / 2**30:.2f} GiB) ...", flush=True)
            build_digits(out, rows=rows, seed=seed, overwrite=out.exists(), progress=progress)
        return out / "train"
    from symtrain.errors import DatasetError
    from symtrain.storage import DatasetWriter, open_dataset

    out = DATA_DIR / f"random-{rows}"
    try:
        with open_dataset(out) as ds:
            if ds.rows == rows:
                return out
    except DatasetError:
        pass
    print(f"writing {out} ({rows} random rows) ...", flush=True)
    rng = np.random.default_rng(seed)
    with DatasetWriter(out, {"x": ("float32", (784,)), "y": ("int64", ())}, overwrite=out.exists()) as w:
        for start in range(0, rows, 65536):
            n = min(65536, rows - start)
            w.append(x=rng.random((n, 784), dtype=np.float32), y=rng.integers(0, 10, n))
    return out


# ----- RESULTS.md --------------------------------------------------------------------------------------
def write_results(sections: dict[str, list[Table]], command: str, info: dict[str, str],
                  path: Path = RESULTS) -> None:
    """Rewrite RESULTS.md: header (machine, versions, date, command) and one section per benchmark.

    Sections of benchmarks not run this time are kept from the previous file.
    """
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = dict(re.findall(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->", old, flags=re.S))
    for name, tables in sections.items():
        load = (f" (load average {info['load average']} before the run, "
                f"{info.get('load average after', '?')} after)")
        body = (f"## {name}\n\nRun {info['date']} with `{command}`{load}.\n\n"
                + "\n".join(t.markdown() for t in tables))
        kept[name] = body
    head = ["# Benchmark results", "",
            "Written by `python -m benchmarks.run` (`make bench`); do not edit by hand. Rerun a single "
            "benchmark with `python -m benchmarks.run --only NAME` (other sections are kept).", "",
            f"Last run: `{command}`", ""]
    head += [f"- **{k}**: {v}" for k, v in info.items()]
    body = "\n".join(head) + "\n\n" + "\n".join(f"<!-- bench:{k} -->\n{v}<!-- /bench:{k} -->\n"
                                                for k, v in kept.items())
    path.write_text(body, encoding="utf-8")


def dump_json(obj: object) -> str:
    return json.dumps(obj, default=float)


def mlp_params(seed: int = 0) -> list:
    """The benchmark MLP's parameters (784-256-10, float32), identical in every benchmark."""
    from symtrain.backend import shared

    rng = np.random.default_rng(seed)

    def param(shape: tuple[int, ...], scale: float, name: str):
        return shared((rng.standard_normal(shape) * scale).astype(np.float32), name=name)

    return [param((784, 256), 0.05, "W1"), param((256,), 0.0, "b1"), param((256, 10), 0.05, "W2"),
            param((10,), 0.0, "b2")]


def mlp_log_probs(x, params: list):
    """Log-probabilities of the benchmark MLP (ReLU hidden layer, log-softmax over the 10 classes)."""
    from symtrain.backend import pt, special

    w1, b1, w2, b2 = params
    return special.log_softmax(pt.maximum(x @ w1 + b1, 0) @ w2 + b2, axis=1)
