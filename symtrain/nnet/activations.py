"""Theano's ``tensor.nnet`` activations and softmax, rebuilt from graph-library ops so gradients work.

``sigmoid`` and ``softplus`` are the very objects of the graph library (``pt.sigmoid``), so legacy
identity tests such as ``activation == T.nnet.sigmoid`` keep holding after migration.
"""

from __future__ import annotations

import numpy as np

from symtrain.backend import pt, sigmoid, softplus, special
from symtrain.errors import ConfigError

__all__ = [
    "sigmoid",
    "softplus",
    "ultra_fast_sigmoid",
    "hard_sigmoid",
    "relu",
    "elu",
    "softmax",
    "log_softmax",
    "round",
]

# Theano's ultra_fast_sigmoid was a piecewise approximation (max error ~0.02); the exact sigmoid is as
# fast on a CPU today, so the name is kept as an alias of the same object.
ultra_fast_sigmoid = sigmoid


def _c(value, like):
    """A Python number as a constant of ``like``'s float dtype (not floatX: float64 graphs stay exact)."""
    if isinstance(value, int | float) and like.dtype.startswith("float"):
        return np.asarray(value, dtype=like.dtype)
    return value


def hard_sigmoid(x):
    """Theano's piecewise-linear sigmoid: ``clip(0.2 * x + 0.5, 0, 1)``."""
    x = pt.as_tensor_variable(x)
    return pt.clip(x * _c(0.2, x) + _c(0.5, x), 0, 1)


def relu(x, alpha=0):
    """Rectified linear unit; ``alpha`` is the slope for negative inputs (leaky ReLU), as in Theano.

    Same formula as Theano (``0.5 * (x + |x|)``), so the gradient at exactly 0 is ``0.5 * (1 + alpha)``.
    """
    x = pt.as_tensor_variable(x)
    if isinstance(alpha, int | float) and alpha == 0:
        return _c(0.5, x) * (x + abs(x))
    f1 = _c(0.5 * (1 + alpha), x)
    f2 = _c(0.5 * (1 - alpha), x)
    return f1 * x + f2 * abs(x)


def elu(x, alpha=1):
    """Exponential linear unit: ``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    x = pt.as_tensor_variable(x)
    return pt.switch(x > 0, x, _c(alpha, x) * pt.expm1(x))


def _rowwise(x, name: str):
    x = pt.as_tensor_variable(x)
    if x.ndim == 0:
        raise ConfigError(f"{name}: x must have at least 1 dimension, got a scalar")
    if x.ndim == 1:
        x = pt.shape_padleft(x)  # Theano padded a vector to a 1 x N row
    return x


def softmax(x):
    """Softmax per row, with Theano's semantics: a matrix is normalised row by row (the last axis),
    and a vector becomes a 1 x N matrix. (``special.softmax`` without ``axis`` normalises everything.)"""
    return special.softmax(_rowwise(x, "softmax"), axis=-1)


def log_softmax(x):
    """Log of :func:`softmax`, computed stably; same shape rules (vector -> 1 x N)."""
    return special.log_softmax(_rowwise(x, "log_softmax"), axis=-1)


def round(x, mode: str = "half_away_from_zero"):  # noqa: A001 - Theano's name
    """Theano 0.7 ``round``: halves go away from zero (2.5 -> 3, -0.5 -> -1); ``mode='half_to_even'``
    gives NumPy's banker's rounding, the default of newer libraries."""
    if mode not in ("half_away_from_zero", "half_to_even"):
        raise ConfigError(f"round: mode must be 'half_away_from_zero' or 'half_to_even', got {mode!r}")
    return pt.round(pt.as_tensor_variable(x), mode=mode)
