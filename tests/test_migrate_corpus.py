"""The legacy corpus (tests/legacy/corpus): migrate copies with ``symtrain migrate --write``, then run every
script on a tiny mnist.pkl.gz-format pickle of the digits and check that it runs and learns.

The scripts run in two subprocesses at once (one graph-library import each, several scripts per process
through runpy), so the whole module costs roughly one script's compile time per script plus two imports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# the migrate tool's dependencies are not in the Aesara venv (make test-aesara collects every module)
pytest.importorskip("libcst")
pytest.importorskip("fissix")

from legacy.mnist_like import write_mnist_pkl_gz  # noqa: E402

from symtrain.cli import main  # noqa: E402

CORPUS = Path(__file__).parent / "legacy" / "corpus"
EPOCHS = 4
GROUPS = [["logistic_sgd", "mlp", "dA", "aesara_mlp"], ["convolutional_mlp", "rbm", "aesara_logreg"]]
SUPERVISED = {"logistic_sgd", "mlp", "convolutional_mlp", "aesara_mlp", "aesara_logreg"}
RUNNER = """\
import runpy, sys, traceback
sys.path.insert(0, ".")
data, epochs = sys.argv[1], sys.argv[2]
for name in sys.argv[3:]:
    print("=== start " + name, flush=True)
    sys.argv = [name + ".py", data, epochs]
    try:
        runpy.run_path(name + ".py", run_name="__main__")
        print("=== ok " + name, flush=True)
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        print("=== failed " + name, flush=True)
"""


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """The corpus copied and migrated in place; the report text; the outputs of running every script."""
    root = tmp_path_factory.mktemp("corpus")
    work = root / "corpus"
    shutil.copytree(CORPUS, work)
    data = write_mnist_pkl_gz(root / "mnist.pkl.gz")
    (work / "_runner.py").write_text(RUNNER)
    report = root / "report.txt"
    with open(report, "w") as err:
        old_err = sys.stderr
        sys.stderr = err
        try:
            rc = main(["migrate", "--write", str(work)])
        finally:
            sys.stderr = old_err
    assert rc == 0
    env = dict(os.environ)
    env["PYTENSOR_FLAGS"] = "mode=FAST_COMPILE,floatX=float32,blas__ldflags="
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "ignore", "_runner.py", str(data), str(EPOCHS), *group],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for group in GROUPS
    ]
    outputs = {}
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        for block in re.split(r"^=== start ", out, flags=re.MULTILINE)[1:]:
            name, _, body = block.partition("\n")
            outputs[name.strip()] = body
    return {"work": work, "report": report.read_text(), "outputs": outputs}


def _series(text: str, label: str) -> list[float]:
    return [float(v) for v in re.findall(rf"{label} ([-\d.e+]+)", text)]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for g in GROUPS for n in g])
def test_script_runs_and_learns(migrated, name):
    out = migrated["outputs"].get(name, "")
    assert f"=== ok {name}" in out, out[-3000:]
    costs = _series(out, "train cost")
    assert len(costs) == EPOCHS, out[-3000:]
    assert costs[-1] < costs[0], costs
    if name in SUPERVISED:
        initial = _series(out, "initial validation error")
        errors = _series(out, "validation error")[len(initial) :]
        assert len(errors) == EPOCHS
        assert errors[-1] < initial[0] - 20.0, (initial, errors)  # chance is 90 %


@pytest.mark.slow
def test_identity_of_sigmoid_survives(migrated):
    assert "sigmoid layer scaled: True" in migrated["outputs"]["mlp"]


@pytest.mark.slow
def test_zip_walked_twice_survives(migrated):
    assert "updating 4 parameters (4 gradient norms)" in migrated["outputs"]["mlp"]


def test_migrated_corpus_is_idempotent(migrated, capsys):
    """A second run changes nothing: --check (which compares the rewrite with the file) exits 0."""
    assert main(["migrate", "--check", "--no-report", str(migrated["work"])]) == 0
    assert capsys.readouterr().out == ""


def test_original_corpus_needs_migration(migrated, capsys):
    assert (
        main(["migrate", "--check", "--no-report", str(CORPUS / "rbm.py"), str(CORPUS / "aesara_mlp.py")])
        == 1
    )
    listed = capsys.readouterr().out.splitlines()
    assert listed == [f"would rewrite {CORPUS / 'rbm.py'}", f"would rewrite {CORPUS / 'aesara_mlp.py'}"]
    rewritten = [line for line in migrated["report"].splitlines() if line.startswith("rewrote ")]
    assert len(rewritten) == len(list(CORPUS.glob("*.py")))


def test_backups_hold_the_originals(migrated):
    for original in CORPUS.glob("*.py"):
        assert (migrated["work"] / (original.name + ".bak")).read_text() == original.read_text()


def test_report_names_the_untranslatable(migrated):
    report = migrated["report"]
    gpu = [line for line in report.splitlines() if "gpu_kernels.py:" in line]
    untranslated = {int(line.split(":")[1]) for line in gpu if "[untranslated]" in line}
    # the sandbox.cuda imports, the GpuOp class, the C op, and the gpu_from_host/host_from_gpu calls
    assert {10, 11, 18, 38, 54} <= untranslated, gpu
    assert any("c_code" in line and ":38:" in line for line in gpu)
    removed = {int(line.split(":")[1]) for line in gpu if "[removed]" in line}
    assert removed == {13, 14, 15}
    # the learnable scripts have nothing untranslated
    assert not [
        line for line in report.splitlines() if "[untranslated]" in line and "gpu_kernels" not in line
    ]
