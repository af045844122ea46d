"""Compile time and step time of the compiled training step per PyTensor mode (Numba, C "cvm", ...).

The model is the 784-256-10 MLP (ReLU, softmax cross-entropy), batch 128, float32, Adam, trained from a
ChunkStream over a synthetic dataset (one 16384-row chunk in the buffers; the loader is not timed). Every
mode runs in its own subprocess with a fresh ``base_compiledir``, twice: "cold" (empty compile cache) and
"warm" (the cache the cold run left). BLAS threads are pinned to 1 (multithreaded BLAS slowed steps on a
shared 2-core machine).

    .venv/bin/python -m benchmarks.step_modes                 # NUMBA and CVM, cold + warm, 300 timed steps
    .venv/bin/python -m benchmarks.step_modes --modes NUMBA,CVM,C --steps 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common
from symtrain.cli import doc_summary

ROOT = Path(__file__).resolve().parents[1]


def child(mode: str, steps: int, data_dir: str) -> dict:
    """Runs inside the subprocess: compile the step, time the first call and ``steps`` more."""
    import numpy as np

    import symtrain as st
    from symtrain.backend import config, pt, shared

    stream = st.ChunkStream(data_dir, batch_size=128, chunk_rows=16384, policy="sequential", seed=0)
    x, y = stream.batch("x"), stream.batch("y")
    params = common.mlp_params()
    logp = common.mlp_log_probs(x, params)
    nll = -logp[pt.arange(y.shape[0]), y]
    cost = pt.sum(nll * stream.batch_mask()) / stream.batch_valid().astype(config.floatX)
    t0 = time.perf_counter()
    step = st.compile_step(cost, params, stream, st.optim.adam(1e-3), mode=mode)
    t_function = time.perf_counter() - t0
    chunks = stream.epoch(0)
    chunk = next(chunks)
    idx = list(chunk.indices)
    t0 = time.perf_counter()
    first = step(idx[0])
    t_first = time.perf_counter() - t0
    for i in idx[1:4]:
        step(i)
    times = []
    for k in range(steps):
        i = idx[k % len(idx)]
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    overhead = wrapper_overhead(st, pt, shared, stream, idx, mode)
    chunks.close()
    stream.close()
    med = float(np.median(times))
    return {"mode": mode, "linker": step.linker, "function_s": round(t_function, 3),
            "first_call_s": round(t_first, 3), "compile_total_s": round(t_function + t_first, 3),
            "step_ms_median": round(med * 1e3, 3), "step_ms_p90": round(float(np.percentile(times, 90)) * 1e3,
                                                                        3),
            **overhead,
            "rows_per_s": round(128 / med), "first_loss": round(first["loss"], 4)}


def wrapper_overhead(st, pt, shared, stream, idx, mode, calls=3000) -> dict:
    """Per-call cost of a tiny compiled step: ``step(i)`` (dict of floats) vs the bare compiled function."""
    import numpy as np

    w = shared(np.float32(0.5), name="tiny_w")
    step = st.compile_step(pt.mean(stream.batch("x")[:, 0]) * w, [w], stream, st.optim.sgd(0.0), mode=mode,
                           name="tiny")
    args = [np.asarray(i, dtype=np.int64) for i in idx]
    best_step = best_raw = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for k in range(calls):
            step(idx[k % len(idx)])
        best_step = min(best_step, (time.perf_counter() - t0) / calls)
        t0 = time.perf_counter()
        for k in range(calls):
            step._fn(args[k % len(args)])
        best_raw = min(best_raw, (time.perf_counter() - t0) / calls)
    return {"tiny_step_us": round(best_step * 1e6, 1), "tiny_raw_fn_us": round(best_raw * 1e6, 1)}


def run_mode(mode: str, steps: int, data_dir: str, compiledir: str) -> dict:
    env = dict(os.environ)
    env["PYTENSOR_FLAGS"] = ",".join(f for f in (env.get("PYTENSOR_FLAGS", ""),
                                                 f"base_compiledir={compiledir}",
                                                  "floatX=float32") if f)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"
    cmd = [sys.executable, "-m", "benchmarks.step_modes", "--child", mode, "--steps", str(steps), "--data",
           data_dir]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:]   # the exception message
        return {"mode": mode, "error": " ".join(last)[-400:], "wall_s": round(wall, 1)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(wall, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=doc_summary(__doc__))
    ap.add_argument("--modes", default="NUMBA,CVM")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.data)))
        return
    import numpy as np

    from symtrain.storage import write_dataset

    results = []
    with tempfile.TemporaryDirectory(prefix="step_modes-") as tmp:
        rng = np.random.default_rng(0)
        data = write_dataset(Path(tmp) / "mlp.std", {
            "x": rng.standard_normal((16384, 784)).astype(np.float32),
            "y": rng.integers(0, 10, 16384).astype(np.int64)})
        for mode in args.modes.split(","):
            cache = Path(tmp) / f"cache-{mode}"
            for run in ("cold", "warm"):
                r = run_mode(mode, args.steps, str(data), str(cache))
                r["cache"] = run
                results.append(r)
                print(json.dumps(r), flush=True)
    print("\n| mode | cache | function() s | first call s | step ms (median) | p90 ms | rows/s | tiny "
          "step(i) us | bare fn us |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['mode']} | {r['cache']} | failed: {r['error'][:120]} | | | | | | |")
        else:
            print(f"| {r['mode']} | {r['cache']} | {r['function_s']} | {r['first_call_s']} | "
                  f"{r['step_ms_median']} | {r['step_ms_p90']} | {r['rows_per_s']} | {r['tiny_step_us']} | "
                  f"{r['tiny_raw_fn_us']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
