"""A small LeNet-style convnet: two conv (5x5) + max-pool layers and a softmax classifier, on 28x28
images streamed as rows of 784 features and reshaped inside the graph."""

import numpy as np

import symtrain as st
from symtrain.backend import pt, shared

STREAM = {"batch_size": 64, "chunk_rows": 4096}
FIT = {"epochs": 8, "monitor": "error", "restore_best": True}


def weights(rng, shape, fan_in, name):
    return shared((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype("float32"), name=name)


def convnet(x, params, batch):
    c1, b1, c2, b2, W, b = params
    img = x.reshape((batch, 1, 28, 28))
    h = st.nnet.relu(st.nnet.conv2d(img, c1, filter_shape=(8, 1, 5, 5)) + b1.dimshuffle("x", 0, "x", "x"))
    h = st.nnet.pool_2d(h, (2, 2), ignore_border=True)                                    # 8 x 12 x 12
    h = st.nnet.relu(st.nnet.conv2d(h, c2, filter_shape=(16, 8, 5, 5)) + b2.dimshuffle("x", 0, "x", "x"))
    h = st.nnet.pool_2d(h, (2, 2), ignore_border=True)                                    # 16 x 4 x 4
    return st.nnet.softmax(h.flatten(2) @ W + b)


def build(train, valid, seed=0):
    rng = np.random.default_rng(seed)
    params = [weights(rng, (8, 1, 5, 5), 25, "conv1/W"), shared(np.zeros(8, "float32"), name="conv1/b"),
              weights(rng, (16, 8, 5, 5), 200, "conv2/W"), shared(np.zeros(16, "float32"), name="conv2/b"),
              weights(rng, (256, 10), 256, "out/W"), shared(np.zeros(10, "float32"), name="out/b")]
    x, y = train.batch("x"), train.batch("y")
    cost = st.nnet.categorical_crossentropy(convnet(x, params, train.batch_size), y).mean()
    step = st.compile_step(cost, params, train, st.optim.adam(2e-3))
    out = {"step": step}
    if valid is not None:
        p, yv = convnet(valid.batch("x"), params, valid.batch_size), valid.batch("y")
        out["validation"] = st.compile_eval({"error": pt.neq(pt.argmax(p, axis=1), yv).astype("float32"),
                                             "loss": st.nnet.categorical_crossentropy(p, yv)}, valid)
    return out


if __name__ == "__main__":
    from _main import main

    main(__file__, epochs=FIT["epochs"])
