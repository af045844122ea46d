"""The silent traps of MIGRATION_NOTES, checked by numbers: migrate a snippet, run it, compare with what
Theano computed. Also the runtime layer the rewrites target (symtrain.migrate.runtime)."""

from __future__ import annotations

import gzip
import io
import pickle
import textwrap
import types

import numpy as np
import pytest

# the migrate tool's dependencies are not in the Aesara venv (make test-aesara collects every module)
pytest.importorskip("libcst")
pytest.importorskip("fissix")

from legacy.mnist_like import write_mnist_pkl_gz  # noqa: E402

from symtrain.backend import config, pt, shared  # noqa: E402
from symtrain.migrate import migrate_source, runtime  # noqa: E402


def run(src: str, **names) -> dict:
    """Migrate ``src`` and execute the result; return its namespace."""
    new = migrate_source(textwrap.dedent(src), "snippet.py").new
    ns = dict(names)
    exec(compile(new, "snippet.py", "exec"), ns)  # noqa: S102 - the point of the test
    return ns


def test_nnet_identity_every_spelling():
    """Trap 4: `activation == T.nnet.sigmoid` keeps holding, whichever spelling the script used."""
    ns = run("""\
        import theano
        import theano.tensor as T
        from theano.tensor import nnet
        from theano.tensor.nnet import sigmoid, softmax
        import theano.tensor.nnet.nnet as nnet_nnet
        sigmoids = [T.nnet.sigmoid, theano.tensor.nnet.sigmoid, sigmoid, nnet.sigmoid, nnet_nnet.sigmoid]
        softmaxes = [T.nnet.softmax, theano.tensor.nnet.softmax, softmax, nnet.softmax, nnet_nnet.softmax]
        """)
    assert all(s is pt.sigmoid for s in ns["sigmoids"])
    import symtrain.nnet

    assert all(s is symtrain.nnet.softmax for s in ns["softmaxes"])


def test_softmax_per_row_and_vector_padding():
    """Traps 1 and 3: softmax normalises each row (not the whole matrix); a vector becomes a 1 x N row."""
    ns = run("""\
        import theano
        import theano.tensor as T
        x = T.matrix('x')
        v = T.vector('v')
        f = theano.function([x, v], [T.nnet.softmax(x), T.nnet.softmax(v)])
        """)
    a = np.array([[1, 2, 3], [0, 0, 5]], dtype=config.floatX)
    rows, vec = ns["f"](a, a[0])
    e = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(rows, e / e.sum(1, keepdims=True), rtol=1e-5)
    assert vec.shape == (1, 3)
    np.testing.assert_allclose(vec[0], rows[0], rtol=1e-5)


def test_round_keeps_theano_0_7_mode_and_pool_default_ignore_border():
    """Trap 6: halves round away from zero; trap 7: max_pool_2d keeps partial windows by default."""
    ns = run("""\
        import theano
        import theano.tensor as T
        from theano.tensor.signal import downsample
        x = T.vector('x')
        img = T.tensor4('img')
        f = theano.function([x, img], [T.round(x), downsample.max_pool_2d(img, (2, 2))])
        """)
    rounded, pooled = ns["f"](
        np.array([0.5, 1.5, 2.5, -0.5, -2.5], dtype=config.floatX),
        np.arange(25, dtype=config.floatX).reshape(1, 1, 5, 5),
    )
    np.testing.assert_array_equal(rounded, [1, 2, 3, -1, -3])
    assert pooled.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(pooled[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])


@pytest.mark.parametrize("cls", ["RandomStreams", "MRG_RandomStreams"])
def test_random_streams_old_signatures(cls):
    """Positional calls in Theano's order: binomial(size, n, p), uniform(size, low, high), normal(...)."""
    ns = run(f"""\
        import theano
        from theano.sandbox.rng_mrg import MRG_RandomStreams
        from theano.tensor.shared_randomstreams import RandomStreams
        rng = {cls}(1234)
        b = rng.binomial((4000,), 1, 0.9, dtype=theano.config.floatX)
        u = rng.uniform((4000,), 2.0, 3.0)
        n = rng.normal((4000,), 5.0, 0.5)
        k = rng.binomial(size=(4000,), n=1, p=0.2)
        t = rng.normal((4000,), 1.0, 2.0, truncate=True)
        f = theano.function([], [b, u, n, k, t])
        """)
    b, u, n, k, t = ns["f"]()
    assert t.min() >= 1.0 - 4.0 - 1e-4 and t.max() <= 1.0 + 4.0 + 1e-4 and abs(t.mean() - 1.0) < 0.1
    assert b.dtype == config.floatX and u.dtype == config.floatX and n.dtype == config.floatX
    assert k.dtype == np.int64
    assert abs(b.mean() - 0.9) < 0.03 and abs(k.mean() - 0.2) < 0.03
    assert u.min() >= 2.0 and u.max() < 3.0
    assert abs(n.mean() - 5.0) < 0.05 and abs(n.std() - 0.5) < 0.05
    b2 = ns["f"]()[0]
    assert not np.array_equal(b, b2)  # the default updates advance the stream


@pytest.mark.filterwarnings("ignore:Scan return signature will change")
def test_random_updates_inside_scan_apply():
    """Trap 5: samples drawn inside scan advance when scan's updates go on to function."""
    ns = run("""\
        import theano
        import theano.tensor as T
        from theano.sandbox.rng_mrg import MRG_RandomStreams
        rng = MRG_RandomStreams(7)
        h0 = T.vector('h0')
        def step(h):
            return rng.binomial(size=h.shape, n=1, p=0.5, dtype=theano.config.floatX)
        out, updates = theano.scan(step, outputs_info=[h0], n_steps=2)
        f = theano.function([h0], out[-1], updates=updates)
        """)
    h = np.zeros(64, dtype=config.floatX)
    first, second = ns["f"](h), ns["f"](h)
    assert set(np.unique(first)) <= {0.0, 1.0} and 10 < first.sum() < 54
    assert not np.array_equal(first, second)


def test_param_and_in_defaults():
    ns = run("""\
        import theano
        import theano.tensor as T
        x = T.scalar('x')
        lr = T.scalar('lr')
        c = T.scalar('c')
        f = theano.function([x, theano.Param(lr, default=0.5), theano.In(c, value=10.0)], x * lr + c)
        """)
    f = ns["f"]
    assert f(2.0) == pytest.approx(11.0)
    assert f(2.0, 1.0) == pytest.approx(12.0)
    assert f(2.0, lr=2.0, c=0.0) == pytest.approx(4.0)
    with pytest.raises(TypeError, match="unknown input"):
        f(2.0, nope=1.0)


def test_latin1_pickle_of_python2(tmp_path):
    """Trap 8: the tutorials' Python 2 pickle needs encoding='latin1'; the migrated loader has it."""
    path = write_mnist_pkl_gz(tmp_path / "mnist.pkl.gz", n_train=30, n_valid=10, n_test=10)
    with gzip.open(path, "rb") as f, pytest.raises(UnicodeDecodeError):
        pickle.load(f)
    ns = run("""\
        import cPickle, gzip
        def load_data(dataset):
            f = gzip.open(dataset, 'rb')
            train_set, valid_set, test_set = cPickle.load(f)
            f.close()
            return train_set
        """)
    x, y = ns["load_data"](str(path))
    assert x.shape == (30, 64) and x.dtype == np.float32 and y.shape == (30,)


def test_zip_consumed_twice_in_python2_code():
    """Trap 2: a Python 2 zip is a list; iterated twice it must give its pairs both times."""
    ns = run("""\
        pairs = zip([1, 2, 3], [4, 5, 6])
        first = [a + b for a, b in pairs]
        second = [a * b for a, b in pairs]
        evens = filter(lambda v: v % 2 == 0, range(6))
        total = sum(evens) + len(evens)
        print 'done'
        """)
    assert ns["first"] == [5, 7, 9] and ns["second"] == [4, 10, 18]
    assert ns["total"] == 6 + 3


def test_theano_flags_become_pytensor_flags():
    """Trap 9: PyTensor ignores THEANO_FLAGS; the migrated script sets PYTENSOR_FLAGS (minus GPU flags)."""
    fake_os = types.SimpleNamespace(environ={})
    run(
        """\
        os.environ['THEANO_FLAGS'] = 'device=gpu,floatX=float32,nvcc.fastmath=True,scan.allow_gc=True'
        """,
        os=fake_os,
    )
    # dotted keys are silently ignored by PyTensor 3.0.7 (scan.allow_gc=True leaves scan__allow_gc False)
    assert fake_os.environ == {"PYTENSOR_FLAGS": "floatX=float32,scan__allow_gc=True"}


def test_pkl_utils_round_trip():
    obj = {"W": np.arange(6, dtype=np.float32).reshape(2, 3), "name": "mlp", "same": None}
    obj["same"] = obj["W"]
    buf = io.BytesIO()
    runtime.dump(obj, buf)
    buf.seek(0)
    back = runtime.load(buf)
    np.testing.assert_array_equal(back["W"], obj["W"])
    assert back["name"] == "mlp" and back["same"] is back["W"]


def test_runtime_function_without_defaults_is_plain():
    x = pt.scalar("x")
    s = shared(np.float32(1.0))
    f = runtime.function([runtime.In(x)], x + s)
    assert not isinstance(f, runtime.FunctionWithDefaults)
    assert f(1.0) == pytest.approx(2.0)
