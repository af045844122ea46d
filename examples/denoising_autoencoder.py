"""A denoising autoencoder (the DLT ``dA``): corrupt the input by zeroing a random 30% of the pixels,
reconstruct the clean input through a sigmoid bottleneck with tied weights, cross-entropy loss.
Unsupervised: only the ``x`` field is streamed."""

import numpy as np

import symtrain as st
from symtrain.backend import pt, rng_binomial, shared, shared_rng

STREAM = {"batch_size": 64, "chunk_rows": 8192, "fields": ["x"]}
FIT = {"epochs": 10}
CORRUPTION = 0.3


def build(train, valid, hidden=128, seed=0):
    rng = np.random.default_rng(seed)
    n = train.dataset.fields["x"].shape[0]
    bound = 4 * np.sqrt(6.0 / (n + hidden))
    W = shared(rng.uniform(-bound, bound, (n, hidden)).astype("float32"), name="W")
    bh = shared(np.zeros(hidden, "float32"), name="b_hidden")
    bv = shared(np.zeros(n, "float32"), name="b_visible")
    noise = shared_rng(seed)
    noise.name = "corruption/rng"

    def reconstruct(x):
        return st.nnet.sigmoid(st.nnet.sigmoid(x @ W + bh) @ W.T + bv)

    def loss(x, z):  # per-row cross-entropy between the clean input and the reconstruction
        z = pt.clip(z, 1e-6, 1 - 1e-6)
        return -pt.sum(x * pt.log(z) + (1 - x) * pt.log(1 - z), axis=1)

    x = train.batch("x")
    next_noise, keep = rng_binomial(noise, 1, 1 - CORRUPTION, x.shape)
    cost = pt.mean(loss(x, reconstruct(x * keep.astype("float32"))))
    # updates= advances the generator on every step: a fresh corruption mask each time
    step = st.compile_step(cost, [W, bh, bv], train, st.optim.adam(1e-3), updates={noise: next_noise})
    out = {"step": step}
    if valid is not None:
        xv = valid.batch("x")
        out["validation"] = st.compile_eval({"loss": loss(xv, reconstruct(xv))}, valid)
    return out


if __name__ == "__main__":
    from _main import main

    main(__file__, epochs=FIT["epochs"])
