"""The out-of-core rewrite (future ``symtrain migrate --out-of-core``): done where safe, reported elsewhere."""

from __future__ import annotations

import difflib

import numpy as np
import pytest

from symtrain.legacy import StreamedFunction
from symtrain.migrate.out_of_core import out_of_core_source

THEANO_SCRIPT = '''import numpy
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
'''


def changed_lines(old: str, new: str) -> list[str]:
    return [line for line in difflib.ndiff(old.splitlines(), new.splitlines()) if line[:2] in ("- ", "+ ")]


def test_shared_dataset_and_function_calls_are_rewritten():
    new, findings = out_of_core_source(THEANO_SCRIPT, "s.py")
    diff = changed_lines(THEANO_SCRIPT, new)
    assert "+ import symtrain" in diff
    assert "+     shared_x = symtrain.shared(numpy.asarray(data_x, dtype=theano.config.floatX), borrow=borrow)" in diff
    assert "+     shared_y = symtrain.shared(numpy.asarray(data_y, dtype=theano.config.floatX), borrow=borrow)" in diff
    assert any(line.startswith("+ f = symtrain.function([index]") for line in diff)
    assert len([d for d in diff if d.startswith("- ")]) == 3  # the parameter W keeps theano.shared
    assert 'W = theano.shared(numpy.zeros((3, 2), dtype="float32"), name="W")' in new
    assert [(f.line, f.kind) for f in findings] == [(10, "review")] and "now streams" in findings[0].message


@pytest.mark.parametrize("edit, reason", [
    (("f = theano.function", "train_set_x.set_value(load('x.npy'))\nf = theano.function"), "set_value"),
    (("f = theano.function", "n = train_set_x.get_value().shape[0]\nf = theano.function"),
     "get_value() without borrow=True"),
    (("givens={x: train_set_x[index * 10:(index + 1) * 10]}", "givens={x: train_set_x}"), "givens use train_set_x whole"),
    (("f = theano.function([index], T.dot(x, W).sum(),", "f = theano.function([index], T.dot(x, W).sum(), "
      "updates=[(train_set_x, train_set_x * 2)],"), "updates to train_set_x"),
])
def test_risky_uses_of_the_data_prevent_the_rewrite(edit, reason):
    source = THEANO_SCRIPT.replace(*edit)
    assert source != THEANO_SCRIPT
    new, findings = out_of_core_source(source, "s.py")
    assert new == source
    assert any(reason in f.message and "not rewritten" in f.message for f in findings), findings


@pytest.mark.parametrize("edit, reason", [
    (("borrow=borrow)\n    shared_y", "borrow=borrow, strict=True)\n    shared_y"), "other than borrow=/name="),
    (("return shared_x, T.cast(shared_y, \"int32\")", "return shared_x, shared_y, 3"), "returns something other"),
    (("numpy.asarray(data_x, dtype", "numpy.asarray(numpy.zeros(3), dtype"), "not one of the unpacked data arrays"),
])
def test_unusual_shared_dataset_is_reported_not_rewritten(edit, reason):
    source = THEANO_SCRIPT.replace(*edit)
    assert source != THEANO_SCRIPT
    new, findings = out_of_core_source(source, "s.py")
    assert new == source
    assert len(findings) == 1 and findings[0].line == 10 and reason in findings[0].message


def test_without_memmap_loads_it_only_reports():
    source = THEANO_SCRIPT.replace('mmap_mode="r"', 'allow_pickle=False')
    new, findings = out_of_core_source(source, "s.py")
    assert new == source
    assert len(findings) == 1 and "mmap_mode='r'" in findings[0].message


def test_modules_without_shared_dataset_are_untouched():
    source = "import pytensor\nW = pytensor.shared(1.0)\nf = pytensor.function([], W)\n"
    assert out_of_core_source(source) == (source, [])


def test_the_rewritten_pytensor_script_runs_and_matches(tmp_path):
    """After the ordinary migration (theano -> pytensor) and this rewrite, the script runs streamed."""
    source = THEANO_SCRIPT.replace("import theano.tensor as T", "import pytensor.tensor as T") \
        .replace("import theano", "import pytensor").replace("theano.", "pytensor.")
    new, _ = out_of_core_source(source)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((50, 3)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 50).astype(np.float32))
    results = []
    for text in (source, new):
        namespace: dict = {}
        exec(compile(text.replace('load("x.npy")', f'load(r"{tmp_path / "x.npy"}")')
                     .replace('load("y.npy")', f'load(r"{tmp_path / "y.npy"}")'), "<script>", "exec"), namespace)
        namespace["W"].set_value(np.ones((3, 2), dtype=np.float32))
        results.append([namespace["f"](i) for i in range(5)])
        if isinstance(namespace["f"], StreamedFunction):
            namespace["f"].close()
    assert "symtrain.shared" in new and isinstance(namespace["f"], StreamedFunction)
    assert np.array_equal(results[0], results[1])
