"""The run directory (symtrain/train/rundir.py): symtrain deletes or replaces only what it wrote (ownership
marker), one writer per run directory (lock with pid and host, stale lock taken over), only regular files
read (no FIFO hang, no symlink out of the run dir), and every field of checkpoint.json checked first."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import symtrain as st
from symtrain.backend import shared
from symtrain.errors import CheckpointError, ConfigError, RunDirError
from symtrain.train import checkpoint as ckpt
from symtrain.train import rundir
from symtrain.train.callbacks import Callback
from symtrain.train.fit import fit

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A logistic regression over 60 rows (6 steps an epoch) and a function to reset it."""
    tmp = tmp_path_factory.mktemp("rundir")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    data = st.write_dataset(tmp / "data", {"x": x, "y": (x[:, 0] > 0).astype(np.int64)})
    stream = st.ChunkStream(data, batch_size=10, chunk_rows=30, seed=1)
    W = shared(np.zeros((4, 2), np.float32), name="W")
    cost = st.nnet.categorical_crossentropy(st.nnet.softmax(stream.batch("x") @ W), stream.batch("y")).mean()
    step = st.compile_step(cost, [W], stream, st.optim.sgd(0.1))
    initial = ckpt.snapshot(step.state_variables())

    def run(run_dir, epochs=2, **kw):
        ckpt.restore(initial, step.state_variables())
        return fit(step, stream, epochs, run_dir=run_dir, progress=False, **kw)

    yield run
    stream.close()


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# ----- rule 1: symtrain never deletes or replaces what it did not write ------------------------------------


@pytest.mark.parametrize("name", ["metrics.csv", "metrics.jsonl"])
def test_a_users_file_at_a_layout_name_is_refused_and_kept(model, tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_text("the user's own\n")
    for overwrite in (False, True):
        with pytest.raises(RunDirError, match=f"{name}.*symtrain did not write"):
            model(run, overwrite=overwrite)
        assert (run / name).read_text() == "the user's own\n"
    assert _tree(run) == [name]


@pytest.mark.parametrize("name", ["curves.png", "options.json", "notes.txt"])
def test_a_users_file_fit_does_not_write_is_kept_through_overwrite(model, tmp_path, name):
    """fit writes neither curves.png (plot does, and refuses a foreign one) nor options.json (the CLI does,
    and refuses a foreign one): both stay, as any other file, through runs and --overwrite."""
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_text("the user's own\n")
    model(run, epochs=1)
    model(run, epochs=1, overwrite=True)
    assert (run / name).read_text() == "the user's own\n"


def test_a_users_checkpoints_dir_is_refused_even_with_overwrite(model, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "model_best.pt").write_bytes(b"torch")
    with pytest.raises(RunDirError, match=r"checkpoints/ \(model_best.pt\).*symtrain did not write"):
        model(run, overwrite=True)
    assert (run / "checkpoints" / "model_best.pt").read_bytes() == b"torch"


def test_overwrite_deletes_only_symtrains_own_files(model, tmp_path, caplog):
    run = tmp_path / "run"
    model(run)
    first = {p.name for p in (run / "checkpoints").iterdir()}
    (run / "checkpoints" / "model_best.pt").write_bytes(b"torch")  # the user's files, added later
    (run / "notes.txt").write_text("notes")
    (run / "runs" / "nested").mkdir(parents=True)
    (run / "checkpoints" / "epoch-00007-step-00000000").mkdir()  # a checkpoint-like name, not ours
    (run / "checkpoints" / "epoch-00007-step-00000000" / "mine").write_text("x")
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        model(run)
    h = model(run, epochs=1, overwrite=True)
    assert h.stop_reason == "completed" and not h.resumed_from
    assert (run / "checkpoints" / "model_best.pt").read_bytes() == b"torch"
    assert (run / "notes.txt").read_text() == "notes" and (run / "runs" / "nested").is_dir()
    assert (run / "checkpoints" / "epoch-00007-step-00000000" / "mine").read_text() == "x"
    assert (
        "epoch-00002-step-00000000" in first
        and not (run / "checkpoints" / "epoch-00002-step-00000000").exists()
    )
    assert "kept 2 entries" in caplog.text and "model_best.pt" in caplog.text
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["train", "epoch"]  # the old log was replaced (ours)


def test_symlinks_and_fifos_at_layout_names_are_refused(model, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    rundir.claim(run, rundir.LAYOUT)  # even a name the marker lists is never followed out of the run dir
    (run / "metrics.csv").symlink_to(outside)
    with pytest.raises(RunDirError, match="is a symlink"):
        model(run, overwrite=True)
    (run / "metrics.csv").unlink()
    os.mkfifo(run / "metrics.jsonl")
    with pytest.raises(RunDirError, match="is a FIFO, not a regular file"):
        model(run)
    assert outside.read_text() == "precious"


def test_a_foreign_best_directory_is_refused(model, tmp_path):
    run = tmp_path / "run"
    model(run, epochs=1)
    shutil.rmtree(run / "checkpoints" / "best", ignore_errors=True)
    (run / "checkpoints" / "best").mkdir()
    (run / "checkpoints" / "best" / "weights.h5").write_text("x")
    with pytest.raises(RunDirError, match="best exists and is not a symtrain checkpoint"):
        model(run, resume=True)
    with pytest.raises(CheckpointError, match="is not a symtrain checkpoint"):
        ckpt.write_checkpoint(run / "checkpoints" / "best", {}, {})
    assert (run / "checkpoints" / "best" / "weights.h5").exists()


def test_prune_never_deletes_a_foreign_checkpoint_like_directory(tmp_path):
    ck = tmp_path / "checkpoints"
    (ck / "epoch-00000-step-00000000").mkdir(parents=True)
    (ck / "epoch-00000-step-00000000" / "data").write_text("mine")
    ckpt.prune(ck, 1)
    assert (ck / "epoch-00000-step-00000000" / "data").exists()


# ----- rule 2: one writer per run directory -----------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from symtrain.train.rundir import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def _holder(run):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_owner(model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    proc = _holder(run)
    try:
        with pytest.raises(
            RunDirError,
            match=rf"in use by another run \(pid {proc.pid} on host "
            rf"'{socket.gethostname()}'.*symtrain-run.lock",
        ):
            model(run)
        assert not (run / "checkpoints").exists()  # refused before anything was written
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    h = model(run, epochs=1)  # the kernel dropped the dead holder's lock: taken over
    assert h.stop_reason == "completed" and not (run / rundir.LOCK).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(model, tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    info = {"pid": dead.pid, "host": socket.gethostname(), "started": time.time() - 60}
    (run / rundir.LOCK).write_text(json.dumps(info))
    assert model(run, epochs=1).stop_reason == "completed"
    assert f"taking over the stale lock of pid {dead.pid}" in caplog.text


def test_a_lock_claimed_by_a_live_process_or_another_host_is_respected(model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / rundir.LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunDirError, match=f"pid {sleeper.pid}"):
            model(run)
    finally:
        sleeper.kill()
        sleeper.wait()
    (run / rundir.LOCK).write_text(json.dumps({"pid": 1234, "host": "gpu-node-7"}))
    with pytest.raises(RunDirError, match="'gpu-node-7', another host.*delete the lock file"):
        model(run)
    (run / rundir.LOCK).unlink()
    assert model(run, epochs=1).stop_reason == "completed"


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    with rundir.locked(tmp_path) as a:
        with rundir.locked(tmp_path) as b:
            assert a is b and (tmp_path / rundir.LOCK).exists()
        info = json.loads((tmp_path / rundir.LOCK).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert not (tmp_path / rundir.LOCK).exists()


def test_read_only_run_dir_is_one_clear_error(model, tmp_path, monkeypatch):
    """--resume in a read-only run dir (simulated: root writes anywhere) fails up front, one line."""
    import errno
    import tempfile

    run = tmp_path / "run"
    model(run, epochs=1)

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(
        RunDirError, match=r"run_dir=.* cannot be used: .*run is not writable \(Read-only file system\)"
    ):
        model(run, epochs=2, resume=True)


# ----- rule 3: only regular files are read, none outside their directory -------------------------------


def _two_checkpoints(model, tmp_path):
    run = tmp_path / "run"

    class StopAt(Callback):
        def on_step_end(self, trainer, step, metrics):
            if trainer.global_step == 9:
                trainer.request_stop("interrupted")

    model(run, epochs=2, checkpoint_every_steps=4, callbacks=[StopAt()])
    names = [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]
    assert names == ["epoch-00001-step-00000000", "epoch-00001-step-00000002", "epoch-00001-step-00000003"]
    return run, run / "checkpoints" / names[-1]


def test_a_fifo_checkpoint_json_never_hangs_and_falls_back(model, tmp_path):
    run, newest = _two_checkpoints(model, tmp_path)
    (newest / "checkpoint.json").unlink()
    os.mkfifo(newest / "checkpoint.json")
    with pytest.raises(CheckpointError, match="checkpoint.json: is not a regular file \\(a FIFO\\)"):
        ckpt.read_checkpoint(newest)
    assert ckpt.load_latest(run / "checkpoints").path.name == "epoch-00001-step-00000002"
    os.unlink(newest / "checkpoint.json")
    (newest / "checkpoint.json").mkdir()
    assert ckpt.load_latest(run / "checkpoints").path.name == "epoch-00001-step-00000002"
    os.rmdir(newest / "checkpoint.json")
    shutil.copy(run / "checkpoints" / "epoch-00001-step-00000002" / "checkpoint.json", newest)
    (newest / "arrays.npz").unlink()
    os.mkfifo(newest / "arrays.npz")
    with pytest.raises(CheckpointError, match="arrays.npz: is not a regular file \\(a FIFO\\)"):
        ckpt.read_checkpoint(newest)


def test_a_symlink_out_of_the_checkpoint_is_refused(model, tmp_path):
    run, newest = _two_checkpoints(model, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("checkpoint.json", "arrays.npz"):
        shutil.copy(newest / name, outside / name)
    for name in ("checkpoint.json", "arrays.npz"):
        (newest / name).unlink()
        (newest / name).symlink_to(outside / name)
        with pytest.raises(CheckpointError, match=f"{name}: is a symlink to .*outside"):
            ckpt.read_checkpoint(newest)
        (newest / name).unlink()
        shutil.copy(outside / name, newest / name)
    ckpt.read_checkpoint(newest)
    (run / "checkpoints" / "epoch-00009-step-00000000").symlink_to(newest)  # a linked checkpoint dir: ignored
    assert ckpt.load_latest(run / "checkpoints").path == newest


def test_fifo_metrics_log_and_options_never_hang(tmp_path):
    os.mkfifo(tmp_path / "metrics.jsonl")
    from symtrain.train.metrics import history_records, read_metrics

    with pytest.raises(ConfigError, match="a FIFO"):
        read_metrics(tmp_path)
    assert history_records(tmp_path, 3) is None
    os.mkfifo(tmp_path / rundir.OPTIONS)
    with pytest.raises(ConfigError, match="options.json: is not a regular file"):
        rundir.load_options(tmp_path, {})
    os.mkfifo(tmp_path / rundir.MARKER)
    with pytest.raises(ConfigError, match="symtrain-run.json: is not a regular file"):
        rundir.owned(tmp_path)


# ----- rule 4: every field of checkpoint.json is checked before use -------------------------------------


def _set(path, value):
    def edit(meta):
        *parents, last = path
        d = meta
        for k in parents:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value

    return edit


TAMPER = {
    "cursor past the epoch's end": (
        _set(["cursor", "step_in_epoch"], 7),
        "'cursor.step_in_epoch' must be an integer in 0..6",
    ),
    "epoch 10**30": (_set(["cursor", "epoch"], 10**30), "'cursor.epoch' must be an integer in 0..2"),
    "global_step NaN": (
        _set(["cursor", "global_step"], float("nan")),
        "'cursor.global_step' must be an integer",
    ),
    "global_step 1e300": (_set(["cursor", "global_step"], 1e300), "'cursor.global_step' must be an integer"),
    "global_step inconsistent": (
        _set(["cursor", "global_step"], 5),
        "'cursor.global_step' is 5, but epoch 1",
    ),
    "missing cursor": (_set(["cursor"], KeyError), "'cursor' is missing"),
    "string epoch": (_set(["cursor", "epoch"], "1"), "'cursor.epoch' must be an integer.*'1' \\(str\\)"),
    "string steps_per_epoch": (_set(["cursor", "steps_per_epoch"], "6"), "'cursor.steps_per_epoch' must be"),
    "list for the cursor": (_set(["cursor"], [1, 3]), "'cursor' must be an object, got \\[1, 3\\]"),
    "list for the stream": (_set(["stream"], []), "'stream' must be an object"),
    "list for epoch_state": (_set(["epoch_state"], []), "'epoch_state' must be an object"),
    "string metric sum": (
        _set(["epoch_state", "sums"], {"loss": "x"}),
        "'epoch_state.sums.loss' must be a number",
    ),
    "variables a dict": (_set(["variables"], {}), "'variables' must be a list"),
    "variable without kind": (
        lambda m: m["variables"].append({"name": "rng"}),
        "'variables\\[1\\].kind' is missing",
    ),
    "unknown bit generator": (
        lambda m: m["variables"].append(
            {"name": "g", "kind": "generator", "state": {}, "bit_generator": "seed"}
        ),
        "'variables\\[1\\].bit_generator' must be one of",
    ),
    "object dtype": (
        _set(["variables", 0, "dtype"], "|O"),
        "'variables\\[0\\].dtype' must be a numeric dtype",
    ),
    "negative shape": (_set(["variables", 0, "shape"], [-4, 2]), "'variables\\[0\\].shape' must be a list"),
    "duplicate variable": (
        lambda m: m["variables"].append(dict(m["variables"][0])),
        "'variables\\[1\\].name' repeats the variable 'W'",
    ),
    "epochs zero": (_set(["epochs"], 0), "'epochs' must be an integer in 1.."),
    "history best a list": (_set(["history", "best"], [1]), "'history.best' must be an object"),
    "log lines a string": (
        _set(["callbacks", "metrics_log", "lines"], "12"),
        "'callbacks.metrics_log.lines'",
    ),
    "elapsed 1e300": (_set(["callbacks", "metrics_log", "elapsed"], 1e300),
                      "'callbacks.metrics_log.elapsed' must be between 0 and"),
    "shape past the file": (_set(["variables", 0, "shape"], [10**6, 10**6]), None),
    "sha not hex": (_set(["arrays_sha256"], "zz"), "'arrays_sha256' must be 64 hex digits"),
    "fields not strings": (_set(["stream", "fields"], [1]), "'stream.fields' must be a list of strings"),
    "everything else missing": (lambda m: m.clear(), "'epochs' is missing"),
}


@pytest.fixture(scope="module")
def written(model, tmp_path_factory):
    return _two_checkpoints(model, tmp_path_factory.mktemp("written"))


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_checkpoint_json_is_a_checkpoint_error_naming_the_field(written, tmp_path, case):
    edit, message = TAMPER[case]
    run = tmp_path / "run"
    shutil.copytree(written[0], run)
    newest = run / "checkpoints" / written[1].name
    meta = json.loads((newest / "checkpoint.json").read_text())
    fmt, ver = meta["format"], meta["version"]
    edit(meta)
    meta.update(format=fmt, version=ver)
    (newest / "checkpoint.json").write_text(json.dumps(meta))
    if message is None:  # the table promises more bytes than arrays.npz holds
        message = "the variable table declares 4000000000000 bytes of arrays, arrays.npz holds"
        prefix = ""
    else:
        prefix = "field "
    with pytest.raises(CheckpointError, match=f"{re.escape(str(newest))}/checkpoint.json: {prefix}{message}"):
        ckpt.read_checkpoint(newest)
    assert ckpt.load_latest(run / "checkpoints").path.name == "epoch-00001-step-00000002"


def test_resume_falls_back_past_a_tampered_newest_checkpoint(model, written, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(written[0], run)
    newest = run / "checkpoints" / written[1].name
    meta = json.loads((newest / "checkpoint.json").read_text())
    meta["cursor"]["epoch"] = 10**30
    (newest / "checkpoint.json").write_text(json.dumps(meta))
    h = model(run, epochs=2, resume=True)
    assert h.resumed_from[-1].endswith("epoch-00001-step-00000002") and h.global_step == 12
    assert "field 'cursor.epoch'" in caplog.text and "falling back to the previous one" in caplog.text


def test_a_checkpoint_mismatch_names_each_difference_once(model, tmp_path):
    run = tmp_path / "run"
    model(run, epochs=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    other = st.write_dataset(tmp_path / "d", {"x": x, "y": (x[:, 0] > 0).astype(np.int64)})
    with st.ChunkStream(other, batch_size=20, chunk_rows=40, seed=1) as s:
        W = shared(np.zeros((4, 2), np.float32), name="W")
        cost = st.nnet.categorical_crossentropy(st.nnet.softmax(s.batch("x") @ W), s.batch("y")).mean()
        step = st.compile_step(cost, [W], s, st.optim.sgd(0.1))
        with pytest.raises(CheckpointError) as err:
            fit(step, s, 2, run_dir=run, resume=True, progress=False)
    message = str(err.value)
    assert "refusing to resume" in message
    for word in ("batch size: checkpoint 10, now 20", "chunk size (rows): checkpoint 30, now 40"):
        assert message.count(word.split(":")[0]) == 1 and word in message, (word, message)


def test_a_run_dir_of_an_earlier_symtrain_is_adopted(model, tmp_path):
    """No marker (written before it existed): its symtrain checkpoints and symtrain-format logs are adopted
    for resume and overwrite; a user's file in checkpoints/ is still never deleted."""
    run = tmp_path / "run"

    class StopAt(Callback):
        def on_step_end(self, trainer, step, metrics):
            if trainer.global_step == 3:
                trainer.request_stop("interrupted")

    model(run, epochs=2, checkpoint_every_steps=2, callbacks=[StopAt()])
    (run / rundir.MARKER).unlink()
    h = model(run, epochs=2, resume=True)
    assert h.stop_reason == "completed" and h.resumed_from and h.global_step == 12
    assert set(rundir.owned(run)) >= {"checkpoints", "metrics.jsonl", "metrics.csv"}
    (run / rundir.MARKER).unlink()
    (run / "checkpoints" / "model_best.pt").write_bytes(b"torch")
    h = model(run, epochs=1, overwrite=True)
    assert h.stop_reason == "completed" and not h.resumed_from
    assert (run / "checkpoints" / "model_best.pt").read_bytes() == b"torch"
    assert not (run / "checkpoints" / "epoch-00002-step-00000000").exists()
    (run / rundir.MARKER).unlink()
    (run / "metrics.csv").write_text("my,own,table\n")  # not symtrain's format: never adopted
    with pytest.raises(RunDirError, match="metrics.csv, which symtrain did not write"):
        model(run, epochs=1, overwrite=True)


def test_numbers_read_back_from_the_metrics_log_are_checked(tmp_path, caplog):
    from symtrain.train.metrics import history_records

    good = [{"kind": "epoch", "epoch": 1, "step": 6, "time": 0.1, "loss": 0.5},
            {"kind": "valid", "epoch": 1, "step": 6, "time": 0.2, "loss": "nan"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    got = history_records(tmp_path, 2)
    assert got["epochs"] == [{"epoch": 1, "step": 6, "loss": 0.5}] and np.isnan(got["validations"][0]["loss"])
    for bad in ({"epoch": "1"}, {"step": 1e300}, {"loss": [1]}, {"epoch": -1}, {"step": None}):
        rec = {**good[0], **bad}
        (tmp_path / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
        assert history_records(tmp_path, 1) is None, bad
    assert "is not what symtrain writes" in caplog.text


def test_history_of_an_earlier_checkpoint_is_renumbered_from_one():
    from symtrain.train.history import History

    old = {"epochs": [{"epoch": 0, "step": 6}], "epochs_total": 1, "validations": [{"epoch": 0, "step": 6}],
           "validations_total": 1, "best": {"score": 1.0, "epoch": 0, "step": 6, "metrics": {}},
           "skipped_steps": [{"epoch": 0, "step_in_epoch": 2, "global_step": 2}]}
    h, _ = History.from_checkpoint(old, None)
    assert h.epochs[0]["epoch"] == h.validations[0]["epoch"] == 1
    assert h.best["epoch"] == h.skipped_steps[0]["epoch"] == 1
    new = History(epochs=[{"epoch": 1, "step": 6}]).to_checkpoint(20)
    assert History.from_checkpoint(new, None)[0].epochs[0]["epoch"] == 1


def test_without_flock_the_pid_in_the_lock_file_still_guards(tmp_path, monkeypatch, caplog):
    import errno

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(rundir.fcntl, "flock", no_flock)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / rundir.LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunDirError, match=f"pid {sleeper.pid}"):
            rundir.RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = rundir.RunLock(tmp_path).acquire()  # its owner is gone now
    assert json.loads((tmp_path / rundir.LOCK).read_text())["pid"] == os.getpid()
    lock.release()
    assert "cannot lock files" in caplog.text


def test_resume_and_overwrite_together_are_refused(model, tmp_path):
    with pytest.raises(RunDirError, match="pass one of them"):
        model(tmp_path / "run", resume=True, overwrite=True)


def test_a_huge_log_line_count_stops_at_the_end_of_the_log(model, written, tmp_path):
    """callbacks.metrics_log.lines = 10**15 (the log has ~10): resuming reads the log to its end, no more."""
    run = tmp_path / "run"
    shutil.copytree(written[0], run)
    newest = run / "checkpoints" / written[1].name
    meta = json.loads((newest / "checkpoint.json").read_text())
    meta["callbacks"]["metrics_log"]["lines"] = 10**15
    (newest / "checkpoint.json").write_text(json.dumps(meta))
    h = model(run, epochs=2, resume=True)
    assert h.stop_reason == "completed" and h.global_step == 12


def test_a_user_callbacks_state_may_be_any_json(model, tmp_path):
    class Counter(Callback):
        state_key = "counter"

        def __init__(self):
            self.seen = []

        def on_step_end(self, trainer, step, metrics):
            self.seen.append(step)

        def state_dict(self):
            return list(self.seen)  # a list, not a dict

        def load_state_dict(self, state):
            self.seen = list(state)

    run = tmp_path / "run"
    model(run, epochs=1, callbacks=[Counter()])
    c = ckpt.load_latest(run / "checkpoints")
    assert c.meta["callbacks"]["counter"] == list(range(6))
    again = Counter()
    model(run, epochs=2, resume=True, callbacks=[again])
    assert again.seen == list(range(12))


@pytest.mark.parametrize("content", ['{"pid": 1000000000000000000000000000000, "host": "h"}', '{"pid": "12"}',
                                     "[1, 2]", "not json", '{"pid": -4, "host": null}', ""])
def test_a_lock_file_with_garbage_is_taken_over_when_nobody_holds_it(tmp_path, content):
    (tmp_path / rundir.LOCK).write_text(content)
    lock = rundir.RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / rundir.LOCK).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_best_checkpoint_of_another_shape_is_never_restored(model, tmp_path, caplog):
    run = tmp_path / "run"

    class StopAt(Callback):
        def on_step_end(self, trainer, step, metrics):
            if trainer.global_step == 3:
                trainer.request_stop("interrupted")

    model(run, epochs=2, validation=lambda: {"loss": 1.0}, validate_every_steps=2, callbacks=[StopAt()],
          restore_best=True)
    best = run / "checkpoints" / "best"
    assert best.is_dir()
    meta = json.loads((best / "checkpoint.json").read_text())
    ckpt.write_checkpoint(best, {"W": np.ones((3, 3), np.float32)}, meta)
    h = model(run, epochs=2, validation=lambda: {"loss": 2.0}, resume=True, restore_best=True)
    assert h.stop_reason == "completed" and "restore_best will use later bests only" in caplog.text
    assert "W: checkpoint float32(3, 3), model float32(4, 2)" in caplog.text


def test_a_dataset_directory_is_never_a_run_directory(model, tmp_path):
    data = st.write_dataset(tmp_path / "data", {"x": np.zeros((4, 2), np.float32)})
    before = _tree(data)
    with pytest.raises(RunDirError, match="is a dataset directory \\(it holds manifest.json\\)"):
        model(data)
    assert _tree(data) == before


def test_deeply_nested_json_is_one_error_not_a_recursion_crash(written, tmp_path):
    """A checkpoint.json, options.json or marker of 100,000 nested lists (JSON's recursion bomb)."""
    bomb = "[" * 100_000 + "]" * 100_000
    run = tmp_path / "run"
    shutil.copytree(written[0], run)
    newest = run / "checkpoints" / written[1].name
    (newest / "checkpoint.json").write_text(bomb)
    with pytest.raises(CheckpointError, match="checkpoint.json: unreadable"):
        ckpt.read_checkpoint(newest)
    assert ckpt.load_latest(run / "checkpoints").path.name == "epoch-00001-step-00000002"
    for name in (rundir.OPTIONS, rundir.MARKER):
        (run / name).write_text(bomb)
    with pytest.raises(RunDirError, match="options.json: not valid JSON"):
        rundir.load_options(run, {})
    with pytest.raises(RunDirError, match="symtrain-run.json: not valid JSON"):
        rundir.owned(run)
