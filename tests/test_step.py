"""compile_step / compile_eval: metrics, accumulation == one big batch, partial groups and batches, state."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from symtrain.backend import config, pt, shared
from symtrain.errors import ConfigError
from symtrain.optim import adam, cosine, momentum, sgd, slot
from symtrain.train import EpochMean, compile_cache_dirs, compile_eval, compile_step

FEATURES, TARGETS = 3, 2


class ArrayStream:
    """A stand-in for ChunkStream: one in-memory chunk, padded to whole batches with junk rows."""

    def __init__(self, x, y, batch_size, name="s"):
        n = len(x)
        cap = -(-n // batch_size) * batch_size
        junk = np.full((cap - n, *x.shape[1:]), 1e3, dtype=x.dtype)   # masking must hide these
        self.batch_size, self.rows = batch_size, n
        self.buffers = {"x": shared(np.concatenate([x, junk]), name=f"{name}/x"),
                        "y": shared(np.concatenate([y, junk[:, :y.shape[1]]]), name=f"{name}/y")}
        self.index = pt.lscalar(f"{name}/index")
        self.steps_per_epoch = cap // batch_size

    def batch(self, field):
        i, bs = self.index, self.batch_size
        return self.buffers[field][i * bs:(i + 1) * bs]

    def givens(self, mapping):
        return {var: self.batch(f) for var, f in mapping.items()}

    def batch_valid(self):
        return pt.clip(self.rows - self.index * self.batch_size, 0, self.batch_size)

    def batch_mask(self):
        return pt.lt(pt.arange(self.batch_size), self.batch_valid()).astype(config.floatX)

    def epoch(self, e, start_step=0):
        yield SimpleNamespace(indices=range(start_step, self.steps_per_epoch), first_step=start_step)


RNG = np.random.default_rng(7)
X = RNG.standard_normal((24, FEATURES)).astype(np.float32)
Y = RNG.standard_normal((24, TARGETS)).astype(np.float32)
W0 = (RNG.standard_normal((FEATURES, TARGETS)) * 0.5).astype(np.float32)


def model(stream, tag):
    """Linear regression; cost = mean over valid rows of the per-row squared error (masked)."""
    W = shared(W0.copy(), name=f"{tag}W")
    b = shared(np.zeros(TARGETS, np.float32), name=f"{tag}b")
    per_row = pt.sum(pt.sqr(stream.batch("x") @ W + b - stream.batch("y")), axis=1)
    cost = pt.sum(per_row * stream.batch_mask()) / stream.batch_valid().astype(config.floatX)
    return cost, per_row, [W, b]


def np_grads(w, b, x, y):
    r = x @ w + b - y
    return [2 * x.T @ r / len(x), 2 * r.sum(0) / len(x)]


def np_sgd_run(groups, lr):
    """Plain SGD over groups of rows (each group = the rows of one applied update)."""
    w, b = W0.astype(np.float64), np.zeros(TARGETS)
    for rows in groups:
        gw, gb = np_grads(w, b, X[rows].astype(np.float64), Y[rows].astype(np.float64))
        w, b = w - lr * gw, b - lr * gb
    return w, b


# ---- accumulation: k micro-batches == one step on the k-times batch -------------------------------------

OPTIMIZERS = {"sgd": lambda: sgd(0.1), "momentum": lambda: momentum(0.05), "adam": lambda: adam(0.01)}


@pytest.fixture(scope="module", params=sorted(OPTIMIZERS))
def accumulated_vs_big(request):
    small, big = ArrayStream(X, Y, 4, name="small"), ArrayStream(X, Y, 12, name="big")
    cost_s, _, ps = model(small, "s_")
    cost_b, _, pb = model(big, "b_")
    step_s = compile_step(cost_s, ps, small, OPTIMIZERS[request.param](), accumulate=3)
    step_b = compile_step(cost_b, pb, big, OPTIMIZERS[request.param]())
    return request.param, step_s, ps, step_b, pb


def test_accumulation_equals_one_big_step(accumulated_vs_big):
    name, step_s, ps, step_b, pb = accumulated_vs_big
    for i in range(6):                 # 2 groups of 3 micro-batches of 4 rows
        step_s(i)
        assert step_s.pending == (i + 1) % 3
    for i in range(2):                 # 2 batches of 12 rows
        step_b(i)
    for a, b in zip(ps, pb):
        np.testing.assert_allclose(a.get_value(), b.get_value(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(ps[0].get_value(), W0)
    assert step_s.flush() is False     # nothing pending after whole groups


def test_accumulation_state_is_named(accumulated_vs_big):
    name, step_s, ps, step_b, _ = accumulated_vs_big
    state = step_s.state_variables()
    assert {"s_W", "s_b", "s_W/train/grad_sum", "s_b/train/grad_sum", "train/accum_rows",
            "train/accum_count"} <= set(state)
    assert all(k == v.name for k, v in state.items())
    if name == "adam":
        assert {"adam/t", "s_W/adam/m", "s_W/adam/v"} <= set(state)
        assert int(state["adam/t"].get_value()) == 2      # 6 micro-batches, 2 updates
    assert "train/accum_count" not in step_b.state_variables()


# ---- partial batch + partial final group: the valid-row rule ------------------------------------------

@pytest.fixture(scope="module")
def partial():
    """22 rows, batches of 4 -> 6 batches, the last with 2 valid rows (junk padding); groups of 4."""
    stream = ArrayStream(X[:22], Y[:22], 4, name="part")
    cost, per_row, params = model(stream, "p_")
    step = compile_step(cost, params, stream, sgd(0.1), accumulate=4,
                        outputs={"err": per_row, "w_sum": pt.sum(params[0])})
    return stream, step, params


def test_partial_group_flush_applies_mean_over_seen_rows(partial):
    stream, step, params = partial
    for i in range(stream.steps_per_epoch):
        step(i)
    assert step.pending == 2
    before = params[0].get_value()
    np.testing.assert_allclose(before, np_sgd_run([range(16)], 0.1)[0], rtol=1e-5, atol=1e-6)
    assert step.flush() is True and step.pending == 0 and step.flush() is False
    w, b = np_sgd_run([range(16), range(16, 22)], 0.1)   # 4 + 2 valid rows, weighted by rows
    np.testing.assert_allclose(params[0].get_value(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params[1].get_value(), b, rtol=1e-5, atol=1e-6)
    assert step.state_variables()["train/accum_rows"].get_value() == 0


def test_metrics_are_floats_and_vectors_are_masked(partial):
    stream, step, params = partial
    w, b = params[0].get_value(), params[1].get_value()
    out = step(5)                       # the partial batch: rows 20, 21
    assert list(out) == ["loss", "err", "w_sum"] and all(type(v) is float for v in out.values())
    want = np.sum((X[20:22] @ w + b - Y[20:22]) ** 2, axis=1).mean()
    assert out["loss"] == pytest.approx(want, rel=1e-5)
    assert out["err"] == pytest.approx(want, rel=1e-5)
    assert out["w_sum"] == pytest.approx(w.sum(), rel=1e-5)
    step.flush()


# ---- evaluator: per-batch means over valid rows, epoch aggregate weighted by rows --------------------------

def test_eval_weights_partial_batches():
    stream = ArrayStream(X[:22], Y[:22], 4, name="ev")
    cost, per_row, params = model(stream, "e_")
    ev = compile_eval({"loss": cost, "err": per_row}, stream)
    metrics, valid = ev.batch(5)
    assert valid == 2
    r = np.sum((X[:22] @ W0 - Y[:22]) ** 2, axis=1)
    assert metrics["err"] == pytest.approx(r[20:].mean(), rel=1e-5)
    total = ev.run(0)
    assert total["rows"] == 22
    assert total["loss"] == pytest.approx(r.mean(),
                                          rel=1e-5) and total["err"] == pytest.approx(r.mean(), rel=1e-5)
    assert ev(0)["loss"] == pytest.approx(r[:4].mean(), rel=1e-5)


def test_epoch_mean():
    m = EpochMean()
    assert m.result() == {}
    m.add({"a": 1.0}, 3)
    m.add({"a": 3.0}, 1)
    assert m.result() == {"a": 1.5} and m.rows == 4


# ---- schedules, bring-your-own rules, givens, state names -----------------------------------------------

@pytest.fixture(scope="module")
def scheduled():
    stream = ArrayStream(X, Y, 8, name="sch")
    cost, _, params = model(stream, "c_")
    sched = cosine(0.2, total=2)
    step = compile_step(cost, params, stream, sgd(sched), name="main")
    return stream, step, params, sched


def test_schedule_drives_the_learning_rate(scheduled):
    stream, step, params, sched = scheduled
    assert step.schedules == [sched]
    assert step.state_variables()["schedule/lr"] is sched.variable
    lrs = []
    for i in range(3):
        step.advance_schedules(i, 0)
        lrs.append(sched.variable.get_value().item())
        step(i)
    assert lrs == pytest.approx([0.2, 0.1, 0.0])
    w = W0.astype(np.float64)
    b = np.zeros(TARGETS)
    for i, lr in enumerate(lrs):
        gw, gb = np_grads(w, b, X[i * 8:(i + 1) * 8].astype(np.float64),
                          Y[i * 8:(i + 1) * 8].astype(np.float64))
        w, b = w - lr * gw, b - lr * gb
    np.testing.assert_allclose(params[0].get_value(), w, rtol=1e-5, atol=1e-6)


def test_state_names_are_stable_across_compiles(scheduled):
    _, step, _, _ = scheduled
    names = sorted(step.state_variables())
    assert names == ["c_W", "c_b", "schedule/lr"]
    assert step.mode == str(config.mode) and step.linker
    assert step.compile_seconds > 0


def test_bring_your_own_rule_and_givens():
    """A plain function as optimizer, state made with slot(); the cost written against free inputs."""
    stream = ArrayStream(X, Y, 8, name="byo")
    x, y = pt.matrix("x"), pt.matrix("y")
    W = shared(W0.copy(), name="W")
    cost = pt.mean(pt.sum(pt.sqr(x @ W - y), axis=1))

    def heavy_ball(grads, params):
        updates = {}
        for g, p in zip(grads, params):
            v = slot(p, "hb", "v")
            updates[v] = np.float32(0.5) * v + g
            updates[p] = p - np.float32(0.1) * updates[v]
        return updates

    # grads list input: use accumulate=2 so the rule receives gradients, not the loss
    def rule(loss_or_grads, params):
        grads = loss_or_grads if isinstance(loss_or_grads, list) else pt.grad(loss_or_grads, params)
        return heavy_ball(grads, params)

    step = compile_step(cost, [W], stream, rule, accumulate=2, givens={x: "x", y: "y"})
    assert set(step.state_variables()) == {"W", "W/hb/v", "W/train/grad_sum", "train/accum_rows",
                                           "train/accum_count"}
    for i in range(2):
        step(i)
    w = W0.astype(np.float64)
    g = np_grads(w, 0.0, X[:16].astype(np.float64), Y[:16].astype(np.float64))[0]
    np.testing.assert_allclose(W.get_value(), w - 0.1 * g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"accumulate": 0}, "accumulate"),
    ({"accumulate": 1.5}, "accumulate"),
    ({"optimizer": 0.1}, "optimizer must be callable"),
    ({"outputs": {"loss": None}}, "reserved"),
    ({"outputs": [1]}, "dict"),
    ({"outputs": {"m": pt.matrix()}}, "2 dims"),
    ({"outputs": {"": pt.scalar()}}, "non-empty"),
    ({"mode": "TURBO"}, "not a known mode"),
    ({"mode": 3}, "mode must be"),
    ({"cost": pt.vector()}, "scalar"),
    ({"cost": "free"}, r"does not provide.*\(free\)"),
    ({"optimizer": lambda c, p: {p[0]: p[0].astype("float64") * 2}}, "dtype float64"),
    ({"optimizer": lambda c, p: {shared(np.float32(0)): p[0].sum()}}, "unnamed"),
    ({"optimizer": lambda c, p: 3}, "must return"),
    ({"name": ""}, "name"),
    ({"stream": object()}, "ChunkStream"),
    ({"optimizer": "two-schedules"}, "both named"),
])
def test_bad_arguments(kwargs, match):
    stream = ArrayStream(X, Y, 8, name="bad")
    cost, _, params = model(stream, "bad_")
    args = {"cost": cost, "params": params, "stream": stream, "optimizer": sgd(0.1)}
    if kwargs.get("cost") == "free":
        kwargs["cost"] = pt.sum(pt.matrix("free") @ params[0]) + cost
    if kwargs.get("optimizer") == "two-schedules":
        kwargs = {"optimizer": adam(cosine(0.1, 3)), "schedules": [cosine(0.2, 3)]}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        compile_step(**args)


def test_eval_bad_arguments():
    stream = ArrayStream(X, Y, 8, name="bad_ev")
    with pytest.raises(ConfigError, match="at least one"):
        compile_eval({}, stream)
    with pytest.raises(ConfigError, match="reserved"):
        compile_eval({"rows": pt.sum(stream.batch("x"))}, stream)


@pytest.mark.skipif(bool(config.blas__ldflags), reason="a BLAS is configured: the C backend can compile dots")
def test_c_mode_without_blas_is_a_clear_error():
    stream = ArrayStream(X, Y, 8, name="cmode")
    W = shared(np.ones((FEATURES, FEATURES), np.float32), name="cW")
    with pytest.raises(ConfigError, match="BLAS"):
        compile_eval({"s": pt.sum(stream.batch("x") @ W)}, stream, mode="C")


def test_compile_cache_dirs():
    dirs = compile_cache_dirs()
    assert dirs["numba"].startswith(dirs["base_compiledir"])


@pytest.mark.filterwarnings("ignore:RandomStream is deprecated:FutureWarning")
def test_rng_state_with_default_update_is_checkpointable():
    """Dropout through a RandomStream: its RNG shared variable is updated by the step and gets a stable
    name."""
    from symtrain.backend import RandomStream

    stream = ArrayStream(X, Y, 8, name="rng")
    W = shared(W0.copy(), name="rng_W")
    keep = RandomStream(seed=1).binomial(1, 0.5, size=(8, FEATURES)).astype(config.floatX)
    cost = pt.mean(pt.sqr((stream.batch("x") * keep) @ W - stream.batch("y")))
    step = compile_step(cost, [W], stream, sgd(0.1), name="drop")
    state = step.state_variables()
    assert set(state) == {"rng_W", "drop/state0"}
    before = repr(state["drop/state0"].get_value())
    step(0)
    assert repr(state["drop/state0"].get_value()) != before


def _explicit_dropout(stream, tag):
    """Dropout on the input with an explicit (unnamed) shared Generator: returns cost, W, rng, updates."""
    from symtrain.nnet import dropout

    rng = shared(np.random.default_rng(0))
    W = shared(W0.copy(), name=f"{tag}W")
    h, updates = dropout(stream.batch("x"), 0.5, rng)
    cost = pt.mean(pt.sqr(h @ W - stream.batch("y")))
    return cost, W, rng, updates


def _numpy_rng_after(draws):
    g = np.random.default_rng(0)
    for _ in range(draws):
        g.binomial(1, 0.5, size=(8, FEATURES))
    return g.bit_generator.state


def test_explicit_rng_update_is_state_and_advances_every_step():
    """The future-proof form (no default_update): {rng: next_rng} passed as updates= or returned by the
    optimizer. The generator joins state_variables(), advances on every call exactly like numpy's, and a
    snapshot/restore of the state replays the same masks (so resume is exact)."""
    from symtrain.train import checkpoint as ckpt

    stream = ArrayStream(X, Y, 8, name="xrng")
    cost, W, rng, updates = _explicit_dropout(stream, "xrng_")
    step = compile_step(cost, [W], stream, sgd(0.1), name="xdrop", updates=updates)
    state = step.state_variables()
    assert set(state) == {"xrng_W", "xdrop/state0"} and state["xdrop/state0"] is rng
    for k in (1, 2):
        step(0)
        assert rng.get_value(borrow=True).bit_generator.state == _numpy_rng_after(k)
    saved = ckpt.snapshot(state)
    after = step(1)
    ckpt.restore(saved, state)
    assert step(1) == after and rng.get_value(borrow=True).bit_generator.state == _numpy_rng_after(3)

    # the same update returned by the optimizer itself (rejected by as_tensor_variable before)
    stream2 = ArrayStream(X, Y, 8, name="xrng2")
    cost2, W2, rng2, updates2 = _explicit_dropout(stream2, "xrng2_")
    step2 = compile_step(cost2, [W2], stream2, lambda c, p: {**sgd(0.1)(c, p), **updates2})
    assert rng2 in step2.state_variables().values()
    step2(0)
    assert rng2.get_value(borrow=True).bit_generator.state == _numpy_rng_after(1)

    # with accumulate=k, every micro-batch draws a fresh mask, also the ones that apply no update
    stream3 = ArrayStream(X, Y, 8, name="xrng3")
    cost3, W3, rng3, updates3 = _explicit_dropout(stream3, "xrng3_")
    step3 = compile_step(cost3, [W3], stream3, sgd(0.1), accumulate=2, updates=updates3)
    for k in (1, 2, 3):
        step3(0)
        assert rng3.get_value(borrow=True).bit_generator.state == _numpy_rng_after(k)


def test_explicit_rng_update_bad_values():
    stream = ArrayStream(X, Y, 8, name="xbad")
    cost, W, rng, updates = _explicit_dropout(stream, "xbad_")
    with pytest.raises(ConfigError,
                       match=r"update of RandomGeneratorType.*must be a symbolic RandomGeneratorType"):
        compile_step(cost, [W], stream, sgd(0.1), updates={rng: stream.batch("x")})
    with pytest.raises(ConfigError,
                       match=r"updates= must not update parameters \(the optimizer does\): \['xbad_W'\]"):
        compile_step(cost, [W], stream, sgd(0.1), updates={**updates, W: W * 2})
    n = shared(np.float32(0), name="xbad_n")
    with pytest.raises(ConfigError, match=r"updates= and the optimizer both update: \['xbad_n'\]"):
        compile_step(cost, [W], stream, lambda c, p: {**sgd(0.1)(c, p), n: n + 1}, updates={n: n + 2})


def test_cli_and_scheduler_modules_do_not_import_the_graph_library(tmp_path):
    """symtrain.train is lazy: `symtrain --help`, `symtrain inspect`, fit/checkpoint/metrics imports load no
    PyTensor (about 0.6 s of CPU per command otherwise); only compile_step & co. pull it in."""
    import subprocess
    import sys

    from symtrain.storage import write_dataset

    write_dataset(tmp_path / "ds", {"x": np.ones((4, 2), np.float32)})
    code = (
        "import sys, contextlib, io\n"
        "import symtrain.cli as cli\n"
        "cli.build_parser()\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert cli.main(['inspect', {str(tmp_path / 'ds')!r}]) == 0\n"
        "import symtrain.train, symtrain.train.fit, symtrain.train.checkpoint, symtrain.train.metrics\n"
        "import symtrain.train.commands\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('pytensor', 'aesara'))\n"
        "assert not loaded, loaded[:5]\n"
        "from symtrain.train import compile_step\n"
        "assert 'pytensor' in sys.modules or 'aesara' in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
