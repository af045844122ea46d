"""Theano's crossentropy losses, one value per example (reduce with ``.mean()`` yourself, as in Theano)."""

from __future__ import annotations

import numpy as np

from symtrain.backend import pt
from symtrain.errors import ConfigError

__all__ = ["categorical_crossentropy", "binary_crossentropy"]


def categorical_crossentropy(coding_dist, true_dist):
    """Cross-entropy between predicted class probabilities and the targets, per example.

    ``coding_dist``: (n, classes) probabilities (e.g. a softmax output). ``true_dist``: either a one-hot
    or soft-label matrix of the same shape (``-sum(t * log(p), axis=-1)``) or an integer vector of class
    indices (``-log(p[arange(n), t])``), exactly as Theano accepted both.
    """
    coding_dist = pt.as_tensor_variable(coding_dist)
    true_dist = pt.as_tensor_variable(true_dist)
    if true_dist.ndim == coding_dist.ndim:
        return -pt.sum(true_dist * pt.log(coding_dist), axis=coding_dist.ndim - 1)
    if true_dist.ndim == coding_dist.ndim - 1 == 1:
        if not true_dist.dtype.startswith(("int", "uint")):
            raise ConfigError(
                "categorical_crossentropy: class-index true_dist must be an integer vector, "
                f"got {true_dist.dtype}"
            )
        return -pt.log(coding_dist[pt.arange(true_dist.shape[0]), true_dist])
    raise ConfigError(
        "categorical_crossentropy: true_dist must have the shape of coding_dist (one-hot) or be an integer "
        f"vector of class indices for a matrix coding_dist; got ndim {true_dist.ndim} and {coding_dist.ndim}"
    )


def binary_crossentropy(output, target):
    """Elementwise ``-(target * log(output) + (1 - target) * log(1 - output))`` (Theano's argument order)."""
    output = pt.as_tensor_variable(output)
    target = pt.as_tensor_variable(target)
    one = np.asarray(1, dtype=output.dtype) if output.dtype.startswith("float") else 1
    return -(target * pt.log(output) + (one - target) * pt.log(one - output))
