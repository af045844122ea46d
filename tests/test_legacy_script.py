"""A classic (deeplearning.net-tutorial style) script goes out of core by changing only its
``shared``/``function`` lines, and trains to parameters equal to the bit to the in-memory run."""

from __future__ import annotations

import difflib

import numpy as np
import pytest

# The tutorial script, as a user has it: load_data -> shared_dataset (T.cast of y) -> givens over a global
# minibatch index -> train / validate / test functions. ORDER "random" visits training batches in a
# seeded random order (to check random access), "sequential" is the classic loop.
SCRIPT = '''
import numpy
import pytensor
import pytensor.tensor as T
import symtrain


def load_data(paths):
    return [(numpy.load(px, mmap_mode="r"), numpy.load(py, mmap_mode="r")) for px, py in paths]


def shared_dataset(data_xy, borrow=True):
    data_x, data_y = data_xy
    shared_x = pytensor.shared(numpy.asarray(data_x, dtype=pytensor.config.floatX), borrow=borrow)
    shared_y = pytensor.shared(numpy.asarray(data_y, dtype=pytensor.config.floatX), borrow=borrow)
    return shared_x, T.cast(shared_y, "int32")


class LogisticRegression:
    def __init__(self, input, n_in, n_out):
        self.W = pytensor.shared(numpy.zeros((n_in, n_out), dtype=pytensor.config.floatX), name="W")
        self.b = pytensor.shared(numpy.zeros((n_out,), dtype=pytensor.config.floatX), name="b")
        self.p_y_given_x = T.special.softmax(T.dot(input, self.W) + self.b, axis=1)
        self.y_pred = T.argmax(self.p_y_given_x, axis=1)
        self.params = [self.W, self.b]

    def negative_log_likelihood(self, y):
        return -T.mean(T.log(self.p_y_given_x)[T.arange(y.shape[0]), y])

    def errors(self, y):
        return T.mean(T.neq(self.y_pred, y))


class HiddenLayer:
    def __init__(self, rng, input, n_in, n_out):
        bound = numpy.sqrt(6.0 / (n_in + n_out))
        W = numpy.asarray(rng.uniform(low=-bound, high=bound, size=(n_in, n_out)), dtype=pytensor.config.floatX)
        self.W = pytensor.shared(W, name="hW")
        self.b = pytensor.shared(numpy.zeros((n_out,), dtype=pytensor.config.floatX), name="hb")
        self.output = T.tanh(T.dot(input, self.W) + self.b)
        self.params = [self.W, self.b]


def main(paths, model="logreg", order="sequential", n_epochs=2, batch_size=20, learning_rate=0.1):
    datasets = load_data(paths)
    train_set_x, train_set_y = shared_dataset(datasets[0])
    valid_set_x, valid_set_y = shared_dataset(datasets[1])
    test_set_x, test_set_y = shared_dataset(datasets[2])
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] // batch_size
    n_test_batches = test_set_x.get_value(borrow=True).shape[0] // batch_size
    n_in = train_set_x.get_value(borrow=True).shape[1]

    index = T.lscalar()
    x = T.matrix("x")
    y = T.ivector("y")
    rng = numpy.random.RandomState(1234)
    if model == "mlp":
        hidden = HiddenLayer(rng, x, n_in, 16)
        classifier = LogisticRegression(hidden.output, 16, 3)
        params = hidden.params + classifier.params
        cost = (classifier.negative_log_likelihood(y) + 0.0001 * abs(hidden.W).sum()
                + 0.0001 * (hidden.W ** 2).sum())
    else:
        classifier = LogisticRegression(x, n_in, 3)
        params = classifier.params
        cost = classifier.negative_log_likelihood(y)

    test_model = pytensor.function(inputs=[index], outputs=classifier.errors(y), givens={
        x: test_set_x[index * batch_size: (index + 1) * batch_size],
        y: test_set_y[index * batch_size: (index + 1) * batch_size]})
    validate_model = pytensor.function(inputs=[index], outputs=classifier.errors(y), givens={
        x: valid_set_x[index * batch_size: (index + 1) * batch_size],
        y: valid_set_y[index * batch_size: (index + 1) * batch_size]})
    gparams = [T.grad(cost, param) for param in params]
    updates = [(param, param - learning_rate * gparam) for param, gparam in zip(params, gparams)]
    train_model = pytensor.function(inputs=[index], outputs=cost, updates=updates, givens={
        x: train_set_x[index * batch_size: index * batch_size + batch_size],
        y: train_set_y[index * batch_size: index * batch_size + batch_size]})

    history = []
    best = numpy.inf
    visit = numpy.random.RandomState(7)
    for epoch in range(n_epochs):
        batches = visit.permutation(n_train_batches) if order == "random" else range(n_train_batches)
        costs = [train_model(i) for i in batches]
        this_validation_loss = numpy.mean([validate_model(i) for i in range(n_valid_batches)])
        if this_validation_loss < best:
            best = this_validation_loss
            test_score = numpy.mean([test_model(i) for i in range(n_test_batches)])
        history.append((numpy.asarray(costs), this_validation_loss, test_score))
    return [p.get_value() for p in params], history, (train_model, validate_model, test_model)
'''  # noqa: E501

CHUNK_ROWS = 100


def out_of_core(script: str, chunk_rows: int = CHUNK_ROWS) -> str:
    """The two changes: symtrain.shared (with chunk_rows) in shared_dataset, symtrain.function."""
    return (script.replace("= pytensor.shared(numpy.asarray(data_", "= symtrain.shared(numpy.asarray(data_")
            .replace("dtype=pytensor.config.floatX), borrow=borrow)",
                     f"dtype=pytensor.config.floatX), borrow=borrow, chunk_rows={chunk_rows})")
            .replace("pytensor.function(", "symtrain.function("))


def run(script: str, paths, **kw):
    namespace: dict = {}
    exec(compile(script, "<tutorial script>", "exec"), namespace)
    return namespace["main"](paths, **kw)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Train 600 rows (6 chunks of 100), validation and test 200 rows each (2 chunks), 12 features, y as
    floatX."""
    root = tmp_path_factory.mktemp("tutorial")
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((3, 12)).astype(np.float32) * 2
    out = []
    for split, rows in (("train", 600), ("valid", 200), ("test", 200)):
        y = rng.integers(0, 3, rows)
        x = (centers[y] + rng.standard_normal((rows, 12))).astype(np.float32)
        np.save(root / f"{split}_x.npy", x)
        np.save(root / f"{split}_y.npy", y.astype(np.float32))
        out.append((str(root / f"{split}_x.npy"), str(root / f"{split}_y.npy")))
    return out


@pytest.fixture(scope="module")
def in_memory(paths):
    """The unchanged script's results (computed once per configuration)."""
    cache: dict = {}

    def get(**kw):
        key = tuple(sorted(kw.items()))
        if key not in cache:
            cache[key] = run(SCRIPT, paths, **kw)
        return cache[key]
    return get


def assert_same(expected, got):
    params_a, hist_a, _ = expected
    params_b, hist_b, _ = got
    assert len(params_a) == len(params_b)
    for a, b in zip(params_a, params_b):
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b), "parameters differ from the in-memory run"
    for (ca, va, ta), (cb, vb, tb) in zip(hist_a, hist_b):
        assert np.array_equal(ca, cb) and va == vb and ta == tb


def test_the_change_touches_only_shared_and_function_lines():
    changed = [line for line in difflib.ndiff(SCRIPT.splitlines(), out_of_core(SCRIPT).splitlines())
               if line.startswith("- ")]
    assert len(changed) == 5  # 2 shared lines in shared_dataset, 3 function calls
    assert all("pytensor.shared(numpy.asarray(data_" in line or "pytensor.function(" in line
               for line in changed)


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_streamed_script_equals_in_memory_to_the_bit(paths, in_memory, model):
    expected = in_memory(model=model)
    got = run(out_of_core(SCRIPT), paths, model=model)
    assert_same(expected, got)
    train_model, validate_model, test_model = got[2]
    from symtrain.legacy import StreamedFunction
    assert all(isinstance(f, StreamedFunction) for f in got[2])
    # sequential: each of the 6 training chunks is installed once per epoch (2 epochs), prefetched ahead
    assert train_model.group.loads == 12
    assert validate_model.group.vars != train_model.group.vars
    for f in got[2]:
        f.close()


def test_random_order_equals_in_memory(paths, in_memory):
    got = run(out_of_core(SCRIPT), paths, model="logreg", order="random")
    assert_same(in_memory(model="logreg", order="random"), got)
    assert got[2][0].group.loads > 12  # random access costs chunk loads (documented)
    for f in got[2]:
        f.close()


def test_chunk_rows_not_a_multiple_of_the_batch_size(paths, in_memory):
    """70-row chunks with 20-row batches: batches straddling a chunk get a window starting at the batch."""
    got = run(out_of_core(SCRIPT, chunk_rows=70), paths, model="logreg")
    assert_same(in_memory(model="logreg"), got)
    for f in got[2]:
        f.close()
