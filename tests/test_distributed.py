"""Data-parallel training over MPI: N ranks with per-rank batch B equal one process with batch N*B.

Each test starts ``mpiexec`` (the MPICH wheel's) as a subprocess; the ranks run FAST_COMPILE (the flags of
tests/conftest.py are inherited) on tiny models, several scenarios per launch. 101 rows in global batches of
12 leave a last batch of 5 rows, so with 2 or 3 ranks some rank has no valid row in it. Elastic resume,
SIGINT, a SIGKILLed rank and a raising rank are in tests/test_distributed_faults.py.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install symtrain[mpi] (mpi4py + mpich)")

from symtrain.distributed.launch import find_mpiexec  # noqa: E402

GLOBAL_BATCH = 12

PROG = textwrap.dedent('''
    """Train the scenarios on this process (one rank of an MPI job, or alone) and pickle the results."""
    import pickle
    import sys

    import numpy as np
    import symtrain as st
    from symtrain.backend import config, shared

    MPI_JOB = "PMI_SIZE" in __import__("os").environ
    SCENARIOS = [("sgd", 1, False), ("adam", 1, False), ("sgd", 2, False), ("adam", 3, True)]


    def model(train, valid, opt, accumulate):
        """Softmax regression with a masked-mean loss (mean over valid rows), a schedule, clipping."""
        W = shared(np.random.default_rng(0).standard_normal((8, 3)).astype(config.floatX) * 0.3, name="W")
        b = shared(np.zeros(3, config.floatX), name="b")
        p = st.nnet.softmax(train.batch("x") @ W + b)
        nll = st.nnet.categorical_crossentropy(p, train.batch("y"))
        cost = (nll * train.batch_mask()).sum() / train.batch_valid().astype(config.floatX)
        hit = st.backend.pt.eq(p.argmax(axis=1), train.batch("y")).astype(config.floatX)
        if opt == "sgd":
            rule = st.optim.sgd(st.optim.step_decay(0.2, 0.5, every=4, per="step"))
        else:
            rule = st.optim.adam(0.05, max_norm=0.3)  # clipping by the norm of the averaged gradient
        step = st.compile_step(cost, [W, b], train, rule, outputs={"acc": hit}, accumulate=accumulate)
        vp = st.nnet.softmax(valid.batch("x") @ W + b)
        ev = st.compile_eval({"loss": st.nnet.categorical_crossentropy(vp, valid.batch("y")),
                              "acc": st.backend.pt.eq(vp.argmax(axis=1), valid.batch("y"))}, valid)
        return step, ev, [W, b]


    def run(data, batch, distributed):
        out = {}
        for opt, accumulate, drop_last in SCENARIOS:
            with st.ChunkStream(data, batch_size=batch, chunk_rows=40, seed=3,
                                drop_last=drop_last) as train, \\
                    st.ChunkStream(data, batch_size=batch, chunk_rows=40, policy="sequential",
                                   drop_last=False, name="valid") as valid:
                step, ev, params = model(train, valid, opt, accumulate)
                extra = {"distributed": True, "check_sync_every": 2} if distributed else {}
                h = st.fit(step, train, 2, validation=ev, progress=False, **extra)
                if distributed and MPI_JOB:  # only the gradient and update functions were compiled
                    assert step._compiled is None, "the unused one-process step was compiled"
                out[(opt, accumulate, drop_last)] = {"params": [p.get_value() for p in params],
                                                     "epochs": h.epochs, "validations": h.validations}
        return out


    if __name__ == "__main__":
        from mpi4py import MPI

        result = run(sys.argv[1], int(sys.argv[2]), True)
        if MPI.COMM_WORLD.Get_rank() == 0:
            with open(sys.argv[3], "wb") as f:
                pickle.dump(result, f)
''')


def mpirun(ranks: int, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python ARGS`` (environment inherited), output captured."""
    cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The dataset, the program, and the one-process reference with batch 12."""
    from symtrain.storage import write_dataset

    tmp = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((101, 8)).astype(np.float32)
    y = (np.abs(x[:, 0]) * 2).astype(np.int64).clip(0, 2)
    data = write_dataset(tmp / "data", {"x": x, "y": y})
    prog = tmp / "prog.py"
    prog.write_text(PROG)
    spec = importlib.util.spec_from_file_location("dist_prog", prog)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tmp, data, prog, module.run(str(data), GLOBAL_BATCH, False)


def _assert_equivalent(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, w in want.items():
        g = got[key]
        for a, b in zip(g["params"], w["params"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(key))
        assert len(g["epochs"]) == len(w["epochs"]) and len(g["validations"]) == len(w["validations"])
        for ga, wa in zip(g["epochs"] + g["validations"], w["epochs"] + w["validations"]):
            assert ga["step"] == wa["step"], key
            for name in ("loss", "acc", "val_loss", "val_acc", "rows", "val_rows"):
                if name in wa:
                    assert ga[name] == pytest.approx(wa[name], rel=1e-5, abs=1e-6), (key, name)


def _equivalence(setup, ranks: int) -> None:
    tmp, data, prog, reference = setup
    out = tmp / f"ranks{ranks}.pkl"
    res = mpirun(ranks, [str(prog), str(data), str(GLOBAL_BATCH // ranks), str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    with open(out, "rb") as f:
        _assert_equivalent(pickle.load(f), reference)


@pytest.mark.backend
def test_two_ranks_equal_one_process_with_the_global_batch(setup):
    """sgd + schedule, adam + clipping, accumulation 2 and 3, partial last batch kept or dropped,
    validation."""
    _equivalence(setup, 2)


def test_three_ranks_equal_one_process_with_the_global_batch(setup):
    """Oversubscribed on 2 cores; the 5-row last batch leaves rank 2 without a valid row."""
    _equivalence(setup, 3)


def test_one_rank_is_exactly_the_one_process_run(setup, monkeypatch):
    """``distributed=True`` on a single rank (no mpiexec) takes the one-process path: identical bits."""
    tmp, data, prog, reference = setup
    spec = importlib.util.spec_from_file_location("dist_prog1", prog)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    got = module.run(str(data), GLOBAL_BATCH, True)
    for key, w in reference.items():
        for a, b in zip(got[key]["params"], w["params"]):
            assert a.tobytes() == b.tobytes(), key
        assert got[key]["epochs"][-1]["loss"] == w["epochs"][-1]["loss"]


def test_missing_mpi4py_is_a_clear_error(monkeypatch):
    from symtrain.distributed.run import resolve_comm
    from symtrain.errors import ConfigError

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ConfigError, match=r"pip install symtrain\[mpi\]"):
        resolve_comm(True, None)
    with pytest.raises(ConfigError, match="distributed must be True or False"):
        resolve_comm("yes", None)


def test_launcher_helpers():
    from symtrain.distributed.launch import without_ranks

    assert without_ranks(["-q", "train", "m.py", "--ranks", "2", "--data", "d", "--ranks=3"]) == \
        ["-q", "train", "m.py", "--data", "d"]
    assert os.access(find_mpiexec(), os.X_OK)


def test_resume_on_another_rank_count_keeps_the_global_batch(tmp_path, monkeypatch):
    """The stored per-rank batch and rank count give the global batch; a resume derives or checks it."""
    from symtrain.errors import ConfigError
    from symtrain.train import rundir
    from symtrain.train.commands import resolve_run

    rundir.save_options(tmp_path, {"script": "m.py", "data": "d", "valid": None, "epochs": 3,
                                   "stream": {"batch_size": 6, "chunk_rows": 40},
                                   "checkpoint_every_steps": None, "ranks": 2})

    def batch(**stream) -> int:
        return resolve_run(None, None, tmp_path, resume=True, stream_options=stream)["stream"]["batch_size"]

    monkeypatch.setenv("PMI_SIZE", "3")
    assert batch() == 4 and batch(batch_size=4) == 4
    with pytest.raises(ConfigError, match="global batch of 18, the run's is 12"):
        batch(batch_size=6)
    monkeypatch.setenv("PMI_SIZE", "5")
    with pytest.raises(ConfigError, match="does not divide among 5 ranks"):
        batch()
    monkeypatch.setenv("PMI_SIZE", "2")
    assert batch() == 6
    monkeypatch.delenv("PMI_SIZE")
    assert batch() == 12


def test_each_rank_gets_its_own_deterministic_generator():
    """Identical generators would give every rank the same dropout masks for different rows."""
    from symtrain.distributed.trainer import rank_generator

    g = np.random.default_rng(5)
    assert rank_generator(g, 0) is g
    draws = [rank_generator(g, r).random(4) for r in (1, 2, 1)]
    assert not np.array_equal(draws[0], draws[1]) and np.array_equal(draws[0], draws[2])
    assert np.array_equal(g.random(4), np.random.default_rng(5).random(4))  # rank 0's stream is untouched


def test_compile_step_in_an_mpi_job_compiles_on_first_use(monkeypatch):
    """A rank of an MPI job defers compiling the one-process step (the distributed step compiles its own
    gradient and update); used on its own it compiles on first use and behaves as an eager step."""
    import symtrain as st
    from symtrain.backend import config, shared

    rng = np.random.default_rng(1)
    data = {"x": rng.standard_normal((20, 3)).astype(np.float32),
            "y": rng.standard_normal(20).astype(np.float32)}
    results = []
    for env in ("1", "2"):
        monkeypatch.setenv("PMI_SIZE", env)
        with st.ChunkStream(data, batch_size=5, chunk_rows=10, seed=0) as s:
            w = shared(np.ones(3, config.floatX), name="w")
            cost = ((s.batch("x") @ w - s.batch("y")) ** 2).mean()
            step = st.compile_step(cost, [w], s, st.optim.sgd(0.1), accumulate=2)
            assert (step._compiled is None) == (env == "2")
            names = sorted(step.state_variables())
            st.fit(step, s, 1, progress=False, handle_signals=False)
            results.append((names, w.get_value()))
    assert results[0][0] == results[1][0]
    assert results[0][1].tobytes() == results[1][1].tobytes()
