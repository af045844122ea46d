"""Schedules produce the documented formulas, advance their shared variable, and reject bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from symtrain.backend import config
from symtrain.errors import ConfigError
from symtrain.optim import constant, cosine, exponential, linear_warmup, step_decay
from symtrain.optim.schedules import Schedule

pytestmark = pytest.mark.backend  # backend-conformance subset: also runs on Aesara


def test_constant():
    s = constant(0.3)
    assert [s.value(k, e) for k, e in [(0, 0), (100, 7)]] == [0.3, 0.3]


def test_step_decay_per_epoch_ignores_step():
    s = step_decay(0.1, drop=0.5, every=3)
    assert s.per == "epoch"
    assert [s.value(999, e) for e in range(7)] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def test_exponential_per_step():
    s = exponential(2.0, 0.9, per="step")
    assert [s.value(t, 5) for t in range(4)] == pytest.approx([2.0 * 0.9 ** t for t in range(4)])


def test_cosine_formula_and_floor():
    s = cosine(1.0, total=10, min_value=0.1)
    want = [0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 10) / 10)) / 2 for t in range(13)]
    assert [s.value(t, 0) for t in range(13)] == pytest.approx(want)
    assert s.value(5, 0) == pytest.approx(0.55) and s.value(12, 0) == pytest.approx(0.1)


def test_linear_warmup_alone_and_composed():
    w = linear_warmup(0.4, warmup=4)
    assert [w.value(t, 0) for t in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    c = linear_warmup(warmup=2, then=cosine(1.0, total=4))
    assert c.base == 1.0 and c.per == "step"
    want = [0.5, 1.0] + [(1 + math.cos(math.pi * min(t, 4) / 4)) / 2 for t in range(5)]
    assert [c.value(t, 0) for t in range(7)] == pytest.approx(want)
    e = linear_warmup(warmup=2, then=step_decay(0.2, 0.1, every=1))
    assert e.per == "epoch" and [e.value(0, k) for k in range(4)] == pytest.approx([0.1, 0.2, 0.2, 0.02])


def test_shared_variable_name_dtype_and_advance():
    s = cosine(1.0, total=4, name="lr_head")
    var = s.variable
    assert var.name == "schedule/lr_head" and var.dtype == config.floatX
    assert var.get_value() == pytest.approx(1.0)          # holds value(0, 0) before the first advance
    assert s.advance(2, 0) == pytest.approx(0.5)
    assert var.get_value() == pytest.approx(0.5) and s.variable is var
    assert s.advance(4, 0) == 0.0 and var.get_value() == 0.0
    ep = step_decay(1.0, drop=0.1, every=1)
    ep.advance(50, 2)
    assert ep.variable.get_value() == pytest.approx(0.01)
    assert isinstance(np.asarray(var.get_value()), np.ndarray)


def test_custom_schedule_subclass():
    class Halving(Schedule):
        def at(self, t):
            return 1.0 / 2 ** t

    assert Halving(per="epoch").value(3, 2) == 0.25
    with pytest.raises(TypeError):
        Schedule()


@pytest.mark.parametrize("make, match", [
    (lambda: step_decay(0.1, every=0), "every"),
    (lambda: step_decay(0.1, drop=0), "drop"),
    (lambda: step_decay(0.1, per="batch"), "per"),
    (lambda: exponential(0.1, gamma=-1), "gamma"),
    (lambda: cosine(0.1, total=0), "total"),
    (lambda: cosine(float("nan"), total=3), "finite"),
    (lambda: constant("a"), "number"),
    (lambda: linear_warmup(warmup=3), "value"),
    (lambda: linear_warmup(0.1, warmup=2.5), "warmup"),
    (lambda: linear_warmup(warmup=2, then=cosine(1.0, 5), per="epoch"), "same unit"),
    (lambda: linear_warmup(warmup=2, then=0.1), "then"),
    (lambda: constant(0.1, name=""), "name"),
    (lambda: constant(0.1).value(-1, 0), "non-negative"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ConfigError, match=match):
        make()
