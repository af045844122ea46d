"""The out-of-core rewrite (``symtrain migrate --out-of-core``): done where safe, reported elsewhere."""

from __future__ import annotations

import difflib

import numpy as np
import pytest

from symtrain.legacy import StreamedFunction
from symtrain.migrate.out_of_core import out_of_core_source

THEANO_SCRIPT = """import numpy
import theano
import theano.tensor as T


def load(path):
    return numpy.load(path, mmap_mode="r")


def shared_dataset(data_xy, borrow=True):
    data_x, data_y = data_xy
    shared_x = theano.shared(numpy.asarray(data_x, dtype=theano.config.floatX), borrow=borrow)
    shared_y = theano.shared(numpy.asarray(data_y, dtype=theano.config.floatX), borrow=borrow)
    return shared_x, T.cast(shared_y, "int32")


W = theano.shared(numpy.zeros((3, 2), dtype="float32"), name="W")
train_set_x, train_set_y = shared_dataset((load("x.npy"), load("y.npy")))
index = T.lscalar()
x = T.matrix("x")
f = theano.function([index], T.dot(x, W).sum(), givens={x: train_set_x[index * 10:(index + 1) * 10]})
"""


def changed_lines(old: str, new: str) -> list[str]:
    return [line for line in difflib.ndiff(old.splitlines(), new.splitlines()) if line[:2] in ("- ", "+ ")]


def test_shared_dataset_and_function_calls_are_rewritten():
    new, findings = out_of_core_source(THEANO_SCRIPT, "s.py")
    diff = changed_lines(THEANO_SCRIPT, new)
    assert "+ import symtrain" in diff
    assert (
        "+     shared_x = symtrain.shared(numpy.asarray(data_x, dtype=theano.config.floatX), borrow=borrow)"
        in diff
    )
    assert (
        "+     shared_y = symtrain.shared(numpy.asarray(data_y, dtype=theano.config.floatX), borrow=borrow)"
        in diff
    )
    assert any(line.startswith("+ f = symtrain.function([index]") for line in diff)
    assert len([d for d in diff if d.startswith("- ")]) == 3  # the parameter W keeps theano.shared
    assert 'W = theano.shared(numpy.zeros((3, 2), dtype="float32"), name="W")' in new
    assert [(f.line, f.kind) for f in findings] == [(10, "changed")] and "now streams" in findings[0].message


@pytest.mark.parametrize(
    "edit, reason",
    [
        (("f = theano.function", "train_set_x.set_value(load('x.npy'))\nf = theano.function"), "set_value"),
        (
            ("f = theano.function", "n = train_set_x.get_value().shape[0]\nf = theano.function"),
            "get_value() without borrow=True",
        ),
        (
            ("givens={x: train_set_x[index * 10:(index + 1) * 10]}", "givens={x: train_set_x}"),
            "givens use train_set_x whole",
        ),
        (
            (
                "f = theano.function([index], T.dot(x, W).sum(),",
                "f = theano.function([index], T.dot(x, W).sum(), updates=[(train_set_x, train_set_x * 2)],",
            ),
            "updates to train_set_x",
        ),
    ],
)
def test_risky_uses_of_the_data_prevent_the_rewrite(edit, reason):
    source = THEANO_SCRIPT.replace(*edit)
    assert source != THEANO_SCRIPT
    new, findings = out_of_core_source(source, "s.py")
    assert new == source
    assert any(reason in f.message and "not rewritten" in f.message for f in findings), findings


@pytest.mark.parametrize(
    "edit, reason",
    [
        (
            ("borrow=borrow)\n    shared_y", "borrow=borrow, strict=True)\n    shared_y"),
            "other than borrow=/name=",
        ),
        (
            ('return shared_x, T.cast(shared_y, "int32")', "return shared_x, shared_y, 3"),
            "returns something other",
        ),
        (
            ("numpy.asarray(data_x, dtype", "numpy.asarray(numpy.zeros(3), dtype"),
            "not one of the unpacked data arrays",
        ),
    ],
)
def test_unusual_shared_dataset_is_reported_not_rewritten(edit, reason):
    source = THEANO_SCRIPT.replace(*edit)
    assert source != THEANO_SCRIPT
    new, findings = out_of_core_source(source, "s.py")
    assert new == source
    assert len(findings) == 1 and findings[0].line == 10 and reason in findings[0].message


def test_without_memmap_loads_it_only_reports():
    source = THEANO_SCRIPT.replace('mmap_mode="r"', "allow_pickle=False")
    new, findings = out_of_core_source(source, "s.py")
    assert new == source
    assert len(findings) == 1 and "mmap_mode='r'" in findings[0].message


def test_modules_without_shared_dataset_are_untouched():
    source = "import pytensor\nW = pytensor.shared(1.0)\nf = pytensor.function([], W)\n"
    assert out_of_core_source(source) == (source, [])


def test_the_rewritten_pytensor_script_runs_and_matches(tmp_path):
    """After the ordinary migration (theano -> pytensor) and this rewrite, the script runs streamed."""
    source = (
        THEANO_SCRIPT.replace("import theano.tensor as T", "import pytensor.tensor as T")
        .replace("import theano", "import pytensor")
        .replace("theano.", "pytensor.")
    )
    new, _ = out_of_core_source(source)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((50, 3)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 50).astype(np.float32))
    results = []
    for text in (source, new):
        namespace: dict = {}
        exec(
            compile(
                text.replace('load("x.npy")', f'load(r"{tmp_path / "x.npy"}")').replace(
                    'load("y.npy")', f'load(r"{tmp_path / "y.npy"}")'
                ),
                "<script>",
                "exec",
            ),
            namespace,
        )
        namespace["W"].set_value(np.ones((3, 2), dtype=np.float32))
        results.append([namespace["f"](i) for i in range(5)])
        if isinstance(namespace["f"], StreamedFunction):
            namespace["f"].close()
    assert "symtrain.shared" in new and isinstance(namespace["f"], StreamedFunction)
    assert np.array_equal(results[0], results[1])


DIRECT = """import numpy as np
import theano
import theano.tensor as T
mm = np.load(X_PATH, mmap_mode="r")
X = theano.shared(mm, borrow=True)
Y = theano.shared(np.memmap(Y_PATH, dtype="float32", mode="r", shape=(40,)))
G = theano.shared(lambda batch_num: DATA[batch_num * 10:(batch_num + 1) * 10] if batch_num < 4 else None)
W = theano.shared(np.ones(3, dtype="float32"))
i = T.lscalar()
f = theano.function([i], [T.dot(X[i * 10:(i + 1) * 10], W).sum(), Y[i * 10:(i + 1) * 10].sum(),
                          G[i * 10:(i + 1) * 10].sum()])
"""


def test_direct_memmap_and_per_batch_generator_stream_and_match(tmp_path):
    """shared(memmap) and shared(lambda batch_num: ...) become symtrain.shared (the lambda adapted by
    batch_chunks), function becomes symtrain.function, and the numbers are those of the in-memory data."""
    from symtrain.legacy import StreamedSharedVariable
    from symtrain.migrate import migrate_source

    data = np.arange(120, dtype=np.float32).reshape(40, 3)
    np.save(tmp_path / "x.npy", data)
    y = np.memmap(tmp_path / "y.dat", dtype="float32", mode="w+", shape=(40,))
    y[:] = np.arange(40)
    y.flush()
    result = migrate_source(DIRECT, "d.py", out_of_core=True)
    new = result.new
    assert "X = symtrain.shared(mm, borrow=True)" in new and "Y = symtrain.shared(np.memmap(" in new
    assert "G = symtrain.shared(symtrain.migrate.runtime.batch_chunks(lambda batch_num:" in new
    assert "W = pytensor.shared(np.ones(3" in new and "f = symtrain.function([i]" in new
    changed = sorted(f.line for f in result.findings if f.kind == "changed" and "out-of-core" in f.message)
    assert changed == [5, 6, 7]
    assert migrate_source(new, "d.py", out_of_core=True).new == new  # idempotent
    ns = {"X_PATH": str(tmp_path / "x.npy"), "Y_PATH": str(tmp_path / "y.dat"), "DATA": data}
    exec(compile(new, "d.py", "exec"), ns)  # noqa: S102 - the point of the test
    assert all(isinstance(ns[k], StreamedSharedVariable) for k in "XYG")
    for k in (0, 3, 1):
        out = ns["f"](k)
        rows = slice(k * 10, (k + 1) * 10)
        np.testing.assert_allclose(out, [data[rows].sum(), np.arange(40)[rows].sum(), data[rows].sum()])
    ns["f"].close()


@pytest.mark.parametrize(
    "edit, line, reason",
    [
        (("f = theano.function", "X.set_value(np.zeros((40, 3)))\nf = theano.function"), 10, "set_value"),
        (("X = theano.shared(mm, borrow=True)", "X = theano.shared(mm, strict=True)"), 5, "strict"),
        (
            (
                "lambda batch_num: DATA[batch_num * 10:(batch_num + 1) * 10] if batch_num < 4 else None",
                "lambda a, b: DATA",
            ),
            7,
            "symtrain.shared(lambda: (batch(k) for k in range(n_batches))",
        ),
    ],
)
def test_direct_streams_refused_are_reported(edit, line, reason):
    from symtrain.migrate import migrate_source

    source = DIRECT.replace(*edit)
    assert source != DIRECT
    result = migrate_source(source, "d.py", out_of_core=True)
    refused = [f for f in result.findings if f.kind == "review" and reason in f.message]
    assert [f.line for f in refused] == [line], result.findings
    assert "not rewritten" in refused[0].message


def test_generator_call_restarts_each_epoch_and_asarray_memmap_streams(tmp_path):
    from symtrain.legacy import StreamedSharedVariable
    from symtrain.migrate import migrate_source

    data = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "x.npy", data)
    source = (
        "import numpy\nimport theano\nimport theano.tensor as T\n"
        "def rows(d, n):\n    for k in range(n):\n        yield d[k * 5:(k + 1) * 5]\n"
        "def load(p):\n    mm = numpy.load(p, mmap_mode='r')\n"
        "    return theano.shared(numpy.asarray(mm, dtype='float32'), borrow=True)\n"
        "S = theano.shared(rows(DATA, 4))\nM = load(PATH)\ni = T.lscalar()\n"
        "f = theano.function([i], [S[i * 5:(i + 1) * 5].sum(), M[i * 5:(i + 1) * 5].sum()])\n"
    )
    result = migrate_source(source, "g.py", out_of_core=True)
    assert "S = symtrain.shared(lambda: rows(DATA, 4))" in result.new
    assert "    return symtrain.shared(numpy.asarray(mm, dtype='float32'), borrow=True)" in result.new
    assert sorted(f.line for f in result.findings if f.kind == "changed") == [9, 10]
    ns = {"DATA": data, "PATH": str(tmp_path / "x.npy")}
    exec(compile(result.new, "g.py", "exec"), ns)  # noqa: S102 - the point of the test
    assert isinstance(ns["S"], StreamedSharedVariable) and isinstance(ns["M"], StreamedSharedVariable)
    for k in (0, 1, 2, 3, 0, 1):  # a second epoch restarts the generator
        np.testing.assert_allclose(ns["f"](k), [data[k * 5 : (k + 1) * 5].sum()] * 2)
    ns["f"].close()
