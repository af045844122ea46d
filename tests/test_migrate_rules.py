"""``symtrain migrate``: one test per rewrite rule (input snippet -> expected output), idempotency of each,
the report, and the CLI modes. No graph is compiled here (see test_migrate_runtime.py for the numbers)."""

from __future__ import annotations

import textwrap

import pytest

# the migrate tool's dependencies are not in the Aesara venv (make test-aesara collects every module)
pytest.importorskip("libcst")
pytest.importorskip("fissix")

from symtrain.cli import main  # noqa: E402
from symtrain.errors import MigrationError  # noqa: E402
from symtrain.migrate import migrate_source  # noqa: E402


def mig(src: str) -> str:
    return migrate_source(textwrap.dedent(src)).new


def same(src: str) -> str:
    return textwrap.dedent(src)


CASES = {
    "imports_and_alias": (
        """\
        import theano
        import theano.tensor as T
        x = theano.shared(1.0)
        y = T.matrix('y')
        """,
        """\
        import pytensor
        import pytensor.tensor as T
        x = pytensor.shared(1.0)
        y = T.matrix('y')
        """,
    ),
    "from_imports": (
        """\
        from theano import function, shared, config
        f = function([], [], updates=[])
        """,
        """\
        from pytensor import function, shared, config
        f = function([], [], updates=[])
        """,
    ),
    "comments_and_layout_kept": (
        """\
        import theano.tensor as T  # the alias stays T


        def f(x):
            # a comment
            return T.nnet.sigmoid(  x  )   # odd spacing
        """,
        """\
        import pytensor.tensor as T  # the alias stays T


        def f(x):
            # a comment
            return T.sigmoid(  x  )   # odd spacing
        """,
    ),
    "aesara": (
        """\
        import aesara
        import aesara.tensor as at
        from aesara.tensor.var import TensorVariable
        y = at.nnet.sigmoid(at.vector()) + aesara.shared(0.0)
        """,
        """\
        import pytensor
        import pytensor.tensor as at
        from pytensor.tensor.variable import TensorVariable
        y = at.sigmoid(at.vector()) + pytensor.shared(0.0)
        """,
    ),
    "nnet_moved_and_removed": (
        """\
        import theano.tensor as T
        from theano.tensor.nnet import sigmoid, relu
        a = T.nnet.softplus(x) + T.nnet.relu(x) + sigmoid(x) + relu(x)
        p = T.nnet.softmax(x)
        c = T.nnet.categorical_crossentropy(p, y) + T.nnet.binary_crossentropy(p, t)
        """,
        """\
        import pytensor.tensor as T
        from pytensor.tensor import sigmoid
        from symtrain.nnet import relu
        import symtrain.nnet
        a = T.softplus(x) + relu(x) + sigmoid(x) + relu(x)
        p = symtrain.nnet.softmax(x)
        c = symtrain.nnet.categorical_crossentropy(p, y) + symtrain.nnet.binary_crossentropy(p, t)
        """,
    ),
    "conv_pool_modules": (
        """\
        from theano.tensor.nnet import conv
        from theano.tensor.signal import downsample
        out = conv.conv2d(x, w, (4, 1, 3, 3), (20, 1, 8, 8))
        pooled = downsample.max_pool_2d(out, (2, 2))
        """,
        """\
        from symtrain import nnet as conv
        from symtrain import nnet as downsample
        out = conv.conv2d(x, w, filter_shape=(4, 1, 3, 3), image_shape=(20, 1, 8, 8))
        pooled = downsample.max_pool_2d(out, (2, 2))
        """,
    ),
    "pool_module": (
        """\
        from theano.tensor.signal.pool import pool_2d
        import theano.tensor.signal.pool as pool
        a = pool_2d(x, ws=(2, 2), ignore_border=True) + pool.pool_2d(x, (2, 2), mode='average_exc_pad')
        """,
        """\
        from symtrain.nnet import pool_2d
        import symtrain.nnet as pool
        a = pool_2d(x, ws=(2, 2), ignore_border=True) + pool.pool_2d(x, (2, 2), mode='average_exc_pad')
        """,
    ),
    "gof_opt_var": (
        """\
        import theano
        from theano import gof
        from theano.tensor.opt import register_specialize
        from theano.tensor.var import TensorVariable
        import theano.gof.graph as graph
        class MyOp(gof.Op):
            def perform(self, node, inputs, outputs):
                outputs[0][0] = inputs[0]
        """,
        """\
        import pytensor
        from pytensor import graph as gof
        from pytensor.tensor.rewriting.basic import register_specialize
        from pytensor.tensor.variable import TensorVariable
        import pytensor.graph.basic as graph
        class MyOp(gof.Op):
            def perform(self, node, inputs, outputs):
                outputs[0][0] = inputs[0]
        """,
    ),
    "flatten_outdim": (
        """\
        import theano.tensor as T
        a = T.flatten(x, outdim=2) + x.flatten(outdim=2) + x.flatten(2)
        """,
        """\
        import pytensor.tensor as T
        a = T.flatten(x, ndim=2) + x.flatten(ndim=2) + x.flatten(2)
        """,
    ),
    "xlogy0": (
        """\
        import theano.tensor as T
        e = T.xlogx.xlogy0(a, b)
        """,
        """\
        import pytensor.tensor as T
        e = T.special.xlogy(a, b)
        """,
    ),
    "round_keeps_theano_0_7": (
        """\
        import theano.tensor as T
        from theano.tensor.signal import downsample
        a = T.round(x) + T.round(x, mode='half_to_even')
        """,
        """\
        import pytensor.tensor as T
        from symtrain import nnet as downsample
        a = T.round(x, mode='half_away_from_zero') + T.round(x, mode='half_to_even')
        """,
    ),
    "config_flags": (
        """\
        import theano
        from theano import config
        theano.config.floatX = 'float32'
        theano.config.compute_test_value = 'warn'
        if theano.config.device == 'gpu':
            theano.config.warn.sum_div_dimshuffle_bug = False
        config.scan.allow_gc = True
        config.warn.ignore_bug_before = 'all'
        with theano.config.change_flags(floatX='float64'):
            pass
        """,
        """\
        import pytensor
        from pytensor import config
        pytensor.config.floatX = 'float32'
        if 'cpu' == 'gpu':
            pass
        config.scan__allow_gc = True
        config.warn__ignore_bug_before = 'all'
        with pytensor.config.change_flags(floatX='float64'):
            pass
        """,
    ),
    "theano_flags_env": (
        """\
        import os
        os.environ['THEANO_FLAGS'] = 'mode=FAST_RUN,device=gpu0,lib.cnmem=0.5,floatX=float32'
        os.environ.setdefault("AESARA_FLAGS", "floatX=float32,device=cuda,scan.allow_gc=True")
        flags = os.environ.get('THEANO_FLAGS', '')
        """,
        """\
        import os
        os.environ['PYTENSOR_FLAGS'] = 'mode=FAST_RUN,floatX=float32'
        os.environ.setdefault("PYTENSOR_FLAGS", "floatX=float32,scan__allow_gc=True")
        flags = os.environ.get('PYTENSOR_FLAGS', '')
        """,
    ),
    "random_streams": (
        """\
        from theano.tensor.shared_randomstreams import RandomStreams
        from theano.sandbox.rng_mrg import MRG_RandomStreams
        import theano.sandbox.rng_mrg
        a = RandomStreams(1).binomial((2,), 1, 0.5)
        b = MRG_RandomStreams(2).uniform((3,), -1, 1)
        c = theano.sandbox.rng_mrg.MRG_RandomStreams(3)
        """,
        """\
        from symtrain.migrate.runtime import RandomStreams
        from symtrain.migrate.runtime import MRG_RandomStreams
        import symtrain.migrate.runtime
        a = RandomStreams(1).binomial((2,), 1, 0.5)
        b = MRG_RandomStreams(2).uniform((3,), -1, 1)
        c = MRG_RandomStreams(3)
        """,
    ),
    "defaulted_inputs": (
        """\
        import theano
        f = theano.function([i, theano.Param(lr, default=0.1),
                             theano.In(c, value=0.2)], cost)
        """,
        """\
        import pytensor
        import symtrain.migrate.runtime
        f = symtrain.migrate.runtime.function([i, symtrain.migrate.runtime.Param(lr, default=0.1),
                             symtrain.migrate.runtime.In(c, value=0.2)], cost)
        """,
    ),
    "plain_In_stays": (
        """\
        import theano
        f = theano.function([theano.In(x, borrow=True)], y)
        """,
        """\
        import pytensor
        f = pytensor.function([pytensor.In(x, borrow=True)], y)
        """,
    ),
    "pfunc_pkl_utils_pp": (
        """\
        from theano.compile.pfunc import pfunc
        from theano.misc.pkl_utils import dump, load
        import theano
        f = pfunc([x], y)
        theano.pp(y)
        """,
        """\
        from pytensor import function as pfunc
        from symtrain.migrate.runtime import dump, load
        import pytensor
        f = pfunc([x], y)
        pytensor.printing.pp(y)
        """,
    ),
    "if_symbolic_default": (
        """\
        import theano
        import numpy
        def layer(n, W=None, sizes=None, input=None):
            if not W:
                W = theano.shared(numpy.zeros(n))
            if not sizes:
                sizes = [n]
            if input:
                pass
            return W, sizes
        """,
        """\
        import pytensor
        import numpy
        def layer(n, W=None, sizes=None, input=None):
            if W is None:
                W = pytensor.shared(numpy.zeros(n))
            if not sizes:
                sizes = [n]
            if input:
                pass
            return W, sizes
        """,
    ),
    "six_moves": (
        """\
        import six
        from six.moves import cPickle, xrange
        from six.moves import urllib
        for i in xrange(3):
            pass
        for k, v in six.iteritems(d):
            pass
        urllib.request.urlretrieve(url, path)
        """,
        """\
        import pickle
        import urllib.request
        for i in range(3):
            pass
        for k, v in d.items():
            pass
        urllib.request.urlretrieve(url, path)
        """,
    ),
    "pickle_latin1_and_binary_modes": (
        """\
        import pickle
        import theano
        f = open(path)
        data = pickle.load(f)
        with open(out, 'w') as g:
            pickle.dump(data, g)
        other = pickle.load(open(path, 'r'), encoding='bytes')
        """,
        """\
        import pickle
        import pytensor
        f = open(path, 'rb')
        data = pickle.load(f, encoding='latin1')
        with open(out, 'wb') as g:
            pickle.dump(data, g)
        other = pickle.load(open(path, 'rb'), encoding='bytes')
        """,
    ),
    "python2_basics": (
        """\
        import cPickle
        import sys
        for i in xrange(3):
            print 'step %d' % i
        for k, v in d.iteritems():
            print >> sys.stderr, k, v
        try:
            x = cPickle.load(f)
        except IOError, e:
            print e
        """,
        """\
        import pickle
        import sys
        for i in range(3):
            print('step %d' % i)
        for k, v in d.items():
            print(k, v, file=sys.stderr)
        try:
            x = pickle.load(f, encoding='latin1')
        except IOError as e:
            print(e)
        """,
    ),
    "python2_zip_twice": (
        """\
        pairs = zip(params, grads)
        updates = [(p, p - g) for p, g in pairs]
        norms = [g.norm(2) for p, g in pairs]
        for a, b in zip(x, y):
            print a
        """,
        """\
        pairs = list(zip(params, grads))
        updates = [(p, p - g) for p, g in pairs]
        norms = [g.norm(2) for p, g in pairs]
        for a, b in zip(x, y):
            print(a)
        """,
    ),
    "python2_integer_division": (
        """\
        n_train_batches = train_set_x.get_value(borrow=True).shape[0] / batch_size
        n_valid_batches = len(valid) / batch_size
        n_test_batches /= batch_size
        validation_frequency = min(n_train_batches, patience / 2)
        scale = numpy.sqrt(6. / (n_in + n_out))
        minutes = (end_time - start_time) / 60.
        ratio = errors / total_seen
        width = 1.5
        half = width / 2
        print 'done'
        """,
        """\
        n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
        n_valid_batches = len(valid) // batch_size
        n_test_batches //= batch_size
        validation_frequency = min(n_train_batches, patience // 2)
        scale = numpy.sqrt(6. / (n_in + n_out))
        minutes = (end_time - start_time) / 60.
        ratio = errors / total_seen
        width = 1.5
        half = width / 2
        print('done')
        """,
    ),
    "python2_future_division_untouched": (
        """\
        from __future__ import division
        n = len(x) / batch_size
        print 'x'
        """,
        """\
        from __future__ import division
        n = len(x) / batch_size
        print('x')
        """,
    ),
    "python3_print_function_kept": (
        """\
        import theano
        for i in xrange(2):
            print("a", i)
        """,
        """\
        import pytensor
        for i in range(2):
            print("a", i)
        """,
    ),
    "untouched_python3": (
        """\
        import pickle
        import numpy as np
        pairs = zip(a, b)
        n = len(x) / 2
        has_key = True
        xrange = range
        try:
            import cPickle as pickle
        except ImportError:
            import pickle
        print("a", 1, pickle.load(open(p)))
        """,
        """\
        import pickle
        import numpy as np
        pairs = zip(a, b)
        n = len(x) / 2
        has_key = True
        xrange = range
        try:
            import cPickle as pickle
        except ImportError:
            import pickle
        print("a", 1, pickle.load(open(p)))
        """,
    ),
    "aesara_pickles_untouched": (
        """\
        import pickle
        import aesara
        w = pickle.load(open(p, "rb"))
        """,
        """\
        import pickle
        import pytensor
        w = pickle.load(open(p, "rb"))
        """,
    ),
    "ifelse_scan_functions": (
        """\
        import theano
        from theano import ifelse
        from theano.sandbox.linalg import ops as linops
        a = theano.ifelse.ifelse(c, x, y) + ifelse.ifelse(c, x, y)
        out, upd = theano.scan_module.scan(fn, sequences=[x])
        inv = linops.matrix_inverse(m)
        """,
        """\
        import pytensor
        from pytensor import ifelse
        from pytensor.tensor import nlinalg as linops
        a = pytensor.ifelse(c, x, y) + ifelse(c, x, y)
        out, upd = pytensor.scan(fn, sequences=[x])
        inv = linops.matrix_inverse(m)
        """,
    ),
    "consider_constant_and_compat": (
        """\
        import theano
        from theano.compat import OrderedDict
        g = theano.gradient.consider_constant(x)
        u = OrderedDict()
        """,
        """\
        import pytensor
        from collections import OrderedDict
        g = pytensor.gradient.zero_grad(x)
        u = OrderedDict()
        """,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule(name):
    src, expected = CASES[name]
    assert mig(src) == same(expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_is_idempotent(name):
    once = mig(CASES[name][0])
    assert migrate_source(once).new == once


def test_aesara_round_is_not_changed():
    # Aesara already rounded half to even, as PyTensor does
    assert (
        mig("import aesara.tensor as at\na = at.round(x)\n")
        == "import pytensor.tensor as at\na = at.round(x)\n"
    )


def test_aesara_softmax_with_axis_uses_special():
    out = mig("import aesara.tensor as at\np = at.nnet.softmax(x, axis=0)\n")
    assert out == "import pytensor.tensor as at\np = at.special.softmax(x, axis=0)\n"


def test_reports_untranslatable_with_lines():
    src = textwrap.dedent("""\
        import theano
        from theano.sandbox.cuda import GpuOp
        from theano.tensor.nnet.neighbours import images2neibs
        theano.config.device = 'gpu'

        class K(theano.gof.Op):
            def c_code(self, node, name, inp, out, sub):
                return ""
        p = images2neibs(x, (2, 2))
        """)
    result = migrate_source(src, "k.py")
    by_line = {(f.line, f.kind) for f in result.findings}
    assert (2, "untranslated") in by_line
    assert (3, "untranslated") in by_line
    assert (4, "removed") in by_line
    assert (6, "untranslated") in by_line and (6, "review") in by_line
    assert (9, "untranslated") in by_line
    assert all(f.path == "k.py" for f in result.findings)
    assert "from theano.sandbox.cuda import GpuOp" in result.new  # left for a human, not mangled


def test_division_review_is_reported():
    result = migrate_source("ratio = errors / total_seen\nprint 'x'\n", "d.py")
    assert [(f.line, f.kind) for f in result.findings] == [(1, "review")]


def test_not_python_at_all():
    with pytest.raises(MigrationError, match=r"bad.py: .*line 1, column 7"):
        migrate_source("def f(:\n  return ]\n", "bad.py")


def test_cli_modes(tmp_path, capsys):
    legacy = tmp_path / "pkg" / "train.py"
    legacy.parent.mkdir()
    legacy.write_text("import theano\nprint 'hi'\n")
    (tmp_path / "pkg" / "clean.py").write_text("import numpy\n")

    assert main(["migrate", "--check", str(tmp_path)]) == 1
    assert "would rewrite" in capsys.readouterr().out

    assert main(["migrate", str(legacy)]) == 0  # --diff is the default and writes nothing
    out = capsys.readouterr().out
    assert "-import theano" in out and "+import pytensor" in out
    assert legacy.read_text() == "import theano\nprint 'hi'\n"

    assert main(["migrate", "--write", str(tmp_path)]) == 0
    assert legacy.read_text() == "import pytensor\nprint('hi')\n"
    assert (tmp_path / "pkg" / "train.py.bak").read_text() == "import theano\nprint 'hi'\n"
    assert not (tmp_path / "pkg" / "clean.py.bak").exists()
    assert main(["migrate", "--check", str(tmp_path)]) == 0

    legacy.write_text("import theano\n")
    assert main(["migrate", "--write", "--no-backup", str(legacy)]) == 0
    assert (tmp_path / "pkg" / "train.py.bak").read_text() == "import theano\nprint 'hi'\n"


def test_cli_missing_path(tmp_path, capsys):
    assert main(["migrate", str(tmp_path / "nope.py")]) == 2
    assert "nope.py" in capsys.readouterr().err


def test_cli_out_of_core_after_the_rename(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text(
        textwrap.dedent("""\
        import numpy
        import theano
        import theano.tensor as T


        def shared_dataset(data_xy, borrow=True):
            data_x, data_y = data_xy
            shared_x = theano.shared(numpy.asarray(data_x, dtype=theano.config.floatX), borrow=borrow)
            shared_y = theano.shared(numpy.asarray(data_y, dtype=theano.config.floatX), borrow=borrow)
            return shared_x, T.cast(shared_y, "int32")


        train_x, train_y = shared_dataset((numpy.load("x.npy", mmap_mode="r"),
                                           numpy.load("y.npy", mmap_mode="r")))
        index = T.lscalar()
        x = T.matrix("x")
        f = theano.function([index], x.sum(), givens={x: train_x[index * 10:(index + 1) * 10]})
        """)
    )
    assert main(["migrate", "--write", "--no-backup", "--out-of-core", str(script)]) == 0
    new = script.read_text()
    assert "shared_x = symtrain.shared(numpy.asarray(data_x, dtype=pytensor.config.floatX)" in new
    assert "f = symtrain.function([index]" in new
    assert "import theano" not in new
    assert "now streams" in capsys.readouterr().err


def test_write_keeps_encoding_and_mode(tmp_path):
    script = tmp_path / "old.py"
    script.write_bytes("# -*- coding: latin-1 -*-\nimport theano\nname = 'r\xe9seau'\n".encode("latin-1"))
    script.chmod(0o755)
    assert main(["migrate", "--write", "--no-report", str(script)]) == 0
    assert script.read_bytes() == "# -*- coding: latin-1 -*-\nimport pytensor\nname = 'r\xe9seau'\n".encode(
        "latin-1"
    )
    assert script.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "old.py.bak").read_bytes().startswith(b"# -*- coding: latin-1")


def test_symbolic_truth_tests_and_flag_mentions_are_reported():
    src = textwrap.dedent('''\
        """Run with THEANO_FLAGS=device=gpu python train.py"""
        import theano
        import theano.tensor as T
        x = T.matrix()
        class A:
            def __init__(self):
                self.W = theano.shared(0.)
                if self.W:
                    pass
        if not x:
            pass
        ''')
    result = migrate_source(src, "t.py")
    assert sorted((f.line, f.kind) for f in result.findings) == [(1, "review"), (8, "review"), (10, "review")]
    assert "if self.W:" in result.new  # reported, not guessed


def test_cli_goes_on_past_a_bad_file(tmp_path, capsys):
    (tmp_path / "a_bad.py").write_text("def f(:\n")
    good = tmp_path / "b_good.py"
    good.write_text("import theano\n")
    assert main(["migrate", "--write", "--no-backup", str(tmp_path)]) == 2
    assert good.read_text() == "import pytensor\n"
    assert (tmp_path / "a_bad.py").read_text() == "def f(:\n"
    assert "a_bad.py" in capsys.readouterr().err
