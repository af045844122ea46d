"""Exact resume: a run killed with SIGKILL (mid-epoch, right after an epoch boundary, right after a resume)
and resumed ends with the same state, to the bit, as an uninterrupted run; SIGINT checkpoints and exits.

The training subprocesses run ``symtrain train`` on a tiny script (an MLP with dropout, Adam and a
learning-rate schedule, so parameters, moments, counters, the schedule clock and the RNG must all be
restored); each pays the import and a FAST_COMPILE compile (a few seconds).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from symtrain.train import checkpoint as ckpt

pytestmark = pytest.mark.filterwarnings("ignore:RandomStream is deprecated:FutureWarning")

SCRIPT = textwrap.dedent('''
    import os, signal
    import numpy as np
    import symtrain as st
    from symtrain.backend import RandomStream, shared
    from symtrain.nnet import dropout, relu
    from symtrain.train.callbacks import Callback

    STREAM = {"batch_size": 16, "chunk_rows": 48, "seed": 3}
    FIT = {"checkpoint_every_steps": 5, "progress": False, "log_every": 4, "epochs": 3}

    class Killer(Callback):
        """SYMTRAIN_TEST_KILL="step:N" | "epoch_begin:E" | "after_resume:K" | "sigint:N" (N global steps)."""
        def __init__(self, spec):
            kind, _, n = spec.partition(":")
            self.kind, self.n, self.here = kind, int(n or 0), 0
        def on_step_end(self, t, step, metrics):
            self.here += 1
            if (self.kind == "step" and t.global_step == self.n) or (self.kind == "after_resume" and self.here == self.n):
                os.kill(os.getpid(), signal.SIGKILL)
            if self.kind == "sigint" and t.global_step == self.n:
                os.kill(os.getpid(), signal.SIGINT)
        def on_epoch_begin(self, t, epoch):
            if self.kind == "epoch_begin" and epoch == self.n and t.step_in_epoch == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    def build(train, valid):
        x, y = train.batch("x"), train.batch("y")
        rng = RandomStream(7)  # its generator is state the step updates by default
        W1 = shared(np.random.default_rng(0).standard_normal((6, 8)).astype("float32") * 0.3, name="W1")
        b1 = shared(np.zeros(8, "float32"), name="b1")
        W2 = shared(np.zeros((8, 3), "float32"), name="W2")
        b2 = shared(np.zeros(3, "float32"), name="b2")
        h, _ = dropout(relu(x @ W1 + b1), 0.2, rng)
        p = st.nnet.softmax(h @ W2 + b2)
        cost = st.nnet.categorical_crossentropy(p, y).mean()
        lr = st.optim.step_decay(0.05, 0.5, every=7, per="step")
        step = st.compile_step(cost, [W1, b1, W2, b2], train, st.optim.adam(lr))
        return {"step": step, "callbacks": [Killer(os.environ.get("SYMTRAIN_TEST_KILL", "none:0"))]}
''')  # noqa: E501


def _train(tmp_path, data, run_dir, kill: str, resume: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYMTRAIN_TEST_KILL": kill}
    cmd = [sys.executable, "-m", "symtrain.cli", "-q", "train", str(tmp_path / "model.py"), "--data",
           str(data),
           "--run-dir", str(run_dir)] + (["--resume"] if resume else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _final_state(run_dir):
    c = ckpt.load_latest(run_dir / "checkpoints")
    return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from symtrain.storage import write_dataset

    tmp = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = (np.abs(x[:, 0]) * 2).astype(np.int64).clip(0, 2)
    data = write_dataset(tmp / "data", {"x": x, "y": y})
    (tmp / "model.py").write_text(SCRIPT)
    return tmp, data


@pytest.fixture(scope="module")
def reference(setup):
    """The uninterrupted run, in this process (same flags as the subprocesses)."""
    from symtrain.train.commands import run_script

    tmp, data = setup
    assert "SYMTRAIN_TEST_KILL" not in os.environ  # the script's default: no kill
    history = run_script(tmp / "model.py", data, tmp / "ref")
    assert history.stop_reason == "completed"
    return _final_state(tmp / "ref")


def _assert_same(a: ckpt.Checkpoint, b: ckpt.Checkpoint) -> None:
    assert a.cursor["global_step"] == b.cursor["global_step"] and a.cursor["epoch"] == b.cursor["epoch"]
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        va, vb = a.arrays[name], b.arrays[name]
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), name  # to the bit
        else:
            assert va == vb, name


@pytest.mark.slow
def test_sigkill_mid_epoch_after_resume_and_at_epoch_boundary_resumes_to_the_bit(setup, reference):
    tmp, data = setup
    run = tmp / "killed"
    spe = 200 // 16  # 12 steps per epoch, 4 buffer fills (48, 48, 48, 48 -> last one 8 rows: dropped)
    # 1) killed at a random step of epoch 0 (checkpoints every 5 steps); 2) resumed and killed on its 2nd
    # step; 3) resumed and killed right after the epoch-1 boundary (epoch checkpoint just written);
    # 4) resumed to the end.
    k = random.randint(1, spe - 1)
    print(f"first run killed after step {k}")  # shown if the test fails
    for kill, resume in [(f"step:{k}", False), ("after_resume:2", True), ("epoch_begin:2", True),
                         ("none:0", True)]:
        proc = _train(tmp, data, run, kill, resume)
        if kill == "none:0":
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode == -signal.SIGKILL, (kill, proc.returncode, proc.stderr)
    final = _final_state(run)
    assert final.cursor["global_step"] == 3 * spe
    assert final.meta["history"]["resumed_from"], "the last run must have resumed"
    _assert_same(final, reference)
    # the metrics log has no step twice (it is cut back to the checkpoint on resume)
    from symtrain.train.metrics import read_metrics

    steps = [(r["kind"], r["step"]) for r in read_metrics(run) if r["kind"] == "train"]
    ref_steps = [(r["kind"], r["step"]) for r in read_metrics(tmp / "ref") if r["kind"] == "train"]
    assert steps == ref_steps


@pytest.mark.slow
def test_sigint_checkpoints_and_exits_cleanly_then_resumes(setup, reference):
    tmp, data = setup
    run = tmp / "sigint"
    proc = _train(tmp, data, run, "sigint:7", False)
    assert proc.returncode == 130, proc.stderr
    assert "--resume" in proc.stderr
    c = _final_state(run)
    # the signal arrives after step 7's work; the run finishes the step in flight (8) and checkpoints there
    assert c.meta["reason"] == "interrupt" and c.cursor["global_step"] == 8
    proc = _train(tmp, data, run, "none:0", True)
    assert proc.returncode == 0, proc.stderr
    _assert_same(_final_state(run), reference)
