"""Update builders in the Lasagne style: ``adam(loss_or_grads, params, ...)`` -> OrderedDict var -> new value.

Called without ``params`` a builder returns a configured :class:`UpdateRule` instead, whose first positional
argument is the learning rate: ``adam(1e-3)`` or ``adam(learning_rate=1e-3)``; ``compile_step`` (or you)
later calls ``rule(loss_or_grads, params)``. Which form you get is decided by ``params`` alone.

Every step shared by all builders, in this order: gradients (of the loss, or the given list, cast to each
parameter's dtype), clipping by global norm (``max_norm``), coupled L2 weight decay ``g + weight_decay*p``
(all but AdamW, whose decay is decoupled), then the rule. State variables are shared variables of the
parameter's dtype and static shape named ``"<param name>/<rule name>/<slot>"`` (``"W1/adam/m"``), step
counters ``"<rule name>/t"`` (int64); ``name=`` sets the rule name, so two rules in one model can coexist.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from symtrain.backend import SharedVariable, TensorVariable, pt, shared
from symtrain.errors import ConfigError
from symtrain.optim.clip import check_params, clip_by_global_norm, get_or_compute_grads
from symtrain.optim.schedules import Schedule

_UNSET = object()


def slot(param: Any, owner: str, name: str, value: float = 0.0) -> Any:
    """A state shared variable shaped, typed and named like ``param``: ``"<param>/<owner>/<name>"``.

    Use it in your own update rules so that their state is checkpointed under stable names.
    """
    init = np.full(param.get_value(borrow=True).shape, value, dtype=param.dtype)
    return shared(init, name=f"{param.name}/{owner}/{name}", shape=param.type.shape)


def counter(owner: str) -> Any:
    """The int64 step counter ``"<owner>/t"`` (0 before the first update)."""
    return shared(np.asarray(0, dtype=np.int64), name=f"{owner}/t")


def check_learning_rate(lr: Any, argument: str = "learning_rate") -> Any:
    """Accept a finite number, a scalar float shared variable or a :class:`Schedule`; ConfigError
    otherwise."""
    if isinstance(lr, Schedule):
        return lr
    if isinstance(lr, SharedVariable):
        if lr.ndim != 0 or not str(lr.dtype).startswith("float"):
            raise ConfigError(f"{argument} must be a scalar float shared variable, got {lr.type}")
        return lr
    if isinstance(lr, bool) or not isinstance(lr, int | float | np.integer | np.floating):
        raise ConfigError(
            f"{argument} must be a number, a scalar shared variable or a schedule, got {type(lr).__name__}")
    if not math.isfinite(float(lr)) or lr < 0:
        raise ConfigError(f"{argument} must be a finite number >= 0, got {lr}")
    return float(lr)


def learning_rate_expr(lr: Any, dtype: str) -> Any:
    """The learning rate as a scalar of ``dtype`` (a constant, the shared variable, or the schedule's
    variable)."""
    if isinstance(lr, Schedule):
        lr = lr.variable
    if isinstance(lr, SharedVariable):
        return lr if lr.dtype == dtype else lr.astype(dtype)
    return pt.constant(np.asarray(lr, dtype=dtype))


class UpdateRule:
    """A configured optimizer: ``rule(loss_or_grads, params)`` returns the OrderedDict of updates."""

    def __init__(self, kind: str, build: Callable, options: dict[str, Any]):
        self.kind = kind
        self.options = dict(options)
        self._build = build

    @property
    def name(self) -> str:
        return self.options["name"]

    @property
    def learning_rate(self) -> Any:
        return self.options["learning_rate"]

    @property
    def schedules(self) -> list[Schedule]:
        """Schedules this rule reads (the scheduler advances them)."""
        return [v for v in self.options.values() if isinstance(v, Schedule)]

    def __call__(self, loss_or_grads: Any, params: Sequence) -> OrderedDict:
        params = check_params(params)
        grads = get_or_compute_grads(loss_or_grads, params)
        grads = [g if g.dtype == p.dtype else g.astype(p.dtype) for g, p in zip(grads, params)]
        opts = self.options
        if opts.get("max_norm") is not None:
            grads = clip_by_global_norm(grads, opts["max_norm"])
        wd = opts.get("weight_decay", 0.0)
        if wd and self.kind != "adamw":
            grads = [g + np.asarray(wd, p.dtype) * p for g, p in zip(grads, params)]
        updates = self._build(grads, params, opts)
        for var, new in updates.items():
            if new.dtype != var.dtype:  # a constant of the wrong dtype would upcast silently
                raise TypeError(f"internal: update of {var.name} has dtype {new.dtype}, not {var.dtype}")
        return updates

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.kind}({args})"


def _configure(kind: str, build: Callable, loss_or_grads: Any, params: Any, learning_rate: Any,
               default_lr: Any, options: dict[str, Any]) -> UpdateRule | OrderedDict:
    if params is None:
        if loss_or_grads is not None:
            if learning_rate is not _UNSET:
                raise ConfigError(
                    f"{kind}() got a learning rate twice: called without params, its first argument is the "
                    f"learning rate; to build updates pass params: {kind}(loss, params, learning_rate=...)")
            if isinstance(loss_or_grads, TensorVariable | list | tuple) and not isinstance(loss_or_grads,
                                                                                       SharedVariable):
                raise ConfigError(f"{kind}() got a loss but no params: pass {kind}(loss, params, ...), or "
                                  f"{kind}(learning_rate) for an update rule")
            learning_rate = loss_or_grads
    elif loss_or_grads is None:
        raise ConfigError(f"{kind}() got params but no loss_or_grads")
    if learning_rate is _UNSET:
        if default_lr is None:
            raise ConfigError(f"{kind}() needs a learning_rate (it has no default)")
        learning_rate = default_lr
    options = {"learning_rate": check_learning_rate(learning_rate), **options}
    _check_options(kind, options)
    rule = UpdateRule(kind, build, options)
    return rule if params is None else rule(loss_or_grads, params)


def _check_options(kind: str, o: dict[str, Any]) -> None:
    name = o["name"]
    if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/"):
        raise ConfigError(f"name must be a non-empty string without leading/trailing '/', got {name!r}")
    for key in ("momentum", "rho", "beta1", "beta2"):
        if key in o and not (isinstance(o[key], int | float) and 0 <= o[key] < 1):
            raise ConfigError(f"{key} must be a number in [0, 1), got {o[key]!r}")
    if "epsilon" in o and not (isinstance(o["epsilon"], int | float) and o["epsilon"] > 0):
        raise ConfigError(f"epsilon must be a number > 0, got {o['epsilon']!r}")
    wd = o["weight_decay"]
    if isinstance(wd, bool) or not isinstance(wd, int | float) or not math.isfinite(wd) or wd < 0:
        raise ConfigError(f"weight_decay must be a finite number >= 0, got {wd!r}")
    mn = o["max_norm"]
    if mn is not None and (isinstance(mn, bool) or not isinstance(mn, int | float) or not math.isfinite(mn)
                           or mn <= 0):
        raise ConfigError(f"max_norm must be None or a finite number > 0, got {mn!r}")


def _c(value: float, dtype: str) -> Any:
    return np.asarray(value, dtype=dtype)


# --- the rules: (grads, params, options) -> OrderedDict -------------------------------------------------

def _sgd(grads, params, o):
    return OrderedDict((p, p - learning_rate_expr(o["learning_rate"], p.dtype) * g)
                       for g, p in zip(grads, params))


def _momentum_rule(nesterov: bool):
    def build(grads, params, o):
        updates = OrderedDict()
        for g, p in zip(grads, params):
            lr, mu = learning_rate_expr(o["learning_rate"], p.dtype), _c(o["momentum"], p.dtype)
            v = slot(p, o["name"], "velocity")
            v_new = mu * v - lr * g
            updates[v] = v_new
            updates[p] = p + mu * v_new - lr * g if nesterov else p + v_new
        return updates
    return build


def _adagrad(grads, params, o):
    updates = OrderedDict()
    for g, p in zip(grads, params):
        lr, eps = learning_rate_expr(o["learning_rate"], p.dtype), _c(o["epsilon"], p.dtype)
        acc = slot(p, o["name"], "accu")
        acc_new = acc + pt.sqr(g)
        updates[acc] = acc_new
        updates[p] = p - lr * g / pt.sqrt(acc_new + eps)
    return updates


def _rmsprop(grads, params, o):
    updates = OrderedDict()
    for g, p in zip(grads, params):
        lr, eps = learning_rate_expr(o["learning_rate"], p.dtype), _c(o["epsilon"], p.dtype)
        rho = _c(o["rho"], p.dtype)
        acc = slot(p, o["name"], "accu")
        acc_new = rho * acc + (_c(1, p.dtype) - rho) * pt.sqr(g)
        updates[acc] = acc_new
        updates[p] = p - lr * g / pt.sqrt(acc_new + eps)
    return updates


def _adadelta(grads, params, o):
    updates = OrderedDict()
    for g, p in zip(grads, params):
        lr, eps = learning_rate_expr(o["learning_rate"], p.dtype), _c(o["epsilon"], p.dtype)
        rho, one = _c(o["rho"], p.dtype), _c(1, p.dtype)
        acc, delta = slot(p, o["name"], "accu"), slot(p, o["name"], "delta_accu")
        acc_new = rho * acc + (one - rho) * pt.sqr(g)
        step = g * pt.sqrt(delta + eps) / pt.sqrt(acc_new + eps)
        updates[acc] = acc_new
        updates[p] = p - lr * step
        updates[delta] = rho * delta + (one - rho) * pt.sqr(step)
    return updates


def _adam_rule(decoupled: bool):
    def build(grads, params, o):
        updates = OrderedDict()
        t = counter(o["name"])
        t_new = t + 1
        updates[t] = t_new
        for g, p in zip(grads, params):
            dt = p.dtype
            lr, eps = learning_rate_expr(o["learning_rate"], dt), _c(o["epsilon"], dt)
            b1, b2, one = _c(o["beta1"], dt), _c(o["beta2"], dt), _c(1, dt)
            tf = t_new.astype(dt)
            m, v = slot(p, o["name"], "m"), slot(p, o["name"], "v")
            m_new = b1 * m + (one - b1) * g
            v_new = b2 * v + (one - b2) * pt.sqr(g)
            step = (m_new / (one - b1 ** tf)) / (pt.sqrt(v_new / (one - b2 ** tf)) + eps)
            if decoupled and o["weight_decay"]:
                step = step + _c(o["weight_decay"], dt) * p
            updates[m] = m_new
            updates[v] = v_new
            updates[p] = p - lr * step
        return updates
    return build


# --- public builders ------------------------------------------------------------------------------------

def sgd(loss_or_grads: Any = None, params: Sequence | None = None, learning_rate: Any = _UNSET, *,
        max_norm: float | None = None, weight_decay: float = 0.0, name: str = "sgd") -> Any:
    """Stochastic gradient descent: ``p <- p - lr * g``. ``learning_rate`` is required."""
    return _configure("sgd", _sgd, loss_or_grads, params, learning_rate, None,
                      {"max_norm": max_norm, "weight_decay": weight_decay, "name": name})


def momentum(loss_or_grads: Any = None, params: Sequence | None = None, learning_rate: Any = _UNSET,
             momentum: float = 0.9, *, max_norm: float | None = None, weight_decay: float = 0.0,
             name: str = "momentum") -> Any:
    """Classical momentum (Lasagne): ``v <- mu*v - lr*g; p <- p + v``. ``learning_rate`` is required."""
    return _configure("momentum", _momentum_rule(False), loss_or_grads, params, learning_rate, None,
                      {"momentum": momentum, "max_norm": max_norm, "weight_decay": weight_decay,
                       "name": name})


def nesterov_momentum(loss_or_grads: Any = None, params: Sequence | None = None, learning_rate: Any = _UNSET,
                      momentum: float = 0.9, *, max_norm: float | None = None, weight_decay: float = 0.0,
                      name: str = "nesterov") -> Any:
    """Nesterov momentum (Lasagne): ``v <- mu*v - lr*g; p <- p + mu*v - lr*g``. ``learning_rate`` is
    required."""
    return _configure("nesterov_momentum", _momentum_rule(True), loss_or_grads, params, learning_rate, None,
                      {"momentum": momentum, "max_norm": max_norm, "weight_decay": weight_decay,
                       "name": name})


def adagrad(loss_or_grads: Any = None, params: Sequence | None = None, learning_rate: Any = _UNSET,
            epsilon: float = 1e-6, *, max_norm: float | None = None, weight_decay: float = 0.0,
            name: str = "adagrad") -> Any:
    """AdaGrad: ``a <- a + g^2; p <- p - lr*g/sqrt(a + eps)``; default lr 0.01."""
    return _configure("adagrad", _adagrad, loss_or_grads, params, learning_rate, 0.01,
                      {"epsilon": epsilon, "max_norm": max_norm, "weight_decay": weight_decay, "name": name})


def rmsprop(loss_or_grads: Any = None, params: Sequence | None = None, learning_rate: Any = _UNSET,
            rho: float = 0.9, epsilon: float = 1e-6, *, max_norm: float | None = None,
            weight_decay: float = 0.0, name: str = "rmsprop") -> Any:
    """RMSProp: ``a <- rho*a + (1-rho)*g^2; p <- p - lr*g/sqrt(a + eps)``; default lr 0.001."""
    return _configure("rmsprop", _rmsprop, loss_or_grads, params, learning_rate, 0.001,
                      {"rho": rho, "epsilon": epsilon, "max_norm": max_norm, "weight_decay": weight_decay,
                       "name": name})


def adadelta(loss_or_grads: Any = None, params: Sequence | None = None, learning_rate: Any = _UNSET,
             rho: float = 0.95, epsilon: float = 1e-6, *, max_norm: float | None = None,
             weight_decay: float = 0.0, name: str = "adadelta") -> Any:
    """AdaDelta (Zeiler 2012): ``a <- rho*a + (1-rho)g^2; u = g*sqrt(d+eps)/sqrt(a+eps); p <- p - lr*u;
    d <- rho*d + (1-rho)u^2``; default lr 1.0."""
    return _configure("adadelta", _adadelta, loss_or_grads, params, learning_rate, 1.0,
                      {"rho": rho, "epsilon": epsilon, "max_norm": max_norm, "weight_decay": weight_decay,
                       "name": name})


def adam(loss_or_grads: Any = None, params: Sequence | None = None, learning_rate: Any = _UNSET,
         beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, *, max_norm: float | None = None,
         weight_decay: float = 0.0, name: str = "adam") -> Any:
    """Adam (Kingma & Ba, Algorithm 1): bias-corrected moments, ``p <- p - lr*mhat/(sqrt(vhat)+eps)``;
    default lr 0.001. ``weight_decay`` here is coupled L2 (added to the gradient); see :func:`adamw`."""
    return _configure("adam", _adam_rule(False), loss_or_grads, params, learning_rate, 0.001,
                      {"beta1": beta1, "beta2": beta2, "epsilon": epsilon, "max_norm": max_norm,
                       "weight_decay": weight_decay, "name": name})


def adamw(loss_or_grads: Any = None, params: Sequence | None = None, learning_rate: Any = _UNSET,
          beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, *, max_norm: float | None = None,
          weight_decay: float = 0.01, name: str = "adamw") -> Any:
    """AdamW (Loshchilov & Hutter; PyTorch's form): ``p <- p - lr*(mhat/(sqrt(vhat)+eps) + weight_decay*p)``,
    the decay decoupled from the moments; default lr 0.001, weight_decay 0.01."""
    return _configure("adamw", _adam_rule(True), loss_or_grads, params, learning_rate, 0.001,
                      {"beta1": beta1, "beta2": beta2, "epsilon": epsilon, "max_norm": max_norm,
                       "weight_decay": weight_decay, "name": name})


BUILDERS = {f.__name__: f for f in (sgd, momentum, nesterov_momentum, adagrad, rmsprop, adadelta, adam,
                                    adamw)}
