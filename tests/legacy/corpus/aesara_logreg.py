"""Aesara-era logistic regression with binary sigmoid units per class and a conv feature map.

Usage: python aesara_logreg.py DATASET [N_EPOCHS]
"""
import gzip
import os
import pickle
import sys

import aesara
import numpy as np
from aesara import tensor as at
from aesara.tensor.nnet import binary_crossentropy, sigmoid
from aesara.tensor.nnet import conv2d
from aesara.tensor.signal.pool import pool_2d


def main(path, n_epochs, batch_size=25, lr=0.5):
    with gzip.open(path, "rb") as f:
        (tx, ty), (vx, vy), _ = pickle.load(f, encoding="latin1")
    train_x = aesara.shared(tx.astype(aesara.config.floatX))
    train_y = aesara.shared(np.eye(10, dtype=aesara.config.floatX)[ty])
    valid_x = aesara.shared(vx.astype(aesara.config.floatX))
    valid_y = aesara.shared(vy.astype("int64"))

    rng = np.random.default_rng(1)
    filters = aesara.shared((rng.standard_normal((3, 1, 3, 3)) * 0.3).astype(aesara.config.floatX))
    w = aesara.shared(np.zeros((3 * 3 * 3, 10), dtype=aesara.config.floatX))
    b = aesara.shared(np.zeros(10, dtype=aesara.config.floatX))

    index = at.lscalar()
    x = at.matrix("x")
    t = at.matrix("t")
    images = x.reshape((-1, 1, 8, 8))
    feats = pool_2d(at.tanh(conv2d(images, filters, border_mode="valid")), ws=(2, 2), ignore_border=True)
    flat = at.flatten(feats, ndim=2)
    out = sigmoid(at.dot(flat, w) + b)
    cost = binary_crossentropy(out, t).sum(axis=1).mean()
    error = at.mean(at.neq(at.argmax(out, axis=1), at.lvector("y")))
    params = [filters, w, b]
    grads = aesara.grad(cost, params)

    sl = slice(index * batch_size, (index + 1) * batch_size)
    train = aesara.function([index], cost, updates=[(p, p - lr * g) for p, g in zip(params, grads)],
                            givens={x: train_x[sl], t: train_y[sl]})
    y_valid = at.lvector("y")
    error = at.mean(at.neq(at.argmax(out, axis=1), y_valid))
    validate = aesara.function([], error, givens={x: valid_x, y_valid: valid_y})

    n_train = tx.shape[0] // batch_size
    print("initial validation error %f %%" % (validate() * 100))
    for epoch in range(1, n_epochs + 1):
        costs = [train(i) for i in range(n_train)]
        print("epoch %i, train cost %f, validation error %f %%" % (epoch, np.mean(costs), validate() * 100))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mnist.pkl.gz",
         int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ.get("N_EPOCHS", 10)))
