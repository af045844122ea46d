"""fit in-process: early stopping and best tracking with known answers, non-finite loss, resume refusals,
corrupt-checkpoint fallback, exact resume with gradient accumulation, callbacks order, metrics log, plot."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import symtrain as st
from symtrain.backend import pt, shared
from symtrain.errors import CheckpointError, ConfigError, NonFiniteLossError
from symtrain.train import checkpoint as ckpt
from symtrain.train.callbacks import Callback
from symtrain.train.early_stopping import EarlyStopping
from symtrain.train.fit import fit

ROWS, BS, CHUNK = 300, 16, 64  # 18 steps per epoch, 5 buffer fills


def _data(tmp, name="data", rows=ROWS, nan_row=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    if nan_row is not None:
        x[nan_row, 2] = np.nan
    return st.write_dataset(tmp / name, {"x": x, "y": y})


class Model:
    """Logistic regression over a stream; ``reset()`` puts every state variable back to its start."""

    def __init__(self, stream, accumulate=1, width=3):
        x, y = stream.batch("x"), stream.batch("y")
        self.W = shared(np.zeros((5, width), np.float32), name="W")
        self.b = shared(np.zeros(width, np.float32), name="b")
        p = st.nnet.softmax(x @ self.W + self.b)
        cost = st.nnet.categorical_crossentropy(p, y).mean()
        self.step = st.compile_step(cost, [self.W, self.b], stream, st.optim.adam(0.05),
                                    accumulate=accumulate)
        self.stream = stream
        self.initial = ckpt.snapshot(self.step.state_variables())

    def reset(self):
        ckpt.restore(self.initial, self.step.state_variables())

    def state(self):
        return ckpt.snapshot(self.step.state_variables())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    data = _data(tmp)
    stream = st.ChunkStream(data, batch_size=BS, chunk_rows=CHUNK, seed=5)
    vstream = st.ChunkStream(data, batch_size=50, chunk_rows=100, policy="sequential", drop_last=False,
                             name="v")
    model = Model(stream)
    xv, yv = vstream.batch("x"), vstream.batch("y")
    pv = st.nnet.softmax(xv @ model.W + model.b)
    ev = st.compile_eval({"loss": st.nnet.categorical_crossentropy(pv, yv).mean(),
                          "error": pt.neq(pt.argmax(pv, axis=1), yv).astype("float32")}, vstream)
    yield tmp, data, model, ev
    stream.close()
    vstream.close()


def _same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def scripted(scores):
    """A validation callable returning the given scores in turn (a known answer for early stopping)."""
    it = iter(scores)
    return lambda: {"loss": next(it)}


# ----- early stopping and best tracking ----------------------------------------------------------------

def test_dlt_patience_known_answer(env):
    _, _, model, _ = env
    model.reset()
    # validations after global steps 4, 8, 12, ... (iterations 3, 7, 11, ...); patience 10 steps.
    # 1.0 (first best), 0.999 (better but not by 0.5%: patience stays 10) -> stop once iteration 10 is done
    h = fit(model.step, model.stream, 5, validation=scripted([1.0, 0.999, 0.5]), validate_every=None,
            validate_every_steps=4, early_stopping=EarlyStopping(patience=10), progress=False)
    assert h.stop_reason == "early_stopping" and h.global_step == 11
    assert h.best["score"] == 0.999 and h.best["step"] == 8
    # a significant improvement at iteration 7 raises patience to 7 * 2 = 14 -> stop after iteration 14
    model.reset()
    h = fit(model.step, model.stream, 5, validation=scripted([1.0, 0.9, 0.95, 0.97]), validate_every=None,
            validate_every_steps=4, early_stopping=EarlyStopping(patience=10), progress=False)
    assert h.stop_reason == "early_stopping" and h.global_step == 15
    assert h.best == {"score": 0.9, "epoch": 1, "step": 8, "metrics": {"loss": 0.9}}  # epochs count from 1


def test_plain_wait_and_restore_best(env):
    _, _, model, _ = env
    model.reset()
    seen = {}

    class Grab(Callback):
        def on_validation_end(self, trainer, metrics):
            if trainer.improved:
                seen["W"] = model.W.get_value().copy()

    # one validation per epoch: 1.0, 0.5 (best, epoch 1), 0.7, 0.6 -> two without a new best: stop at epoch 3
    h = fit(model.step, model.stream, 10, validation=scripted([1.0, 0.5, 0.7, 0.6, 0.1]),
            early_stopping=EarlyStopping(wait=2), restore_best=True, callbacks=[Grab()], progress=False)
    assert h.stop_reason == "early_stopping" and len(h.epochs) == 4
    assert h.best["score"] == 0.5 and h.best["epoch"] == 2 and h.metric("val_loss") == [1.0, 0.5, 0.7, 0.6]
    assert np.array_equal(model.W.get_value(), seen["W"])  # the best state, not the last


def test_resuming_an_early_stopped_run_stays_stopped(env, tmp_path):
    _, _, model, _ = env
    model.reset()
    h = fit(model.step, model.stream, 5, validation=scripted([1.0, 2.0]),
            early_stopping=EarlyStopping(wait=1),
            run_dir=tmp_path, progress=False)
    assert h.stop_reason == "early_stopping" and h.global_step == 36
    h = fit(model.step, model.stream, 5, validation=scripted([]), early_stopping=EarlyStopping(wait=1),
            run_dir=tmp_path, resume=True, progress=False)
    assert h.stop_reason == "early_stopping" and h.global_step == 36 and "before the resume" in h.message


def test_early_stopping_config_errors():
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping()
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping(wait=1, mode="up")


# ----- non-finite loss ------------------------------------------------------------------------------------

class NanAt:
    """Wraps a Step; returns a NaN loss at one global call (as a diverging model would)."""

    def __init__(self, step, at):
        self.step, self.at, self.calls = step, at, 0

    def __getattr__(self, name):
        return getattr(self.step, name)

    def __call__(self, i):
        out = self.step(i)
        self.calls += 1
        if self.calls == self.at + 1:
            out["loss"] = float("nan")
        return out


def test_nonfinite_loss_raises_naming_step_and_keeps_last_good_checkpoint(env, tmp_path):
    _, _, model, _ = env
    model.reset()
    with pytest.raises(NonFiniteLossError, match=r"global step 21 \(epoch 2, step 3 of 18"):
        fit(NanAt(model.step, 21), model.stream, 3, run_dir=tmp_path / "run", checkpoint_every_steps=5,
            progress=False)
    last = ckpt.load_latest(tmp_path / "run" / "checkpoints")
    assert last.cursor["global_step"] == 20 and last.meta["reason"] == "steps"


def test_nonfinite_skip_undoes_the_batch(tmp_path):
    data = _data(tmp_path, nan_row=7)
    with st.ChunkStream(data, batch_size=BS, chunk_rows=CHUNK, seed=5) as stream:
        model = Model(stream)
        with pytest.raises(NonFiniteLossError):
            fit(model.step, stream, 1, progress=False)
        model.reset()
        h = fit(model.step, stream, 2, on_nonfinite="skip", progress=False)
        # the NaN row is in exactly one batch per epoch (its position comes from the epoch's row order)
        expect = [int(np.flatnonzero(stream.epoch_order(e) == 7)[0]) // BS for e in range(2)]
        assert [s["step_in_epoch"] for s in h.skipped_steps] == expect
        assert all(np.isfinite(v).all() for v in model.state().values())


# ----- checkpoints: refusals, fallback, exact resume ------------------------------------------------------

def test_resume_refuses_mismatched_checkpoints(env, tmp_path):
    tmp, data, model, _ = env
    model.reset()
    run = tmp_path / "run"
    fit(model.step, model.stream, 1, run_dir=run, progress=False)
    with st.ChunkStream(data, batch_size=BS * 2, chunk_rows=CHUNK, seed=5) as s:
        with pytest.raises(CheckpointError, match="batch size: checkpoint 16, now 32"):
            fit(model.step, s, 2, run_dir=run, resume=True, progress=False)
    with st.ChunkStream(data, batch_size=BS, chunk_rows=CHUNK * 2, seed=5) as s:
        with pytest.raises(CheckpointError, match="chunk size"):
            fit(model.step, s, 2, run_dir=run, resume=True, progress=False)
    other = _data(tmp_path, "other", seed=1)
    with st.ChunkStream(other, batch_size=BS, chunk_rows=CHUNK, seed=5) as s:
        with pytest.raises(CheckpointError, match="fingerprint"):
            fit(model.step, s, 2, run_dir=run, resume=True, progress=False)
    wide = Model(model.stream, width=4)
    with pytest.raises(CheckpointError,
                       match=r"parameter set: .*W: checkpoint float32\(5, 3\), model float32\(5, 4\)"):
        fit(wide.step, model.stream, 2, run_dir=run, resume=True, progress=False)
    with pytest.raises(ConfigError, match="resume=True to continue"):
        fit(model.step, model.stream, 2, run_dir=run, progress=False)


def test_corrupt_newest_checkpoint_falls_back_and_resume_is_exact(env, tmp_path, caplog):
    _, _, model, _ = env
    model.reset()
    fit(model.step, model.stream, 2, progress=False)
    reference = model.state()

    model.reset()
    run = tmp_path / "run"

    class StopAt(Callback):
        def on_step_end(self, trainer, step, metrics):
            if trainer.global_step == 25:
                trainer.request_stop("interrupted")

    h = fit(model.step, model.stream, 2, run_dir=run, checkpoint_every_steps=4, callbacks=[StopAt()],
            progress=False)
    assert h.interrupted
    names = [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]
    assert names == ["epoch-00001-step-00000002", "epoch-00001-step-00000006", "epoch-00001-step-00000007"]
    newest = run / "checkpoints" / names[-1]
    data = (newest / "arrays.npz").read_bytes()
    (newest / "arrays.npz").write_bytes(data[: len(data) // 2])  # torn write
    (run / "checkpoints" / "epoch-00009-step-00000000").mkdir()  # half-written: no checkpoint.json
    model.reset()
    with caplog.at_level(logging.WARNING, logger="symtrain"):
        h = fit(model.step, model.stream, 2, run_dir=run, resume=True, progress=False)
    assert "checksum mismatch" in caplog.text and "no checkpoint.json" in caplog.text
    assert h.resumed_from[-1].endswith("epoch-00001-step-00000006") and h.stop_reason == "completed"
    _same(model.state(), reference)


def test_exact_resume_with_gradient_accumulation(tmp_path):
    data = _data(tmp_path)
    with st.ChunkStream(data, batch_size=BS, chunk_rows=CHUNK, seed=2) as stream:
        model = Model(stream, accumulate=4)  # 18 steps per epoch: each epoch ends with a flush of 2
        fit(model.step, stream, 2, progress=False)
        reference = model.state()
        for stop_at in (17, 18):  # mid-group just before the epoch end; right at the epoch end
            model.reset()
            run = tmp_path / f"run{stop_at}"

            class StopAt(Callback):
                def on_step_end(self, trainer, step, metrics, stop_at=stop_at):
                    if trainer.global_step == stop_at:
                        trainer.request_stop("interrupted")

            fit(model.step, stream, 2, run_dir=run, callbacks=[StopAt()], progress=False)
            model.reset()
            fit(model.step, stream, 2, run_dir=run, resume=True, progress=False)
            _same(model.state(), reference)


def test_resume_repeats_no_validation_and_same_history(env, tmp_path):
    _, _, model, ev = env
    kwargs = dict(validation=ev, validate_every_steps=6, early_stopping=EarlyStopping(wait=50),
                  progress=False)
    model.reset()
    ref = fit(model.step, model.stream, 2, **kwargs)
    reference = model.state()

    class StopAt(Callback):  # step 18 ends epoch 0 and is a validation step: the cut falls between them
        def on_step_end(self, trainer, step, metrics):
            if trainer.global_step == 18:
                trainer.request_stop("interrupted")

    model.reset()
    fit(model.step, model.stream, 2, run_dir=tmp_path, callbacks=[StopAt()], **kwargs)
    kwargs["early_stopping"] = EarlyStopping(wait=50)
    h = fit(model.step, model.stream, 2, run_dir=tmp_path, resume=True, **kwargs)
    assert [v["step"] for v in h.validations] == [v["step"]
                                                  for v in ref.validations] == [6, 12, 18, 24, 30, 36]
    assert h.validations == ref.validations and h.best == ref.best
    assert [e["loss"] for e in h.epochs] == [e["loss"] for e in ref.epochs]
    _same(model.state(), reference)


# ----- callbacks, metrics log, plot -----------------------------------------------------------------------

def test_callback_order_and_metrics_log(env, tmp_path):
    _, _, model, ev = env
    model.reset()
    calls = []

    class Rec(Callback):
        def __getattribute__(self, name):
            if name.startswith("on_"):
                return lambda *a: calls.append(name)
            return object.__getattribute__(self, name)

    run = tmp_path / "run"
    h = fit(model.step, model.stream, 2, validation=ev, run_dir=run, callbacks=[Rec()], log_every=5,
            progress=False)
    per_epoch = (["on_epoch_begin"] + (["on_chunk_begin"] + ["on_step_end"] * 4 + ["on_chunk_end"]) * 4
                 + ["on_chunk_begin", "on_step_end", "on_step_end", "on_chunk_end"]
                 + ["on_validation_end", "on_checkpoint", "on_epoch_end", "on_checkpoint"])
    assert calls == ["on_fit_begin", *per_epoch, *per_epoch, "on_fit_end"]
    assert h.best["epoch"] == 2 and [e["epoch"] for e in h.epochs] == [1, 2]
    assert set(h.epochs[0]) >= {"loss", "val_loss", "val_error", "seconds"}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"] == [5, 10, 15, 18, 20, 25, 30, 35, 36]
    assert [r["kind"] for r in lines if r["kind"] != "train"] == ["valid", "epoch", "valid", "epoch"]
    assert [r["epoch"] for r in lines if r["kind"] != "train"] == [1, 1, 2, 2]  # one numbering: from 1
    assert (run / "metrics.csv").read_text().startswith("kind,epoch,step,time,")
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best", "epoch-00001-step-00000000",
                                                                  "epoch-00002-step-00000000"}
    pytest.importorskip("matplotlib")
    from symtrain.cli import main

    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_argument_errors(env, tmp_path):
    _, _, model, _ = env
    with pytest.raises(ConfigError, match="epochs"):
        fit(model.step, model.stream, 0)
    with pytest.raises(ConfigError, match="resume=True needs run_dir"):
        fit(model.step, model.stream, 1, resume=True)
    with pytest.raises(ConfigError, match="on_nonfinite"):
        fit(model.step, model.stream, 1, on_nonfinite="ignore")
    with pytest.raises(ConfigError, match="early_stopping needs validation"):
        fit(model.step, model.stream, 1, early_stopping=EarlyStopping(wait=1))
    with pytest.raises(ConfigError, match="no metrics.jsonl"):
        from symtrain.train.plot import plot_run

        plot_run(tmp_path)


def test_long_run_checkpoint_history_is_bounded_and_csv_appends(env, tmp_path, monkeypatch):
    """Checkpoints hold only the last HISTORY_TAIL epochs/validations; resume rebuilds the older ones from
    metrics.jsonl exactly. metrics.csv is appended to (rewritten only for new columns or after a resume)
    and always equals the table of the whole log."""
    import symtrain.train.trainer as trainer_mod
    from symtrain.train import metrics

    _, _, model, ev = env
    monkeypatch.setattr(trainer_mod, "HISTORY_TAIL", 2)
    rewrites = []
    real_write_csv = metrics.write_csv
    monkeypatch.setattr(metrics, "write_csv", lambda recs, path: rewrites.append(len(recs)) or
                        real_write_csv(recs, path))
    kwargs = dict(validation=ev, validate_every_steps=9, progress=False, log_every=4)
    model.reset()
    ref = fit(model.step, model.stream, 6, **kwargs)
    reference = model.state()

    class StopAt(Callback):
        def on_step_end(self, trainer, step, metrics):
            if trainer.global_step == 4 * 18 + 5:
                trainer.request_stop("interrupted")

    model.reset()
    run = tmp_path / "run"
    first = fit(model.step, model.stream, 6, run_dir=run, callbacks=[StopAt()], **kwargs)
    assert len(rewrites) <= 2, rewrites  # the first epoch's table, then appends only
    meta = json.loads((ckpt.load_latest(run / "checkpoints").path / ckpt.META).read_text())
    assert len(meta["history"]["epochs"]) == 2 and meta["history"]["epochs_total"] == 4
    assert len(meta["history"]["validations"]) == 2 and meta["history"]["validations_total"] == 8
    rewrites.clear()
    h = fit(model.step, model.stream, 6, run_dir=run, resume=True, **kwargs)
    assert len(rewrites) == 1  # once after the resume (the log was cut back to the checkpoint)
    assert h.epochs[:4] == first.epochs  # the older entries come back from the log, to the bit
    assert h.validations == ref.validations and h.best == ref.best
    assert [e["loss"] for e in h.epochs] == [e["loss"] for e in ref.epochs]
    _same(model.state(), reference)
    real_write_csv(metrics.read_metrics(run), tmp_path / "full.csv")
    assert (run / "metrics.csv").read_text() == (tmp_path / "full.csv").read_text()
