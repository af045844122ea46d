"""``make demo``, the one home of the demo: build the real digits demo data (streamed in many chunks),
show ``symtrain inspect``, then train an MLP on it out of core and report the test accuracy on the real
held-out images.

``python -m symtrain.demo --out DIR``. A DIR that already holds a complete build with the same
parameters is reused. ``train_digits(data, run_dir)`` streams ``data/train`` in shuffled chunks, trains a
784-256-10 ReLU MLP with Adam, validates on ``data/valid`` every epoch (sequential, through the same chunk
machinery), keeps checkpoints and the best state in ``run_dir``, then scores the best state on the real
held-out images of ``data/test`` with a plain NumPy forward pass (an independent check of the parameters).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from symtrain.cli import doc_summary

log = logging.getLogger("symtrain.demo")

DEMO_ROWS = 80_000  # ~240 MiB of train rows: many 16k-row chunks for the stream
DEMO_SEED = 0
DEMO_EPOCHS = 4


def build_demo_data(out: Path, rows: int = DEMO_ROWS, seed: int = DEMO_SEED) -> Path:
    """OUT/data/{train,valid,test}: the digits datasets, rebuilt only when missing, invalid or different."""
    from symtrain.storage.digits import build_digits, digits_is_current

    out = Path(out)
    data = out / "data"
    if digits_is_current(data, rows, seed):
        print(f"demo data: reusing {data} ({rows} train rows, seed {seed})")
        return data
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    build_digits(data, rows=rows, seed=seed, overwrite=data.exists())
    print(f"demo data: built {data} ({rows} train rows, seed {seed}) in {time.perf_counter() - t:.1f} s")
    return data


def _glorot(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    bound = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-bound, bound, (n_in, n_out)).astype(np.float32)


def numpy_accuracy(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the MLP with these parameters on (x, y), computed in NumPy."""
    h = np.maximum(x @ params["W1"] + params["b1"], 0)
    return float(np.mean(np.argmax(h @ params["W2"] + params["b2"], axis=1) == y))


def train_digits(data: str | Path, run_dir: str | Path, *, epochs: int = 6, hidden: int = 256,
                 batch_size: int = 128, chunk_rows: int = 8192, learning_rate: float = 2e-3, seed: int = 0,
                 resume: bool = False, progress: bool = True, mode: Any = None,
                 patience: int | None = 3) -> dict[str, Any]:
    """Train the demo MLP (Adam, cosine learning-rate decay over the run, early stopping after
    ``patience`` validations without a lower validation loss, best state restored); returns test accuracy,
    the History, run directory, plot path and timings."""
    import symtrain as st
    from symtrain.backend import pt, shared
    from symtrain.storage import open_dataset
    from symtrain.train.checkpoint import restore, snapshot

    data, run_dir = Path(data), Path(run_dir)
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    with st.ChunkStream(data / "train", batch_size=batch_size, chunk_rows=chunk_rows, seed=seed,
                        name="train") as train, \
            st.ChunkStream(data / "valid", batch_size=batch_size, chunk_rows=chunk_rows, policy="sequential",
                           drop_last=False, name="valid") as valid:
        features = train.dataset.fields["x"].shape[0]
        W1 = shared(_glorot(rng, features, hidden), name="W1")
        b1 = shared(np.zeros(hidden, np.float32), name="b1")
        W2 = shared(_glorot(rng, hidden, 10), name="W2")
        b2 = shared(np.zeros(10, np.float32), name="b2")

        def mlp(x):
            return st.nnet.softmax(st.nnet.relu(x @ W1 + b1) @ W2 + b2)

        x, y = train.batch("x"), train.batch("y")
        cost = st.nnet.categorical_crossentropy(mlp(x), y).mean()
        lr = st.optim.cosine(learning_rate, total=epochs * train.steps_per_epoch, min_value=learning_rate
                             / 20)
        t0 = time.perf_counter()
        step = st.compile_step(cost, [W1, b1, W2, b2], train, st.optim.adam(lr), mode=mode)
        pv, yv = mlp(valid.batch("x")), valid.batch("y")
        evaluator = st.compile_eval({"error": pt.neq(pt.argmax(pv, axis=1), yv).astype("float32"),
                                     "loss": st.nnet.categorical_crossentropy(pv, yv)}, valid, mode=mode)
        log.info("compiling the step and the evaluator (a cold Numba compile takes 25-60 s; cached after)")
        evaluator.run()  # the first call compiles: do it before the progress bar starts
        before = snapshot(step.state_variables())
        step(0)  # compile the step too (on the zero buffers), then undo its update
        restore(before, step.state_variables())
        timings["compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        history = st.fit(step, train, epochs, validation=evaluator, monitor="loss", run_dir=run_dir,
                         resume=resume, overwrite=not resume,
                         early_stopping=st.EarlyStopping("loss", wait=patience) if patience else None,
                         restore_best=True, progress=progress, log_every=20)
        timings["fit_s"] = time.perf_counter() - t0
        rows_trained = history.global_step * batch_size
        params = {v.name: v.get_value() for v in (W1, b1, W2, b2)}
    with open_dataset(data / "test") as test:
        test_accuracy = numpy_accuracy(params, np.asarray(test["x"]), np.asarray(test["y"]))
        test_rows = test.rows
    plot = None
    try:
        from symtrain.train.plot import plot_run

        plot = plot_run(run_dir)
    except st.ConfigError as exc:  # matplotlib missing: say so, the run is still complete
        log.warning("no plot: %s", exc)
    return {"test_accuracy": test_accuracy, "test_rows": test_rows, "history": history, "run_dir": run_dir,
            "plot": plot, "rows_trained": rows_trained, "timings": timings}


def main(argv: Sequence[str] | None = None) -> int:
    from symtrain.cli import main as cli_main
    from symtrain.errors import SymtrainError

    ap = argparse.ArgumentParser(prog="python -m symtrain.demo", description=doc_summary(__doc__))
    ap.add_argument("--out", type=Path, default=Path("demo-run"), help="run directory (default demo-run)")
    ap.add_argument("--rows", type=int, default=DEMO_ROWS, help=f"train rows (default {DEMO_ROWS})")
    ap.add_argument("--seed", type=int, default=DEMO_SEED, help="data seed (default 0)")
    ap.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                    help=f"training epochs (default {DEMO_EPOCHS})")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted demo training run")
    args = ap.parse_args(argv)
    try:
        data = build_demo_data(args.out, args.rows, args.seed)
    except SymtrainError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"\n$ symtrain inspect {data}")
    sys.stdout.flush()
    rc = cli_main(["inspect", str(data)])
    if rc:
        return rc
    again = (f"python -m symtrain.demo --out {args.out} --rows {args.rows} --seed {args.seed} "
             f"--epochs {args.epochs} --resume")  # every option: a resume must be the same run
    return train_demo(data, args.out / "run", args.epochs, args.resume, args.out, again)


def train_demo(data: Path, run_dir: Path, epochs: int, resume: bool, out: Path,
               again: str | None = None) -> int:
    """Train the MLP out of core (``train_digits``) and print the test accuracy and where things are."""
    from symtrain.errors import SymtrainError

    print(f"\ntraining a 784-256-10 MLP out of core for {epochs} epochs (Adam, validation, checkpoints) ...")
    sys.stdout.flush()
    t = time.perf_counter()
    from symtrain.train import rundir

    try:
        with rundir.session(run_dir, resume, not resume, check_only=True):  # locked before compiling
            r = train_digits(data, run_dir, epochs=epochs, resume=resume)
    except SymtrainError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    h = r["history"]
    if h.interrupted:
        command = again or f"python -m symtrain.demo --out {out} --epochs {epochs} --resume"
        print(f"\ninterrupted; resume with: {command}", file=sys.stderr)
        return 130
    acc = r["test_accuracy"]
    print(f"\ntest accuracy: {acc:.2%} on the {r['test_rows']} real held-out digit images "
          f"({'meets' if acc >= 0.95 else 'BELOW'} the 95% target)")
    print(f"trained {r['rows_trained']:,} rows in {len(h.epochs)} epochs; best validation loss "
          f"{h.best['score']:.4f} (epoch {h.best['epoch']}); compile {r['timings']['compile_s']:.0f} s, "
          f"training {r['timings']['fit_s']:.0f} s, total {time.perf_counter() - t:.0f} s")
    print(f"run directory: {run_dir} (checkpoints/, metrics.jsonl, metrics.csv)")
    print(f"learning curves: {r['plot']}" if r["plot"]
          else "learning curves: not drawn (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
