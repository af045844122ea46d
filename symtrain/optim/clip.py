"""Gradient helpers shared by the update builders: gradients from a loss, global norm, clipping by it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from symtrain.backend import DisconnectedInputError, SharedVariable, TensorVariable, grad, pt
from symtrain.errors import ConfigError

CLIP_EPSILON = 1e-6


def check_params(params: Any) -> list:
    """Return ``params`` as a list of named, distinct shared variables, or raise ConfigError saying why.

    Optimizer state names derive from parameter names, so an unnamed or twice-named parameter would make a
    checkpoint ambiguous; it is refused rather than given a made-up name.
    """
    if not isinstance(params, list | tuple):
        raise ConfigError(f"params must be a list of shared variables, got {type(params).__name__}")
    params = list(params)
    if not params:
        raise ConfigError("params is empty: pass the list of shared variables to train")
    seen: dict[str, int] = {}
    for i, p in enumerate(params):
        if not isinstance(p, SharedVariable):
            raise ConfigError(f"params[{i}] is a {type(p).__name__}, not a shared variable ({p!r})")
        if not p.name:
            raise ConfigError(
                f"params[{i}] has no name: optimizer state and checkpoints are keyed by parameter name; "
                f"create it with shared(value, name='W1') or set p.name")
        if p.name in seen:
            raise ConfigError(
                f"params[{seen[p.name]}] and params[{i}] are both named {p.name!r}: parameter names must be "
                "unique (they key optimizer state and checkpoints)")
        if p.dtype not in ("float16", "float32", "float64"):
            raise ConfigError(f"params[{i}] ({p.name!r}) has dtype {p.dtype}: only float parameters train")
        seen[p.name] = i
    return params


def get_or_compute_grads(loss_or_grads: Any, params: Sequence) -> list:
    """Gradients of a scalar loss with respect to ``params``, or the given list of gradients checked."""
    if isinstance(loss_or_grads, list | tuple):
        grads = list(loss_or_grads)
        if len(grads) != len(params):
            raise ConfigError(f"loss_or_grads has {len(grads)} gradients for {len(params)} params")
        out = []
        for g, p in zip(grads, params):
            g = pt.as_tensor_variable(g)
            if g.ndim != p.ndim:
                raise ConfigError(f"the gradient for {p.name!r} has {g.ndim} dims, the parameter {p.ndim}")
            out.append(g)
        return out
    if not isinstance(loss_or_grads, TensorVariable):
        raise ConfigError("loss_or_grads must be a scalar loss expression or a list of gradients, got "
                          f"{type(loss_or_grads).__name__}")
    if loss_or_grads.ndim != 0:
        raise ConfigError(f"loss_or_grads must be a scalar loss or a list of gradients, got a "
                          f"{loss_or_grads.ndim}-d expression (reduce it with .mean() or .sum())")
    try:
        return grad(loss_or_grads, params)
    except DisconnectedInputError as exc:  # say which argument is wrong
        raise ConfigError(f"a parameter does not influence the loss: {exc}".splitlines()[0]) from exc


def global_norm(grads: Sequence) -> Any:
    """The L2 norm of all gradients taken together (sqrt of the sum of every squared entry)."""
    dtype = pt.as_tensor_variable(grads[0]).dtype
    return pt.sqrt(sum(pt.sum(pt.sqr(g)) for g in grads)).astype(dtype)


def clip_by_global_norm(grads: Sequence, max_norm: float, epsilon: float = CLIP_EPSILON) -> list:
    """Scale every gradient by ``min(1, max_norm / (norm + epsilon))`` where ``norm`` is the global norm.

    The same rule as ``torch.nn.utils.clip_grad_norm_``: directions are kept, only the length shrinks.
    """
    max_norm = float(max_norm)
    if not np.isfinite(max_norm) or max_norm <= 0:
        raise ConfigError(f"max_norm must be a positive finite number, got {max_norm}")
    grads = [pt.as_tensor_variable(g) for g in grads]
    norm = global_norm(grads)
    dtype = norm.dtype
    scale = pt.minimum(np.asarray(1.0, dtype), np.asarray(max_norm, dtype)
                       / (norm + np.asarray(epsilon, dtype)))
    return [(g * scale.astype(g.dtype)) for g in grads]
