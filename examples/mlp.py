"""A multilayer perceptron (784-256-10, ReLU, dropout) trained with Adam, validated every epoch, with
early stopping on the validation error and the best state restored at the end."""

import numpy as np

import symtrain as st
from symtrain.backend import pt, shared, shared_rng

STREAM = {"batch_size": 128, "chunk_rows": 8192}
FIT = {"epochs": 15, "monitor": "error", "restore_best": True}


def glorot(rng, n_in, n_out, name):
    bound = np.sqrt(6.0 / (n_in + n_out))
    return shared(rng.uniform(-bound, bound, (n_in, n_out)).astype("float32"), name=name)


def mlp(x, params, drop=None):
    W1, b1, W2, b2 = params
    h = st.nnet.relu(x @ W1 + b1)
    if drop is not None:
        h = drop(h)
    return st.nnet.softmax(h @ W2 + b2)


def build(train, valid, hidden=256, seed=0):
    rng = np.random.default_rng(seed)
    features = train.dataset.fields["x"].shape[0]
    params = [glorot(rng, features, hidden, "W1"), shared(np.zeros(hidden, "float32"), name="b1"),
              glorot(rng, hidden, 10, "W2"), shared(np.zeros(10, "float32"), name="b2")]
    noise = shared_rng(seed)
    noise.name = "dropout/rng"
    rng_updates = {}

    def drop(h):
        h, updates = st.nnet.dropout(h, 0.2, noise)
        rng_updates.update(updates)  # {noise: next_noise}: the step advances the generator on every call
        return h

    x, y = train.batch("x"), train.batch("y")
    cost = st.nnet.categorical_crossentropy(mlp(x, params, drop), y).mean()
    step = st.compile_step(cost, params, train, st.optim.adam(1e-3), updates=rng_updates)
    out = {"step": step}
    if valid is not None:
        p, yv = mlp(valid.batch("x"), params), valid.batch("y")
        out["validation"] = st.compile_eval({"error": pt.neq(pt.argmax(p, axis=1), yv).astype("float32"),
                                             "loss": st.nnet.categorical_crossentropy(p, yv)}, valid)
        out["early_stopping"] = st.EarlyStopping("error", wait=4)
    return out


if __name__ == "__main__":
    from _main import main

    main(__file__, epochs=FIT["epochs"])
