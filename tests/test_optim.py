"""Update builders against NumPy references of their published rules (several steps, clipping, weight
decay)."""

from __future__ import annotations

import numpy as np
import pytest

from symtrain.backend import function, pt, shared
from symtrain.errors import ConfigError
from symtrain.optim import (
    adadelta,
    adagrad,
    adam,
    adamw,
    clip_by_global_norm,
    cosine,
    momentum,
    nesterov_momentum,
    rmsprop,
    sgd,
)

STEPS = 5
RNG = np.random.default_rng(42)
XS = RNG.standard_normal((STEPS, 6, 4)).astype(np.float32)
YS = RNG.standard_normal((STEPS, 6, 3)).astype(np.float32)
W0 = RNG.standard_normal((4, 3)).astype(np.float32) * 0.5
B0 = RNG.standard_normal(3).astype(np.float32) * 0.1
MAX_NORM = 0.5
WD = 0.1


# ---- NumPy references (float64) -----------------------------------------------------------------------

def np_grads(params, x, y):
    w, b = params
    r = x @ w + b - y
    scale = 2.0 / r.size
    return [scale * x.T @ r, scale * r.sum(0)]


def np_clip(grads, max_norm):
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    return [g * min(1.0, max_norm / (norm + 1e-6)) for g in grads]


def np_sgd(p, g, s, t, lr):
    return p - lr * g


def np_momentum(p, g, s, t, lr, mu=0.9):
    s["v"] = mu * s.get("v", 0) - lr * g
    return p + s["v"]


def np_nesterov(p, g, s, t, lr, mu=0.9):
    s["v"] = mu * s.get("v", 0) - lr * g
    return p + mu * s["v"] - lr * g


def np_adagrad(p, g, s, t, lr, eps=1e-6):
    s["a"] = s.get("a", 0) + g ** 2
    return p - lr * g / np.sqrt(s["a"] + eps)


def np_rmsprop(p, g, s, t, lr, rho=0.9, eps=1e-6):
    s["a"] = rho * s.get("a", 0) + (1 - rho) * g ** 2
    return p - lr * g / np.sqrt(s["a"] + eps)


def np_adadelta(p, g, s, t, lr, rho=0.95, eps=1e-6):
    s["a"] = rho * s.get("a", 0) + (1 - rho) * g ** 2
    u = g * np.sqrt(s.get("d", 0) + eps) / np.sqrt(s["a"] + eps)
    s["d"] = rho * s.get("d", 0) + (1 - rho) * u ** 2
    return p - lr * u


def np_adam(p, g, s, t, lr, b1=0.9, b2=0.999, eps=1e-8, decoupled_wd=0.0):
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g ** 2
    mhat, vhat = s["m"] / (1 - b1 ** t), s["v"] / (1 - b2 ** t)
    return p - lr * (mhat / (np.sqrt(vhat) + eps) + decoupled_wd * p)


def np_adamw(p, g, s, t, lr):
    return np_adam(p, g, s, t, lr, decoupled_wd=WD)


def reference(rule, lr, steps, clip=None, coupled_wd=0.0, lrs=None):
    params = [W0.astype(np.float64), B0.astype(np.float64)]
    states = [{}, {}]
    out = []
    for t in range(1, steps + 1):
        grads = np_grads(params, XS[t - 1].astype(np.float64), YS[t - 1].astype(np.float64))
        if clip:
            grads = np_clip(grads, clip)
        grads = [g + coupled_wd * p for g, p in zip(grads, params)]
        step_lr = lrs[t - 1] if lrs is not None else lr
        params = [rule(p, g, s, t, step_lr) for p, g, s in zip(params, grads, states)]
        out.append([p.copy() for p in params])
    return out


# name -> (builder, numpy rule, learning rate, coupled weight decay applies)
CASES = {
    "sgd": (sgd, np_sgd, 0.1, True),
    "momentum": (momentum, np_momentum, 0.05, True),
    "nesterov_momentum": (nesterov_momentum, np_nesterov, 0.05, True),
    "adagrad": (adagrad, np_adagrad, 0.1, True),
    "rmsprop": (rmsprop, np_rmsprop, 0.01, True),
    "adadelta": (adadelta, np_adadelta, 1.0, True),
    "adam": (adam, np_adam, 0.01, True),
    "adamw": (adamw, np_adamw, 0.01, False),
}


def make_params(tag):
    return [shared(W0.copy(), name=f"{tag}W"), shared(B0.copy(), name=f"{tag}b")]


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request):
    """Two parameter sets per optimizer in one compiled function: plain, and with max_norm + weight decay."""
    name = request.param
    builder, rule, lr, coupled = CASES[name]
    x, y = pt.matrix("x"), pt.matrix("y")
    plain, opts = make_params("p_"), make_params("o_")

    def loss(ps):
        return pt.mean(pt.sqr(x @ ps[0] + ps[1] - y))

    updates = builder(loss(plain), plain, learning_rate=lr)
    updates.update(builder(loss(opts), opts, learning_rate=lr, max_norm=MAX_NORM, weight_decay=WD,
                           name=f"{name}_o"))
    f = function([x, y], [], updates=updates)
    history = []
    for t in range(STEPS):
        f(XS[t], YS[t])
        history.append([p.get_value() for p in plain + opts])
    return name, rule, lr, coupled, history, updates


def test_matches_numpy_reference(trained):
    name, rule, lr, coupled, history, _ = trained

    def default_decay(p, g, s, t, lr):  # adamw's default weight_decay=0.01
        return np_adam(p, g, s, t, lr, decoupled_wd=0.01)

    plain_ref = reference(default_decay if name == "adamw" else rule, lr, STEPS)
    opts_ref = reference(rule, lr, STEPS, clip=MAX_NORM, coupled_wd=WD if coupled else 0.0)
    for t in range(STEPS):
        for got, want in zip(history[t], plain_ref[t] + opts_ref[t]):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, err_msg=f"{name} step {t + 1}")
    # the options really changed the trajectory (clipping bites, decay acts)
    assert not np.allclose(plain_ref[-1][0], opts_ref[-1][0], rtol=1e-3)


def test_clipping_is_active_in_the_reference():
    g = np_grads([W0.astype(np.float64), B0.astype(np.float64)], XS[0], YS[0])
    assert np.sqrt(sum((a ** 2).sum() for a in g)) > MAX_NORM


def test_update_dtypes_and_state_names(trained):
    name, *_, updates = trained
    for var, new in updates.items():
        assert new.dtype == var.dtype, var.name
        assert var.name
    names = [v.name for v in updates]
    assert len(names) == len(set(names))
    state = [n for n in names if "/" in n]
    if name in ("adam", "adamw"):
        assert f"p_W/{name}/m" in names and f"p_W/{name}/v" in names and f"{name}/t" in names
    elif name != "sgd":
        assert state and all(n.split("/")[0] in ("p_W", "p_b", "o_W", "o_b", f"{name}_o", name)
                             for n in state)


def test_learning_rate_shared_variable_and_schedule():
    """A shared learning rate (float64 with float32 params) is cast, and changing it takes effect."""
    x, y = pt.matrix("x"), pt.matrix("y")
    ps = make_params("lr_")
    lr = shared(np.float64(0.1), name="my_lr")
    sched = cosine(0.1, total=4, name="lr2")
    ps2 = make_params("sch_")
    up = sgd(pt.mean(pt.sqr(x @ ps[0] + ps[1] - y)), ps, lr)
    up.update(sgd(pt.mean(pt.sqr(x @ ps2[0] + ps2[1] - y)), ps2, sched))
    assert all(v.dtype == k.dtype for k, v in up.items())
    f = function([x, y], [], updates=up)
    lrs = [0.1, 0.05, 0.02]
    for t, value in enumerate(lrs):
        lr.set_value(value)
        sched.advance(t, 0)
        f(XS[t], YS[t])
    want = reference(np_sgd, None, 3, lrs=lrs)[-1]
    np.testing.assert_allclose(ps[0].get_value(), want[0], rtol=1e-4, atol=1e-6)
    want2 = reference(np_sgd, None, 3, lrs=[sched.value(t, 0) for t in range(3)])[-1]
    np.testing.assert_allclose(ps2[1].get_value(), want2[1], rtol=1e-4, atol=1e-6)


def test_rule_form_equals_direct_form():
    """adam(1e-3) returns a rule; calling it gives the same updates as the Lasagne call."""
    rule = adam(1e-3, beta1=0.8)
    assert rule.kind == "adam" and rule.learning_rate == 1e-3 and rule.options["beta1"] == 0.8
    assert adam(learning_rate=0.5).learning_rate == 0.5
    assert adam().learning_rate == 0.001
    ps = make_params("rf_")
    loss = pt.sum(ps[0]) + pt.sum(ps[1])
    assert [v.name for v in rule(loss, ps)] == [v.name for v in adam(loss, ps, 1e-3)]


def test_clip_by_global_norm_symbolic():
    a, b = pt.vector("a"), pt.vector("b")
    f = function([a, b], clip_by_global_norm([a, b], 1.0))
    ca, cb = f(np.array([3, 0], np.float32), np.array([0, 4], np.float32))
    np.testing.assert_allclose(np.sqrt((ca ** 2).sum() + (cb ** 2).sum()), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ca, [0.6, 0], rtol=1e-5)
    small = f(np.array([0.3, 0], np.float32), np.array([0, 0.4], np.float32))
    np.testing.assert_allclose(small[0], [0.3, 0])


@pytest.mark.parametrize("call, match", [
    (lambda ps: sgd(1.0), None),
    (lambda ps: sgd(), "needs a learning_rate"),
    (lambda ps: adam(0.1, learning_rate=0.2), "twice"),
    (lambda ps: adam(pt.sum(ps[0])), "no params"),
    (lambda ps: adam(None, ps), "no loss_or_grads"),
    (lambda ps: adam(-1.0), ">= 0"),
    (lambda ps: adam("fast"), "learning_rate must be"),
    (lambda ps: adam(shared(np.zeros(2), name="v")), "scalar"),
    (lambda ps: adam(1e-3, beta1=1.0), "beta1"),
    (lambda ps: momentum(0.1, momentum=-0.1), "momentum"),
    (lambda ps: rmsprop(epsilon=0), "epsilon"),
    (lambda ps: adam(max_norm=0), "max_norm"),
    (lambda ps: sgd(0.1, weight_decay=-1), "weight_decay"),
    (lambda ps: adam(name=""), "name"),
    (lambda ps: adam(pt.sum(ps[0]), [ps[0], shared(np.zeros(2, np.float32))]), r"params\[1\] has no name"),
    (lambda ps: adam(pt.sum(ps[0]), [ps[0], shared(np.zeros(2, np.float32), name="e_W")]), "both named"),
    (lambda ps: adam(pt.sum(ps[0]), ps[0]), "list of shared"),
    (lambda ps: adam(pt.sum(ps[0]), []), "empty"),
    (lambda ps: adam(pt.sum(ps[0]), [pt.vector("v")]), "not a shared"),
    (lambda ps: adam(ps[0], ps), "scalar loss"),
    (lambda ps: adam([ps[0]], ps), "1 gradients for 2"),
    (lambda ps: adam(pt.sum(ps[0]), ps), "does not influence"),
])
def test_bad_arguments(call, match):
    ps = make_params("e_")
    if match is None:
        assert call(ps).kind == "sgd"
        return
    with pytest.raises(ConfigError, match=match):
        call(ps)
