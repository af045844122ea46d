"""The training half of the demo: an MLP trained out of core on the (enlarged) digits dataset.

``train_digits(data, run_dir)`` streams ``data/train`` in shuffled chunks, trains a 784-256-10 ReLU MLP
with Adam, validates on ``data/valid`` every epoch (sequential, through the same chunk machinery), keeps
checkpoints and the best state in ``run_dir``, then scores the best state on the real held-out images of
``data/test`` with a plain NumPy forward pass (an independent check of the trained parameters).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("symtrain.demo")


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
        lr = st.optim.cosine(learning_rate, total=epochs * train.steps_per_epoch, min_value=learning_rate / 20)
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
