"""Learning-rate (or any hyper-parameter) schedules held in a shared variable the compiled step reads.

A schedule is a pure function of a clock: ``value(step, epoch)`` looks at ``step`` (the number of step
calls made before this one, counted over the whole run) when ``per="step"`` and at ``epoch`` (0-based) when
``per="epoch"``. ``advance(step, epoch)`` writes that value into the shared variable ``schedule/<name>``,
so the compiled function sees it on its next call without recompiling. The trainer (``fit``) calls
``advance`` before every step call; resuming from a checkpoint only needs the cursor, since the value is
recomputed from (step, epoch).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from symtrain.backend import config, shared
from symtrain.errors import ConfigError
from symtrain.validate import check_int

PERIODS = ("step", "epoch")


@dataclass(eq=False)
class Schedule(ABC):
    """Base class: subclasses define ``at(t)``, the value at clock tick ``t`` (t >= 0)."""

    name: str = field(default="lr", kw_only=True)
    per: str = field(default="step", kw_only=True)

    def __post_init__(self) -> None:
        if self.per not in PERIODS:
            raise ConfigError(f"per must be 'step' or 'epoch', got {self.per!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        self._variable = None
        self._last: float | None = None

    @abstractmethod
    def at(self, t: int) -> float:
        """The value at tick ``t`` of this schedule's own clock (steps or epochs)."""

    def value(self, step: int, epoch: int) -> float:
        """The scheduled value before step call ``step`` (global, 0-based) in epoch ``epoch`` (0-based)."""
        t = step if self.per == "step" else epoch
        if int(t) != t or t < 0:
            raise ConfigError(f"{self.per} must be a non-negative integer, got {t!r}")
        return float(self.at(int(t)))

    @property
    def variable_name(self) -> str:
        return f"schedule/{self.name}"

    @property
    def variable(self) -> Any:
        """The floatX scalar shared variable ``schedule/<name>`` holding the current value (made on first
        use)."""
        if self._variable is None:
            self._last = self.value(0, 0)
            self._variable = shared(np.asarray(self._last, dtype=config.floatX), name=self.variable_name)
        return self._variable

    def advance(self, step: int, epoch: int) -> float:
        """Set the shared variable to ``value(step, epoch)`` (a no-op when unchanged) and return the value."""
        v = self.value(step, epoch)
        var = self.variable
        if v != self._last:
            var.set_value(np.asarray(v, dtype=var.dtype))
            self._last = v
        return v


def _finite(name: str, v: Any) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {v}")
    return v


def _count(name: str, v: Any) -> int:
    """``v`` as an int >= 1 (ConfigError naming ``name``)."""
    return check_int(name, v, 1, expected="a positive integer")


@dataclass(eq=False)
class Constant(Schedule):
    """``value`` at every tick."""

    base: float = 0.0

    def at(self, t: int) -> float:
        return self.base


@dataclass(eq=False)
class StepDecay(Schedule):
    """``base * drop ** (t // every)``: multiply by ``drop`` once every ``every`` ticks."""

    base: float = 0.0
    drop: float = 0.5
    every: int = 10

    def at(self, t: int) -> float:
        return self.base * self.drop ** (t // self.every)


@dataclass(eq=False)
class Exponential(Schedule):
    """``base * gamma ** t``."""

    base: float = 0.0
    gamma: float = 0.95

    def at(self, t: int) -> float:
        return self.base * self.gamma ** t


@dataclass(eq=False)
class Cosine(Schedule):
    """``min_value + (base - min_value) * (1 + cos(pi * min(t, total) / total)) / 2``: half a cosine."""

    base: float = 0.0
    total: int = 1
    min_value: float = 0.0

    def at(self, t: int) -> float:
        return self.min_value + (self.base - self.min_value) * (1
                                                                + math.cos(math.pi * min(t, self.total)
                                                                           / self.total)) / 2


@dataclass(eq=False)
class LinearWarmup(Schedule):
    """``base * (t + 1) / warmup`` for ``t < warmup``, then ``then.at(t - warmup)`` (or ``base`` without
    ``then``)."""

    base: float = 0.0
    warmup: int = 1
    then: Schedule | None = None

    def at(self, t: int) -> float:
        if t < self.warmup:
            return self.base * (t + 1) / self.warmup
        return self.base if self.then is None else self.then.at(t - self.warmup)


def constant(value: float, *, name: str = "lr") -> Constant:
    """A schedule that never changes (useful to make a fixed value checkpointable and settable)."""
    return Constant(base=_finite("value", value), name=name, per="step")


def step_decay(value: float, drop: float = 0.5, every: int = 10, *, per: str = "epoch",
               name: str = "lr") -> StepDecay:
    """``value * drop ** (t // every)`` with t the epoch (default) or the step."""
    drop = _finite("drop", drop)
    if drop <= 0:
        raise ConfigError(f"drop must be > 0, got {drop}")
    return StepDecay(base=_finite("value", value), drop=drop, every=_count("every", every), per=per,
                     name=name)


def exponential(value: float, gamma: float, *, per: str = "epoch", name: str = "lr") -> Exponential:
    """``value * gamma ** t`` with t the epoch (default) or the step."""
    gamma = _finite("gamma", gamma)
    if gamma <= 0:
        raise ConfigError(f"gamma must be > 0, got {gamma}")
    return Exponential(base=_finite("value", value), gamma=gamma, per=per, name=name)


def cosine(value: float, total: int, min_value: float = 0.0, *, per: str = "step",
           name: str = "lr") -> Cosine:
    """Cosine annealing from ``value`` at t=0 to ``min_value`` at t=total, constant afterwards."""
    return Cosine(base=_finite("value", value), total=_count("total", total),
                  min_value=_finite("min_value", min_value), per=per, name=name)


def linear_warmup(value: float | None = None, warmup: int = 1, then: Schedule | None = None, *,
                  per: str | None = None, name: str = "lr") -> LinearWarmup:
    """Ramp linearly to ``value`` over ``warmup`` ticks (``value*(t+1)/warmup``), then follow ``then``.

    ``then`` runs on its own clock shifted by ``warmup`` (its t=0 is the first tick after the warm-up) and
    must count in the same unit; ``value`` defaults to ``then``'s starting value, so
    ``linear_warmup(warmup=100, then=cosine(1e-3, total=900))`` rises to 1e-3 and then anneals.
    """
    if then is not None and not isinstance(then, Schedule):
        raise ConfigError(f"then must be a schedule (e.g. cosine(...)), got {type(then).__name__}")
    if per is None:
        per = then.per if then is not None else "step"
    if then is not None and then.per != per:
        raise ConfigError(f"then counts per {then.per!r} but the warm-up per {per!r}: use the same unit")
    if value is None:
        if then is None:
            raise ConfigError("linear_warmup needs value= (the rate reached after warm-up) or then=")
        value = then.at(0)
    return LinearWarmup(base=_finite("value", value), warmup=_count("warmup", warmup), then=then, per=per,
                        name=name)
