"""Theano's batch normalization: the inference-form ``batch_normalization`` and the training helpers
``batch_normalization_train`` / ``batch_normalization_test`` (Theano 0.9 signatures)."""

from __future__ import annotations

from symtrain.backend import pt
from symtrain.errors import ConfigError

__all__ = ["batch_normalization", "batch_normalization_train", "batch_normalization_test"]


def batch_normalization(inputs, gamma, beta, mean, std, mode: str = "low_mem"):
    """``(inputs - mean) * (gamma / std) + beta``, all broadcast against ``inputs`` (Theano's bn.py).

    ``mode`` ('low_mem' or 'high_mem') chose an implementation in Theano; the values are the same.
    """
    if mode not in ("low_mem", "high_mem"):
        raise ConfigError(f"batch_normalization: mode must be 'low_mem' or 'high_mem', got {mode!r}")
    inputs, gamma, beta, mean, std = (pt.as_tensor_variable(v) for v in (inputs, gamma, beta, mean, std))
    return (inputs - mean) * (gamma / std) + beta


def _axes(axes, ndim: int) -> tuple[int, ...]:
    if axes == "per-activation":
        return (0,)
    if axes == "spatial":
        return (0, *range(2, ndim))
    try:
        out = tuple(sorted(int(a) for a in axes))
    except TypeError as exc:
        raise ConfigError(
            f"batch_normalization: axes must be 'per-activation', 'spatial' or ints, got {axes!r}"
        ) from exc
    if not out or any(a < 0 or a >= ndim for a in out) or len(set(out)) != len(out):
        raise ConfigError(f"batch_normalization: axes {axes!r} are not distinct axes of a {ndim}-d input")
    return out


def _fit(param, axes: tuple[int, ...], ndim: int, name: str):
    """Theano allowed params either with the input's ndim or with the reduced axes left out."""
    param = pt.as_tensor_variable(param)
    if param.ndim == ndim:
        return param
    if param.ndim == ndim - len(axes):
        pattern, kept = [], iter(range(param.ndim))
        for ax in range(ndim):
            pattern.append("x" if ax in axes else next(kept))
        return param.dimshuffle(*pattern)
    raise ConfigError(
        f"batch_normalization: {name} has {param.ndim} dims; expected {ndim} or {ndim - len(axes)}"
    )


def batch_normalization_train(
    inputs,
    gamma,
    beta,
    axes="per-activation",
    epsilon: float = 1e-4,
    running_average_factor: float = 0.1,
    running_mean=None,
    running_var=None,
):
    """Normalize with the batch statistics over ``axes`` ('per-activation' = (0,), 'spatial' = all but 1).

    Returns ``(out, mean, invstd)``, plus ``(new_running_mean, new_running_var)`` when running averages
    are given (put ``{running_mean: new_running_mean, ...}`` in the updates). As in Theano the running
    variance uses the unbiased estimate (m / (m - 1)).
    """
    inputs = pt.as_tensor_variable(inputs)
    if epsilon < 1e-5:
        raise ConfigError(f"batch_normalization_train: epsilon must be >= 1e-5 (as in Theano), got {epsilon}")
    if (running_mean is None) != (running_var is None):
        raise ConfigError("batch_normalization_train: give both running_mean and running_var, or neither")
    axes = _axes(axes, inputs.ndim)
    gamma = _fit(gamma, axes, inputs.ndim, "gamma")
    beta = _fit(beta, axes, inputs.ndim, "beta")
    mean = inputs.mean(axis=axes, keepdims=True)
    var = inputs.var(axis=axes, keepdims=True)
    invstd = 1.0 / pt.sqrt(var + epsilon)
    out = (inputs - mean) * (gamma * invstd) + beta
    if running_mean is None:
        return out, mean, invstd
    rm = _fit(running_mean, axes, inputs.ndim, "running_mean")
    rv = _fit(running_var, axes, inputs.ndim, "running_var")
    m = pt.cast(pt.prod([inputs.shape[a] for a in axes]), inputs.dtype)
    f = running_average_factor
    new_mean = rm * (1.0 - f) + mean * f
    new_var = rv * (1.0 - f) + (m / (m - 1)) * var * f
    # give the running averages back in the shape they were passed
    new_mean = new_mean.reshape(pt.as_tensor_variable(running_mean).shape)
    new_var = new_var.reshape(pt.as_tensor_variable(running_var).shape)
    return out, mean, invstd, new_mean, new_var


def batch_normalization_test(inputs, gamma, beta, mean, var, axes="per-activation", epsilon: float = 1e-4):
    """Normalize with given (running) ``mean`` and ``var``: the inference form of the training helper."""
    inputs = pt.as_tensor_variable(inputs)
    axes = _axes(axes, inputs.ndim)
    gamma, beta, mean, var = (
        _fit(p, axes, inputs.ndim, n)
        for p, n in ((gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var"))
    )
    return (inputs - mean) * (gamma / pt.sqrt(var + epsilon)) + beta
