"""An Aesara-era MLP with dropout (Python 3, ``import aesara.tensor as at``).

Usage: python aesara_mlp.py DATASET [N_EPOCHS]
"""
import gzip
import os
import pickle
import sys

import aesara
import aesara.tensor as at
import numpy as np
from aesara.tensor.random.utils import RandomStream
from aesara.tensor.var import TensorVariable

os.environ.setdefault("AESARA_FLAGS", "floatX=float32")


def load_data(path):
    with gzip.open(path, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    return [(aesara.shared(np.asarray(x, dtype=aesara.config.floatX), borrow=True),
             aesara.shared(np.asarray(y, dtype="int32"), borrow=True)) for x, y in (train, valid)]


def layer(rng, inp, n_in, n_out, activation):
    w = aesara.shared(rng.normal(0, np.sqrt(2.0 / n_in), (n_in, n_out)).astype(aesara.config.floatX))
    b = aesara.shared(np.zeros(n_out, dtype=aesara.config.floatX))
    return activation(at.dot(inp, w) + b), [w, b]


def main(path, n_epochs, batch_size=20, lr=0.1):
    (train_x, train_y), (valid_x, valid_y) = load_data(path)
    n_train = train_x.get_value(borrow=True).shape[0] // batch_size
    n_valid = valid_x.get_value(borrow=True).shape[0] // batch_size
    rng = np.random.default_rng(0)
    srng = RandomStream(seed=42)

    index = at.lscalar("index")
    x = at.matrix("x")
    y = at.ivector("y")
    assert isinstance(x, TensorVariable)

    h, p1 = layer(rng, x, 64, 48, at.nnet.relu)
    mask = srng.binomial(1, 0.9, size=h.shape).astype(aesara.config.floatX)
    h_drop = h * mask / 0.9
    logits_train, p2 = layer(rng, h_drop, 48, 10, lambda v: v)
    probs_train = at.nnet.softmax(logits_train)
    probs_eval = at.nnet.softmax(at.dot(h, p2[0]) + p2[1])
    params = p1 + p2

    one_hot = at.extra_ops.to_one_hot(y, 10)
    cost = at.mean(at.nnet.categorical_crossentropy(probs_train, one_hot))
    error = at.mean(at.neq(at.argmax(probs_eval, axis=1), y))
    grads = aesara.grad(cost, params)

    sl = slice(index * batch_size, (index + 1) * batch_size)
    train = aesara.function([index], cost, updates=[(p, p - lr * g) for p, g in zip(params, grads)],
                            givens={x: train_x[sl], y: train_y[sl]})
    validate = aesara.function([index], error, givens={x: valid_x[sl], y: valid_y[sl]})

    print("initial validation error %f %%" % (np.mean([validate(i) for i in range(n_valid)]) * 100))
    for epoch in range(1, n_epochs + 1):
        costs = [train(i) for i in range(n_train)]
        err = np.mean([validate(i) for i in range(n_valid)])
        print("epoch %i, train cost %f, validation error %f %%" % (epoch, np.mean(costs), err * 100))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mnist.pkl.gz",
         int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ.get("N_EPOCHS", 10)))
