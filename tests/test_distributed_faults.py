"""``symtrain train --ranks N``: signals, faults and elastic resume of data-parallel runs.

SIGINT/SIGTERM to the launcher stops every rank after the same step with one checkpoint (exit 130); the run
resumes on another rank count with the same global batch and ends where an uninterrupted one-process run
ends. A rank killed with SIGKILL, or raising, ends the whole job with an error naming the rank, no rank
process left behind, the last checkpoint intact. The model accumulates 2 micro-batches, so the interrupt
checkpoint falls inside an accumulation group whose sum is spread over the ranks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install symtrain[mpi] (mpi4py + mpich)")

from symtrain.train import checkpoint as ckpt  # noqa: E402

SCRIPT = textwrap.dedent('''
    import os, signal, time
    import numpy as np
    import symtrain as st
    from symtrain.backend import config, shared
    from symtrain.train.callbacks import Callback

    STREAM = {"batch_size": 12, "chunk_rows": 40, "seed": 3, "drop_last": False}
    FIT = {"checkpoint_every_steps": 4, "progress": False, "epochs": 3, "check_sync_every": 3}
    RANK = int(os.environ.get("PMI_RANK", "0"))
    if os.environ.get("SYMTRAIN_TEST_PIDS"):
        with open(os.path.join(os.environ["SYMTRAIN_TEST_PIDS"], str(os.getpid())), "w") as f:
            f.write(str(RANK))

    class Fault(Callback):
        """SYMTRAIN_TEST_FAULT="kill:N" | "raise:N" | "diverge:N" | "stop:N" (rank 1 after step N) | "pause:N"
        (rank 0 marks a file and waits for the signal the test then sends to the launcher, at step N)."""
        def __init__(self, spec):
            kind, _, n = spec.partition(":")
            self.kind, self.n = kind, int(n or 0)
        def on_step_end(self, t, step, metrics):
            if t.global_step != self.n:
                return
            if self.kind == "kill" and RANK == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            if self.kind == "raise" and RANK == 1:
                raise RuntimeError("boom on purpose")
            if self.kind == "stop" and RANK == 1:
                t.request_stop("user", "a decision only rank 1 takes")
            if self.kind == "diverge" and RANK == 1:
                W = t.variables["W"]
                W.set_value(W.get_value() + np.float32(1e-3))
            if self.kind == "pause" and RANK == 0:
                with open(os.environ["SYMTRAIN_TEST_MARK"], "w") as f:
                    f.write("here")
                waited = 0.0
                while t.interrupt.requested is None and waited < 20:  # until the forwarded signal lands
                    time.sleep(0.02)
                    waited += 0.02

    def build(train, valid):
        if os.environ.get("SYMTRAIN_TEST_FAULT") == "build" and RANK == 1:
            raise ValueError("bad build on rank 1")
        W = shared(np.random.default_rng(0).standard_normal((8, 3)).astype(config.floatX) * 0.3, name="W")
        b = shared(np.zeros(3, config.floatX), name="b")
        p = st.nnet.softmax(train.batch("x") @ W + b)
        nll = st.nnet.categorical_crossentropy(p, train.batch("y"))
        cost = (nll * train.batch_mask()).sum() / train.batch_valid().astype(config.floatX)
        lr = st.optim.step_decay(0.05, 0.5, every=5, per="step")
        step = st.compile_step(cost, [W, b], train, st.optim.adam(lr, max_norm=1.0), accumulate=2)
        return {"step": step, "callbacks": [Fault(os.environ.get("SYMTRAIN_TEST_FAULT", "none:0"))]}
''')


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Dataset, script, and the uninterrupted one-process run with the global batch 12."""
    from symtrain.storage import write_dataset
    from symtrain.train.commands import run_script

    tmp = tmp_path_factory.mktemp("distfaults")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((101, 8)).astype(np.float32)
    y = (np.abs(x[:, 0]) * 2).astype(np.int64).clip(0, 2)
    data = write_dataset(tmp / "data", {"x": x, "y": y})
    (tmp / "model.py").write_text(SCRIPT)
    history = run_script(tmp / "model.py", data, tmp / "ref")
    assert history.stop_reason == "completed"
    return tmp, data, ckpt.load_latest(tmp / "ref" / "checkpoints")


def _command(tmp, data, run_dir, ranks: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "symtrain.cli", "-q", "train", str(tmp / "model.py"), "--data", str(data),
            "--run-dir", str(run_dir), "--ranks", str(ranks), "--batch-size", str(12 // ranks), *extra]


def _env(tmp, fault: str = "none:0") -> dict[str, str]:
    pids = tmp / f"pids-{fault.replace(':', '-')}-{time.monotonic_ns()}"
    pids.mkdir()
    return {**os.environ, "SYMTRAIN_TEST_FAULT": fault, "SYMTRAIN_TEST_PIDS": str(pids),
            "SYMTRAIN_TEST_MARK": str(tmp / "mark")}


def _all_ranks_gone(env: dict[str, str], ranks: int) -> None:
    """Every rank process of the job has exited (mpiexec may take a moment to reap them)."""
    pids = [int(p) for p in os.listdir(env["SYMTRAIN_TEST_PIDS"])]
    assert len(pids) == ranks
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.1)
    assert not alive, f"rank processes {alive} outlived the job"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _assert_close(a: ckpt.Checkpoint, b: ckpt.Checkpoint) -> None:
    assert a.cursor["global_step"] == b.cursor["global_step"] and a.cursor["epoch"] == b.cursor["epoch"]
    assert sorted(a.arrays) == sorted(b.arrays)
    for name, va in a.arrays.items():
        np.testing.assert_allclose(va, b.arrays[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _signal_at_pause(tmp, cmd: list[str], env: dict[str, str], sig: int) -> subprocess.CompletedProcess:
    """Start the launcher, wait until rank 0 pauses after the marked step, send ``sig`` to the launcher."""
    mark = tmp / "mark"
    mark.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), proc.communicate()[1][-3000:]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _interrupt_checkpoints(cdir) -> list:
    return [c for c in ckpt.list_checkpoints(cdir) if ckpt.read_checkpoint(c).meta["reason"] == "interrupt"]


def test_sigint_stops_all_ranks_at_one_step_then_resume_on_three_ranks_matches_one_process(setup):
    tmp, data, reference = setup
    run = tmp / "sigint"
    env = _env(tmp, "pause:11")
    res = _signal_at_pause(tmp, _command(tmp, data, run, 2), env, signal.SIGINT)
    assert res.returncode == 130, res.stderr[-3000:]
    assert res.stderr.count("interrupted; resume with") == 1  # rank 0 alone reports
    _all_ranks_gone(env, 2)
    cdir = run / "checkpoints"
    stopped = ckpt.load_latest(cdir)
    assert stopped.meta["reason"] == "interrupt" and stopped.cursor["global_step"] == 12  # the step after 11
    assert len(_interrupt_checkpoints(cdir)) == 1
    assert stopped.arrays["train/accum_count"] == 1  # mid-group: the gathered sum of both ranks
    res = subprocess.run(_command(tmp, data, run, 3, "--resume"), env=_env(tmp), capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_close(ckpt.load_latest(cdir), reference)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "epoch"] == [9, 18, 27]  # rank 0 alone logs


def test_sigterm_to_the_launcher_stops_cleanly_with_one_checkpoint(setup):
    tmp, data, _ = setup
    run = tmp / "sigterm"
    env = _env(tmp, "pause:5")
    res = _signal_at_pause(tmp, _command(tmp, data, run, 2), env, signal.SIGTERM)
    assert res.returncode == 130, res.stderr[-3000:]
    _all_ranks_gone(env, 2)
    latest = ckpt.load_latest(run / "checkpoints")
    assert latest.meta["reason"] == "interrupt" and latest.cursor["global_step"] == 6
    assert len(_interrupt_checkpoints(run / "checkpoints")) == 1


def test_a_killed_launcher_leaves_no_rank_behind(setup):
    """mpiexec gets SIGTERM when the launcher dies (parent-death signal): the ranks stop (usually with an
    interrupt checkpoint at the next step) and none is orphaned; the newest checkpoint loads."""
    tmp, data, _ = setup
    run = tmp / "launcher-killed"
    env = _env(tmp, "pause:5")
    res = _signal_at_pause(tmp, _command(tmp, data, run, 2), env, signal.SIGKILL)
    assert res.returncode == -signal.SIGKILL
    _all_ranks_gone(env, 2)
    assert ckpt.load_latest(run / "checkpoints").cursor["global_step"] in (4, 6)


def test_sigkilled_rank_ends_the_job_naming_it_and_the_run_resumes(setup):
    tmp, data, reference = setup
    run = tmp / "killed"
    env = _env(tmp, "kill:6")
    res = subprocess.run(_command(tmp, data, run, 2), env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode not in (0, 130)
    assert "rank 1 (pid" in res.stderr, res.stderr[-3000:]
    _all_ranks_gone(env, 2)
    last = ckpt.load_latest(run / "checkpoints")
    assert last.cursor["global_step"] == 4  # the last checkpoint (every 4 steps) is intact
    resume = [sys.executable, "-m", "symtrain.cli", "-q", "train", "--run-dir", str(run), "--resume"]
    res = subprocess.run(resume, env=_env(tmp), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]  # one process: the stored 2 x 6 becomes a batch of 12
    _assert_close(ckpt.load_latest(run / "checkpoints"), reference)


def test_raising_rank_ends_the_job_with_its_error(setup):
    tmp, data, _ = setup
    env = _env(tmp, "raise:3")
    res = subprocess.run(_command(tmp, data, tmp / "raised", 2), env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode not in (0, 130)
    assert "rank 1 of 2" in res.stderr and "RuntimeError: boom on purpose" in res.stderr, res.stderr[-3000:]
    _all_ranks_gone(env, 2)


def test_build_raising_on_one_rank_only_ends_the_job_naming_it(setup):
    """Before fit: rank 0 would otherwise wait in its first collective forever."""
    tmp, data, _ = setup
    env = _env(tmp, "build")
    res = subprocess.run(_command(tmp, data, tmp / "badbuild", 2), env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode not in (0, 130)
    assert "rank 1 of 2" in res.stderr and "bad build on rank 1" in res.stderr, res.stderr[-3000:]
    _all_ranks_gone(env, 2)


def test_ranks_that_diverge_are_detected_by_the_state_checksum(setup):
    """A rank whose parameters drift (here: changed behind the step's back) is caught at the next check."""
    tmp, data, _ = setup
    env = _env(tmp, "diverge:4")
    res = subprocess.run(_command(tmp, data, tmp / "diverged", 2), env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode not in (0, 130)
    assert "RanksDivergedError" in res.stderr and "rank(s) [1] differ from rank 0" in res.stderr, \
        res.stderr[-3000:]
    _all_ranks_gone(env, 2)


def test_a_stop_requested_on_one_rank_only_is_an_error_not_a_hang(setup):
    tmp, data, _ = setup
    env = _env(tmp, "stop:5")
    res = subprocess.run(_command(tmp, data, tmp / "onesided", 2), env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode not in (0, 130)
    assert "RanksDivergedError" in res.stderr and "requested on some ranks only" in res.stderr, \
        res.stderr[-3000:]
    _all_ranks_gone(env, 2)
