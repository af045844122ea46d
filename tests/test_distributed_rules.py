"""Issue 12's rules on cases the equivalence tests do not reach, on 2 ranks against one process.

One mpiexec launch runs every scenario (FAST_COMPILE, tiny model) and gathers each rank's results:
a dataset smaller than one global batch (rank 1 gets no row), early stopping at a validation step,
on_nonfinite="skip" with a NaN row that only one rank reads, step checkpoints with restore_best and a
validation set that does not divide among the ranks; then on_nonfinite="raise" (every rank stops with
the error, no hang). A second launch gives rank 1 another dataset (one clear error on every rank).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install symtrain[mpi] (mpi4py + mpich)")

from symtrain.distributed.launch import find_mpiexec  # noqa: E402

RANKS, BATCH = 2, 4  # per-rank batch; the one-process reference uses RANKS * BATCH

PROG = textwrap.dedent('''
    """Scenarios on this process (a rank of an MPI job, or alone); results pickled per rank."""
    import os
    import pickle
    import sys

    import numpy as np
    import symtrain as st
    from symtrain.backend import config, shared
    from symtrain.storage import write_dataset


    def data(tmp, rows, nan_row=None, seed=0, mine=False):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((rows, 3)).astype(np.float32)
        if nan_row is not None:
            x[nan_row, 1] = np.nan
        y = (x[:, 0] - 0.5 * x[:, 2]).astype(np.float32)
        path = os.path.join(tmp, f"d{rows}_{nan_row}_{seed}")
        if not os.path.exists(path) and (mine or os.environ.get("PMI_RANK", "0") == "0"):
            write_dataset(path, {"x": x, "y": y})
        return path


    def fit_one(train_path, valid_path, batch, extra, **kw):
        with st.ChunkStream(train_path, batch_size=batch, chunk_rows=16, seed=1,
                            drop_last=False) as train, \\
                st.ChunkStream(valid_path, batch_size=batch, chunk_rows=16, policy="sequential",
                               drop_last=False, name="valid") as valid:
            w = shared(np.zeros(3, config.floatX), name="w")
            err = train.batch("x") @ w - train.batch("y")
            cost = (err ** 2 * train.batch_mask()).sum() / train.batch_valid().astype(config.floatX)
            step = st.compile_step(cost, [w], train, st.optim.sgd(0.1))
            ve = valid.batch("x") @ w - valid.batch("y")
            ev = st.compile_eval({"loss": ve ** 2}, valid)
            h = st.fit(step, train, kw.pop("epochs", 3), validation=ev, progress=False, handle_signals=False,
                       **extra, **kw)
            return {"w": w.get_value(), "epochs": h.epochs, "validations": h.validations,
                    "stop": h.stop_reason, "skipped": [d["global_step"] for d in h.skipped_steps]}


    def scenarios(tmp, batch, extra):
        small, big, nan, valid = data(tmp, 7), data(tmp, 40), data(tmp, 40, nan_row=9), data(tmp, 13, seed=2)
        if extra:
            from mpi4py import MPI
            MPI.COMM_WORLD.Barrier()  # rank 0 wrote the datasets
        out = {"tiny": fit_one(small, valid, batch, extra),
               "early": fit_one(big, valid, batch, extra, epochs=6, validate_every_steps=2,
                                early_stopping=st.EarlyStopping(patience=7, patience_increase=1.0))}
        out["skip"] = fit_one(nan, valid, batch, extra, on_nonfinite="skip")
        run = os.path.join(tmp, "run_mpi" if extra else "run_one")
        out["ckpt"] = fit_one(big, valid, batch, extra, run_dir=run, checkpoint_every_steps=2,
                              restore_best=True, checkpoint_every_epochs=None)
        out["ckpt"]["files"] = sorted(os.listdir(os.path.join(run, "checkpoints"))) if (
            os.environ.get("PMI_RANK", "0") == "0") else None
        return out


    if __name__ == "__main__":
        tmp, batch, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
        if mode == "mismatch":  # rank 1 reads another dataset
            path = data(tmp, 40, seed=10 + rank, mine=True)
            MPI.COMM_WORLD.Barrier()
            fit_one(path, path, batch, {"distributed": True})
            sys.exit(0)
        got = MPI.COMM_WORLD.gather(scenarios(tmp, batch, {"distributed": True, "check_sync_every": 1}))
        if rank == 0:
            with open(os.path.join(tmp, "ranks.pkl"), "wb") as f:
                pickle.dump(got, f)
        fit_one(data(tmp, 40, nan_row=9), data(tmp, 13, seed=2), batch, {"distributed": True},
                on_nonfinite="raise")
''')


def mpirun(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [find_mpiexec(), "-n", str(RANKS), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rules")
    path = tmp / "prog.py"
    path.write_text(PROG)
    spec = importlib.util.spec_from_file_location("dist_rules_prog", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tmp, path, module


def test_edge_rules_on_two_ranks_match_one_process(prog):
    tmp, path, module = prog
    res = mpirun([str(path), str(tmp), str(BATCH), "main"])
    # the last scenario (on_nonfinite="raise") ends the job on every rank with the error, without a hang
    assert res.returncode not in (0, 130), res.stderr[-3000:]
    assert "NonFiniteLossError" in res.stderr, res.stderr[-3000:]
    with open(tmp / "ranks.pkl", "rb") as f:
        ranks = pickle.load(f)
    want = module.scenarios(str(tmp), RANKS * BATCH, {})
    for name, ref in want.items():
        for rank, got in enumerate(ranks):
            g = got[name]
            np.testing.assert_allclose(g["w"], ref["w"], rtol=1e-5, atol=1e-6, err_msg=f"{name} rank {rank}")
            assert [e["step"] for e in g["epochs"]] == [e["step"] for e in ref["epochs"]], (name, rank)
            assert [v["step"] for v in g["validations"]] == [v["step"] for v in ref["validations"]], name
            for gv, rv in zip(g["epochs"] + g["validations"], ref["epochs"] + ref["validations"]):
                for key in ("loss", "val_loss", "rows", "val_rows", "skipped"):
                    if key in rv:
                        assert gv[key] == pytest.approx(rv[key], rel=1e-5, abs=1e-6), (name, rank, key)
            assert (g["stop"], g["skipped"]) == (ref["stop"], ref["skipped"]), (name, rank)
    assert len(want["tiny"]["epochs"]) == 3 and want["early"]["stop"] == "early_stopping"  # cases happened
    assert want["tiny"]["epochs"][0]["val_rows"] == 13  # 8 + 5: shares 4+4, then 4+1
    assert len(want["skip"]["skipped"]) == 3 and want["skip"]["epochs"][-1]["step"] > 3
    assert ranks[0]["ckpt"]["files"] == want["ckpt"]["files"] and "best" in want["ckpt"]["files"]
    logs = [[json.loads(line) for line in (tmp / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("run_mpi", "run_one")]  # written by rank 0 alone: one record per event
    assert [(r.get("kind"), r.get("step"), r.get("rows")) for r in logs[0]] == \
        [(r.get("kind"), r.get("step"), r.get("rows")) for r in logs[1]]


def test_ranks_reading_different_data_stop_with_one_clear_error(prog):
    tmp, path, module = prog
    res = mpirun([str(path), str(tmp), str(BATCH), "mismatch"], timeout=120)
    assert res.returncode not in (0, 130)
    assert "the ranks do not stream the same data" in res.stderr, res.stderr[-3000:]
    assert "rank 1: training dataset fingerprint" in res.stderr, res.stderr[-3000:]


def test_rank_count_and_missing_mpiexec_are_clear_errors(monkeypatch, tmp_path):
    from symtrain.distributed import launch
    from symtrain.errors import ConfigError

    for bad in (0, -2):
        with pytest.raises(ConfigError, match="--ranks must be an integer >= 1"):
            launch.launch(bad, ["train"])
    with pytest.raises(ConfigError, match="--ranks 100000 would start 100000 processes"):
        launch.launch(100000, ["train"])
    monkeypatch.setattr(launch.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(launch.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"needs mpiexec, found neither .*pip install symtrain\[mpi\]"):
        launch.launch(2, ["train"])


def test_a_killed_launchers_private_dir_is_removed_by_the_next_launch(tmp_path, monkeypatch):
    from symtrain.distributed import launch

    monkeypatch.setattr(launch.tempfile, "gettempdir", lambda: str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, pid in (("dead", dead.pid), ("alive", os.getppid())):
        folder = tmp_path / (launch.DIR_PREFIX + name)
        folder.mkdir()
        (folder / launch.LAUNCHER_FILE).write_text(str(pid))
        (folder / "stdout.log").write_text("output")
    (tmp_path / (launch.DIR_PREFIX + "other")).mkdir()  # no launcher.pid: not ours to judge
    assert launch.sweep_stale_dirs() == [tmp_path / (launch.DIR_PREFIX + "dead")]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [launch.DIR_PREFIX + "alive", launch.DIR_PREFIX + "other"]
