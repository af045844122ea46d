"""Gradient accumulation: the MLP of ``mlp.py`` with micro-batches of 32 rows and one Adam update per 4
of them, i.e. the update of a 128-row batch with a quarter of the activation memory. The trainer flushes
a partial group at the end of every epoch, so no rows are dropped from the update."""

import numpy as np

import symtrain as st
from symtrain.backend import pt, shared

STREAM = {"batch_size": 32, "chunk_rows": 8192}
FIT = {"epochs": 10, "monitor": "error"}
ACCUMULATE = 4


def build(train, valid, hidden=256, seed=0):
    rng = np.random.default_rng(seed)
    n = train.dataset.fields["x"].shape[0]
    b1, b2 = np.sqrt(6.0 / (n + hidden)), np.sqrt(6.0 / (hidden + 10))
    params = [shared(rng.uniform(-b1, b1, (n, hidden)).astype("float32"), name="W1"),
              shared(np.zeros(hidden, "float32"), name="b1"),
              shared(rng.uniform(-b2, b2, (hidden, 10)).astype("float32"), name="W2"),
              shared(np.zeros(10, "float32"), name="b2")]

    def mlp(x):
        W1, bb1, W2, bb2 = params
        return st.nnet.softmax(st.nnet.relu(x @ W1 + bb1) @ W2 + bb2)

    x, y = train.batch("x"), train.batch("y")
    cost = st.nnet.categorical_crossentropy(mlp(x), y).mean()
    step = st.compile_step(cost, params, train, st.optim.adam(1e-3), accumulate=ACCUMULATE)
    out = {"step": step}
    if valid is not None:
        p, yv = mlp(valid.batch("x")), valid.batch("y")
        out["validation"] = st.compile_eval({"error": pt.neq(pt.argmax(p, axis=1), yv).astype("float32")},
                                            valid)
    return out


if __name__ == "__main__":
    from _main import main

    main(__file__, epochs=FIT["epochs"])
