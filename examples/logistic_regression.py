"""Multiclass logistic regression with SGD and the Deep Learning Tutorials' early stopping (patience).

The DLT ``logistic_sgd.py`` model, out of core: the rows stream from disk in chunks into the device
buffers, and ``train.batch("x")`` is the minibatch slice the compiled step reads.
"""

import numpy as np

import symtrain as st
from symtrain.backend import pt, shared

STREAM = {"batch_size": 128, "chunk_rows": 8192}
FIT = {"epochs": 20, "monitor": "error"}


def build(train, valid):
    features = train.dataset.fields["x"].shape[0]
    W = shared(np.zeros((features, 10), dtype="float32"), name="W")
    b = shared(np.zeros(10, dtype="float32"), name="b")

    def model(x):
        return st.nnet.softmax(x @ W + b)

    x, y = train.batch("x"), train.batch("y")
    cost = -pt.mean(pt.log(model(x))[pt.arange(y.shape[0]), y])  # negative log-likelihood
    step = st.compile_step(cost, [W, b], train, st.optim.sgd(0.1))
    out = {"step": step}
    if valid is not None:
        p = model(valid.batch("x"))
        yv = valid.batch("y")
        # per-row vectors: averaged over the valid rows of each batch (the last one may be partial)
        out["validation"] = st.compile_eval({"error": pt.neq(pt.argmax(p, axis=1), yv).astype("float32"),
                                             "loss": -pt.log(p)[pt.arange(yv.shape[0]), yv]}, valid)
        out["early_stopping"] = st.EarlyStopping("error", patience=5000, patience_increase=2,
                                                       improvement_threshold=0.995)
    return out


if __name__ == "__main__":
    from _main import main

    main(__file__, epochs=FIT["epochs"])
