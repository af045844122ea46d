"""`symtrain train` / `symtrain plot` as a user meets them: the run's options stored and reused by --resume
(the printed resume command is exact), one clear line and exit 2 for every failure (script typos,
build() raising, a locked or unwritable run dir, a full disk in plot or the metrics log), and messages
that say the right thing."""

from __future__ import annotations

import errno
import json
import os
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import symtrain as st
from symtrain.cli import main
from symtrain.train import rundir

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

SCRIPT = """
import os
import numpy as np
import symtrain as st
from symtrain.backend import pt, shared
from symtrain.train.callbacks import Callback

STREAM = {STREAM}
FIT = {FIT}

class StopAt(Callback):
    def on_step_end(self, t, step, metrics):
        if t.global_step == int(os.environ.get("STOP_AT", "0")):
            t.request_stop("interrupted")

def build(train, valid):
    open(os.environ["BUILT"], "a").write("built\\n")
    {BODY}
    W = shared(np.zeros((4, 2), "float32"), name="W")
    p = st.nnet.softmax(train.batch("x") @ W)
    step = st.compile_step(st.nnet.categorical_crossentropy(p, train.batch("y")).mean(), [W], train,
                           st.optim.sgd(0.1))
    out = {{"step": step, "callbacks": [StopAt()]{EXTRA}}}
    if valid is not None:
        pv = st.nnet.softmax(valid.batch("x") @ W)
        loss = st.nnet.categorical_crossentropy(pv, valid.batch("y"))
        out["validation"] = st.compile_eval({{"loss": loss}},
                                            valid)
    return out
"""


BODY_LINE = SCRIPT.splitlines().index("    {BODY}") + 1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmd")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return st.write_dataset(tmp / "train", {"x": x, "y": y}), st.write_dataset(
        tmp / "valid", {"x": x[:20], "y": y[:20]}
    )


def _script(
    tmp_path, stream='{"batch_size": 10, "chunk_rows": 40}', fit='{"progress": False}', body="", extra=""
):
    path = tmp_path / "model.py"
    path.write_text(SCRIPT.format(STREAM=stream, FIT=fit, BODY=body, EXTRA=extra))
    return path


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run `symtrain ...` in this process: returns (exit code, stderr)."""
    monkeypatch.setenv("BUILT", str(tmp_path / "built.txt"))

    def run(*argv, stop_at=0):
        monkeypatch.setenv("STOP_AT", str(stop_at))
        code = main(["-q", *map(str, argv)])
        return code, capsys.readouterr().err

    return run


def _built(tmp_path):
    p = tmp_path / "built.txt"
    return p.read_text().count("built") if p.exists() else 0


# ----- rule 7: resume resumes the run that was interrupted ------------------------------------------------


def test_the_printed_resume_command_resumes_the_same_run(data, tmp_path, cli):
    train, valid = data
    script, run = _script(tmp_path), tmp_path / "run"
    code, err = cli(
        "train",
        script,
        "--data",
        train,
        "--valid",
        valid,
        "--run-dir",
        run,
        "--epochs",
        3,
        "--batch-size",
        10,
        "--checkpoint-every-steps",
        4,
        stop_at=5,
    )
    assert code == 130, err
    command = err.split("resume with: ")[1].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["symtrain", "train"] and argv[-1] == "--resume"
    for flag, value in (
        ("--valid", valid),
        ("--epochs", "3"),
        ("--batch-size", "10"),
        ("--checkpoint-every-steps", "4"),
        ("--data", train),
    ):
        assert argv[argv.index(flag) + 1] == str(value), (flag, command)
    stored = json.loads((run / rundir.OPTIONS).read_text())
    assert stored["epochs"] == 3 and stored["stream"]["batch_size"] == 10 and stored["valid"] == str(valid)
    code, err = cli(*argv[1:])
    assert code == 0, err
    from symtrain.train.checkpoint import load_latest

    meta = load_latest(run / "checkpoints").meta
    assert meta["cursor"]["epoch"] == 3 and meta["history"]["best"] is not None  # validated, 3 epochs
    assert meta["history"]["resumed_from"][-1].endswith("epoch-00000-step-00000005")


def test_resume_takes_every_option_from_the_run_dir(data, tmp_path, cli):
    train, valid = data
    script, run = _script(tmp_path), tmp_path / "run"
    assert (
        cli(
            "train",
            script,
            "--data",
            train,
            "--valid",
            valid,
            "--run-dir",
            run,
            "--epochs",
            2,
            "--batch-size",
            20,
            stop_at=3,
        )[0]
        == 130
    )
    code, err = cli("train", "--run-dir", run, "--resume")  # no script, no --data: all stored
    assert code == 0, err
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 8  # 2 x 80/20
    code, err = cli("train", "--run-dir", run, "--resume", "--epochs", 3)  # an explicit --epochs overrides
    assert code == 0 and json.loads((run / rundir.OPTIONS).read_text())["epochs"] == 3


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--batch-size", 10, "--batch-size 10 differs from the run's 20"),
        ("--chunk-rows", 80, "--chunk-rows 80 differs from the run's 40"),
        ("--seed", 9, None),  # the run was started without --seed: the checkpoint check decides
    ],
)
def test_resume_refuses_an_option_that_makes_another_run(data, tmp_path, cli, flag, value, message):
    train, _ = data
    script, run = _script(tmp_path), tmp_path / "run"
    assert (
        cli("train", script, "--data", train, "--run-dir", run, "--epochs", 2, "--batch-size", 20, stop_at=3)[
            0
        ]
        == 130
    )
    before = _built(tmp_path)
    code, err = cli("train", "--run-dir", run, "--resume", flag, value)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    if message:
        assert message in err and "options.json" in err and _built(tmp_path) == before  # refused before build
    else:
        assert "refusing to resume" in err and "seed" in err


def test_resume_refuses_another_script_and_bad_stored_options(data, tmp_path, cli):
    train, _ = data
    script, run = _script(tmp_path), tmp_path / "run"
    assert cli("train", script, "--data", train, "--run-dir", run, "--epochs", 2, stop_at=3)[0] == 130
    other = tmp_path / "other.py"
    other.write_text(script.read_text())
    code, err = cli("train", other, "--run-dir", run, "--resume")
    assert code == 2 and "is not the run's" in err
    doc = json.loads((run / rundir.OPTIONS).read_text())
    doc["epochs"] = "3"
    (run / rundir.OPTIONS).write_text(json.dumps(doc))
    code, err = cli("train", "--run-dir", run, "--resume")
    assert code == 2 and "options.json: field 'epochs' must be int, got '3'" in err
    for field, value, message in (("epochs", 0, "'epochs' must be an integer >= 1"),
                                  ("stream", {"batch_size": -5}, "'stream.batch_size' must be an integer"),
                                  ("stream", {"batch_sise": 5}, "'stream' has an unknown key 'batch_sise'"),
                                  ("ranks", 10**30, "'ranks' must be an integer >= 1"),
                                  ("stream", [], "field 'stream' must be dict")):
        (run / rundir.OPTIONS).write_text(json.dumps({**doc, "epochs": 2, field: value}))
        code, err = cli("train", "--run-dir", run, "--resume")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (field, err)
    code, err = cli("train", "--run-dir", tmp_path / "fresh", "--resume")
    assert code == 2 and "a script is required: " in err and "fresh/options.json does not exist" in err


# ----- rule 8: every failure is one clear line and exit 2 -------------------------------------------------


@pytest.mark.parametrize(
    "kw,message",
    [
        (
            dict(stream='{"batch_sise": 10}'),
            "STREAM has an unknown key 'batch_sise' (did you mean 'batch_size'?)",
        ),
        (dict(stream="[10]"), "STREAM must be a dict, got list"),
        (dict(fit='{"epoch": 3}'), "FIT has an unknown key 'epoch' (did you mean 'epochs'?)"),
        (dict(fit='{"run_dir": "x"}'), "FIT sets 'run_dir', which comes from the command line"),
        (
            dict(extra=', "validaton": None'),
            "returned has an unknown key 'validaton' (did you mean 'validation'?)",
        ),
        (dict(body='raise ValueError("boom")'), "build(train, valid) raised ValueError: boom (at "),
        (dict(body='{}["missing"]'), "build(train, valid) raised KeyError: 'missing'"),
        (dict(body="import no_such_module_xyz"), "raised ModuleNotFoundError"),
    (dict(body="pt.as_tensor_variable(object())"), f"model.py:{BODY_LINE})"),  # raised inside PyTensor:
    # the line named is the script's, not the library's
    ],
)
def test_script_mistakes_are_one_line(data, tmp_path, cli, kw, message):
    script = _script(tmp_path, **kw)
    code, err = cli("train", script, "--data", data[0], "--run-dir", tmp_path / "run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # nothing left behind by a refused start


def test_a_users_options_json_is_refused_by_train(tmp_path, cli, data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "options.json").write_text("{}")
    code, err = cli("train", _script(tmp_path), "--data", data[0], "--run-dir", run)
    assert code == 2 and "options.json, which symtrain did not write" in err and _built(tmp_path) == 0
    assert (run / "options.json").read_text() == "{}"


def test_bad_numbers_are_refused_before_anything_is_compiled(tmp_path, cli, data):
    for flag, value in (("--epochs", 0), ("--checkpoint-every-steps", -1)):
        script = _script(tmp_path)
        code, err = cli("train", script, "--data", data[0], "--run-dir", tmp_path / "run", flag, value)
        assert code == 2 and f"{flag} must be an integer >= 1, got {value}" in err and _built(tmp_path) == 0


def test_script_paths_and_import_errors(tmp_path, cli, data):
    code, err = cli("train", ".", "--data", data[0], "--run-dir", tmp_path / "run")
    assert code == 2 and "script '.' is a directory" in err
    code, err = cli("train", tmp_path / "nope.py", "--data", data[0], "--run-dir", tmp_path / "run")
    assert code == 2 and "nope.py' does not exist" in err
    bad = tmp_path / "bad.py"
    bad.write_text("def build(train, valid):\n    return (\n")
    code, err = cli("train", bad, "--data", data[0], "--run-dir", tmp_path / "run")
    assert code == 2 and "failed to load: SyntaxError" in err and len(err.strip().splitlines()) == 1


def test_a_second_train_on_a_locked_run_dir_is_refused_before_compiling(data, tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
        import sys, time
        from symtrain.train.rundir import RunLock
        RunLock(sys.argv[1]).acquire()
        print("held", flush=True)
        time.sleep(60)
    """),
            str(run),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = cli("train", _script(tmp_path), "--data", data[0], "--run-dir", run)
        assert code == 2 and f"in use by another run (pid {holder.pid} on host" in err
        assert _built(tmp_path) == 0  # refused before the script was imported and compiled
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_plot_full_disk_or_read_only_is_one_line_and_leaves_the_old_png(data, tmp_path, cli, monkeypatch):
    pytest.importorskip("matplotlib")
    import symtrain.train.plot as plot

    run = tmp_path / "run"
    assert cli("train", _script(tmp_path), "--data", data[0], "--run-dir", run, "--epochs", 1)[0] == 0
    assert cli("plot", run)[0] == 0
    good = (run / "curves.png").read_bytes()
    for err_no in (errno.ENOSPC, errno.EROFS):

        def fail(*a, err_no=err_no, **k):
            raise OSError(err_no, os.strerror(err_no))

        monkeypatch.setattr(plot.os, "fsync", fail)
        code, err = cli("plot", run)
        assert code == 2 and "curves.png: cannot write the plot" in err and os.strerror(err_no) in err
        assert len(err.strip().splitlines()) == 1 and (run / "curves.png").read_bytes() == good
        assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    (run / "curves.png").unlink()
    (run / "curves.png").write_bytes(b"the user's own picture")
    (run / rundir.MARKER).write_text(
        json.dumps(
            {"format": "symtrain-run", "version": 1, "files": ["checkpoints", "metrics.jsonl", "metrics.csv"]}
        )
    )
    code, err = cli("plot", run)
    assert code == 2 and "symtrain did not write it" in err
    assert (run / "curves.png").read_bytes() == b"the user's own picture"
    assert cli("plot", run, "-o", tmp_path / "mine.png")[0] == 0
    assert cli("plot", run, "-o", tmp_path / "mine.png")[0] == 0  # a PNG named by -o is replaced
    (tmp_path / "notes.txt").write_text("my notes")
    code, err = cli("plot", run, "-o", tmp_path / "notes.txt")
    assert code == 2 and "is not a PNG image" in err and (tmp_path / "notes.txt").read_text() == "my notes"


def test_metrics_log_write_failure_is_one_line(data, tmp_path, cli, monkeypatch):
    import builtins

    import symtrain.train.metrics as metrics

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    def full_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        return Full(f) if "w" in mode or "a" in mode else f

    monkeypatch.setattr(metrics, "open", full_open, raising=False)
    code, err = cli("train", _script(tmp_path), "--data", data[0], "--run-dir", tmp_path / "run")
    assert code == 2 and "metrics.jsonl: writing the metrics log failed (No space left on device)" in err
    assert len(err.strip().splitlines()) == 1, err


# ----- the examples: never delete a run, never rebuild a user's data ------------------------------------


def test_examples_refuse_to_rerun_over_a_run_and_never_rebuild_digits(tmp_path, data):
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import _main
    finally:
        sys.path.pop(0)
    mine = tmp_path / "digits"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(st.ConfigError, match="not a digits build.*never rebuilt or replaced"):
        _main.digits_data(mine, None)
    assert (mine / "notes.txt").read_text() == "mine"
    (mine / "digits.json").write_text(json.dumps({"rows": 60000, "seed": 0}))
    with pytest.raises(st.ConfigError, match="60000 train rows, not --rows 500"):
        _main.digits_data(mine, 500)
    with pytest.raises(st.ConfigError, match="incomplete or from another symtrain version"):
        _main.digits_data(mine, 60000)
    assert sorted(p.name for p in mine.iterdir()) == ["digits.json", "notes.txt"]
    script = Path(__file__).resolve().parents[1] / "examples" / "logistic_regression.py"
    rng = np.random.default_rng(0)
    rows = st.write_dataset(
        tmp_path / "d784", {"x": rng.random((300, 784), np.float32), "y": rng.integers(0, 10, 300)}
    )
    run = tmp_path / "run"
    base = [
        sys.executable,
        str(script),
        "--data",
        str(rows),
        "--valid",
        str(rows),
        "--run-dir",
        str(run),
        "--epochs",
        "1",
    ]
    env = {**ENV, "PYTENSOR_FLAGS": "mode=FAST_COMPILE,floatX=float32"}
    first = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr and (run / "checkpoints" / "epoch-00001-step-00000000").is_dir()


# ----- rule 9: messages say the right thing -------------------------------------------------------------

def test_the_first_progress_update_does_not_count_the_compile(monkeypatch):
    """A 20 s first step (the compile) then 0.01 s steps: the rate shown is that of the later steps."""
    import io

    import tqdm.std

    import symtrain.train.progress as progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])  # tqdm's own clock (its s/step and ETA)

    class Stream:
        batch_size, wait_seconds = 10, 0.0

    class Trainer:
        epochs, steps_per_epoch, global_step, loss_key, best, stream = 1, 100, 0, "loss", None, Stream()

    shown = []
    bar = progress.ProgressBar(interval=0.0, file=io.StringIO())
    t = Trainer()
    bar.on_fit_begin(t)
    monkeypatch.setattr(bar.bar, "set_postfix", lambda post, refresh=True: shown.append(dict(post)))
    for seconds in [20.0] + [0.01] * 10:
        clock[0] += seconds
        t.global_step += 1
        bar.on_step_end(t, t.global_step - 1, {"loss": 1.0})
    rate = bar.bar.format_dict["rate"] or bar.bar.format_dict["n"] / bar.bar.format_dict["elapsed"]
    bar.on_fit_end(t, None)
    assert 90 < rate <= 100  # tqdm's steps/s: 100 after the compile, not 11 steps / 20.1 s
    assert "rows/s" not in shown[0]  # after the compiling step alone there is no rate yet
    assert shown[-2]["rows/s"] == "1,000"  # 10 rows per 0.01 s, the 20 s compile excluded
