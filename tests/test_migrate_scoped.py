"""Issue 17's defect classes, each from several snippets: scope-aware rewrites, one-shot iterators, six
shims, truth tests of None-defaulted graph parameters, Python 2 division, subprocess text, round modes,
seeds, and the report of every rewrite that can change behaviour (file:line)."""

from __future__ import annotations

import textwrap

import pytest

# the migrate tool's dependencies are not in the Aesara venv (make test-aesara collects every module)
pytest.importorskip("libcst")
pytest.importorskip("fissix")

from symtrain.migrate import migrate_source  # noqa: E402


def mig(src: str, **kw) -> tuple[str, list[tuple[int, str, str]]]:
    """The migrated text (checked idempotent) and the findings as (line, kind, message)."""
    result = migrate_source(textwrap.dedent(src), "s.py", **kw)
    again = migrate_source(result.new, "s.py", **kw)
    assert again.new == result.new, "not idempotent"
    return result.new, [(f.line, f.kind, f.message) for f in sorted(result.findings)]


def lines_of(findings, kind: str) -> list[int]:
    return sorted({line for line, k, _ in findings if k == kind})


# ---- 1. open() modes follow the binding that reaches pickle, in its own scope --------------------------
@pytest.mark.parametrize(
    "src, binary, reported",
    [
        (
            """\
     import gzip, pickle
     import theano
     def load(p):
         f = gzip.open(p, 'rb'); return pickle.load(f)
     def report(p, lines):
         f = open(p, 'w'); f.write('\\n'.join(lines))
     """,
            [],
            [6],
        ),
        (
            """\
     import pickle
     import theano
     def save(p, obj):
         with open(p, 'w') as f:
             pickle.dump(obj, f)
     def log(p, text):
         with open(p, 'w') as f:
             f.write(text)
     """,
            [4],
            [7],
        ),
        (
            """\
     import pickle
     import theano
     f = open('log.txt', 'w')
     def load(p):
         with open(p) as f:
             return pickle.load(f)
     """,
            [5],
            [3],
        ),
        (
            """\
     import pickle
     import theano
     def both(a, b):
         f = open(a, 'w')
         f.write('header')
         f.close()
         f = open(b)
         return pickle.load(f)
     """,
            [7],
            [4],
        ),
        (
            """\
     import gzip, pickle
     import theano
     def either(p, gz):
         if gz:
             f = gzip.open(p)
         else:
             f = open(p)
         return pickle.load(f)
     """,
            [7],
            [],
        ),
        (
            """\
     import pickle
     import theano
     def direct(p, obj):
         pickle.dump(obj, open(p, 'w'))
         return pickle.load(file=open(p))
     """,
            [4, 5],
            [],
        ),
    ],
)
def test_open_mode_follows_the_binding(src, binary, reported):
    new, findings = mig(src)
    changed_opens = [
        n
        for n, line in enumerate(new.splitlines(), 1)
        if "open(" in line and ("'wb'" in line or "'rb'" in line) and "gzip" not in line
    ]
    assert changed_opens == binary
    assert [line for line, k, m in findings if k == "changed" and "binary mode" in m] == binary
    assert [line for line, k, m in findings if k == "review" and "open()" in m] == reported


def test_attribute_binding_in_the_same_method():
    new, findings = mig(
        "import pickle\nimport theano\nclass S:\n    def save(self, p, o):\n"
        "        self.f = open(p, 'w')\n        pickle.dump(o, self.f)\n"
        "    def log(self, p):\n        self.f = open(p, 'w')\n        self.f.write('x')\n"
    )
    assert "        self.f = open(p, 'wb')" in new and "        self.f = open(p, 'w')" in new
    assert lines_of(findings, "changed") == [5]


def test_python2_file_builtin_becomes_open_unless_bound():
    new, findings = mig(
        "import cPickle\nimport theano\ndef save(p, o):\n    f = file(p, 'w')\n"
        "    cPickle.dump(o, f)\ndef g(file):\n    return file(1)\n"
    )
    assert "    f = open(p, 'wb')" in new and "    return file(1)" in new
    assert lines_of(findings, "changed") == [4]


def test_text_file_next_to_a_pickle_still_writes_text(tmp_path):
    """The issue's snippet runs: the report file is written as text, the pickle read back."""
    new, _ = mig("""\
        import gzip, pickle
        import theano
        def load(p):
            f = gzip.open(p, 'rb'); return pickle.load(f)
        def report(p, lines):
            f = open(p, 'w'); f.write('\\n'.join(lines)); f.close()
        """)
    ns: dict = {}
    exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
    import gzip
    import pickle

    with gzip.open(tmp_path / "d.pkl.gz", "wb") as g:
        pickle.dump([1, 2], g)
    assert ns["load"](tmp_path / "d.pkl.gz") == [1, 2]
    ns["report"](tmp_path / "r.txt", ["a", "b"])
    assert (tmp_path / "r.txt").read_text() == "a\nb"


# ---- 2. one-shot zip/map/filter/dict views in Theano-era files, whatever the Python version ------------
SIX_HEADER = "from __future__ import print_function\nimport six.moves.cPickle as pickle\nimport theano\n"


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "def batches(n, k):\n    c = [list(range(i, min(i + k, n))) for i in range(0, n, k)]\n"
            "    return zip(range(len(c)), c)\n",
            "    return list(zip(range(len(c)), c))",
        ),
        (
            "def pairs(a, b):\n    p = map(lambda t: t * 2, a)\n    return p\n",
            "    p = list(map(lambda t: t * 2, a))",
        ),
        (
            "def keep(a):\n    self_items = filter(None, a)\n    return len(self_items)\n",
            "    self_items = list(filter(None, a))",
        ),
        ("def names(d):\n    return d.keys()\n", "    return list(d.keys())"),
        ("def first(d):\n    return d.values()[0]\n", "    return list(d.values())[0]"),
        ("def run(f, xs):\n    map(f, xs)\n", "    list(map(f, xs))"),
        (
            "class M:\n    def __init__(self, p, g):\n        self.pairs = zip(p, g)\n",
            "        self.pairs = list(zip(p, g))",
        ),
        (
            "def upd(params, grads, lr):\n    return theano.function([], [], updates=zip(params, "
            "[p - lr * g for p, g in "
            "zip(params, grads)]))\n",
            "    return pytensor.function([], [], updates=list(zip(params, [p - lr * g for p, g in "
            "zip(params, grads)])))",
        ),
    ],
)
def test_one_shot_results_become_lists_in_six_era_files(body, expected):
    new, findings = mig(SIX_HEADER + body)
    assert expected in new.splitlines(), new
    assert len(lines_of(findings, "changed")) == 1
    assert all("wrapped in list" in m for _, k, m in findings if k == "changed")


@pytest.mark.parametrize(
    "body",
    [
        "for a, b in zip(x, y):\n    pass\n",
        "s = [a * b for a, b in zip(x, y)]\n",
        "d = dict(zip(x, y))\n",
        "t = sorted(d.keys())\n",
        "n = len(d.keys())\n",
        "ok = 'a' in d.keys()\n",
        "a, b = zip(*pairs)\n",
        "text = ', '.join(map(str, x))\n",
        "total = sum(map(len, x))\n",
        "u = list(zip(x, y))\n",
        "def zip(*a):\n    return a\nz = zip(x, y)\n",
    ],
)
def test_one_shot_results_consumed_once_are_left_alone(body):
    src = "import theano\n" + body
    new, findings = mig(src)
    assert new == src.replace("import theano", "import pytensor")
    assert not lines_of(findings, "changed")


def test_theano_imported_with_other_modules_is_theano_era():
    new, findings = mig("import numpy, theano\ndef f(a, b):\n    return zip(a, b)\n")
    assert "    return list(zip(a, b))" in new and lines_of(findings, "changed") == [3]


def test_report_lines_are_those_of_the_original_file():
    """Imports that the rewrite splits, adds or drops do not shift the lines the report gives."""
    src = (
        "import six\nimport numpy, theano\nimport theano.tensor as T\n"
        "f = theano.function([T.scalar()], [], updates=[])\nd = theano.Param(T.scalar(), default=1)\n"
        "def g(a, b, persistent=None):\n    updates = {}\n    if persistent:\n"
        "        updates[persistent] = T.dot(a, b)\n    return zip(a, b)\n"
        "def h(a, p=None):\n    if p:\n        return {p: T.dot(a, a)}\n"
    )
    new, findings = mig(src)
    assert len(new.splitlines()) != len(src.splitlines())
    assert lines_of(findings, "changed") == [8, 10, 12]


def test_aesara_code_keeps_its_iterators():
    src = "import aesara\ndef f(a, b):\n    return zip(a, b)\n"
    assert mig(src)[0] == src.replace("aesara", "pytensor")


def test_returned_zip_iterated_twice_runs_twice():
    """The issue's snippet: a caller walking the batches twice sees them twice."""
    new, _ = mig(
        SIX_HEADER + "def batches(n, k):\n    c = [list(range(i, min(i + k, n))) for i in range(0, n, k)]\n"
        "    return zip(range(len(c)), c)\n"
    )
    ns: dict = {}
    exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
    b = ns["batches"](5, 2)
    assert [i for i, _ in b] == [0, 1, 2] and [i for i, _ in b] == [0, 1, 2]


def test_python2_fixer_wrappings_are_reported():
    new, findings = mig("""\
        import theano
        import cPickle
        def f(d, a, b):
            pairs = zip(a, b)
            ks = d.keys()
            map(g, a)
            for k in d.keys():
                print k
        """)
    assert "pairs = list(zip(a, b))" in new and "ks = list(d.keys())" in new and "list(map(g, a))" in new
    assert "for k in list(d.keys()):" in new  # 2to3's choice: the loop body may change the dict
    assert lines_of(findings, "changed") == [4, 5, 6, 7]


# ---- 3. six shims are not Python 2 evidence ------------------------------------------------------------
@pytest.mark.parametrize(
    "imports",
    [
        "from six.moves import xrange",
        "from six.moves import xrange, cPickle",
        "from six.moves import (xrange,\n                       zip)",
        "from six.moves import range as xrange",
        "from builtins import range as xrange",
        "from past.builtins import xrange, basestring",
        "import six\nfrom six.moves import xrange\nfor k, v in six.iteritems({}):\n    pass",
        "from six import iteritems, itervalues\nfrom six.moves import xrange",
    ],
)
def test_six_imports_do_not_make_a_file_python2(imports):
    src = f"import theano\n{imports}\ndef half(n):\n    for i in xrange(n):\n        pass\n    return n / 2\n"
    result = migrate_source(src, "s.py")
    assert not result.python2
    assert "return n / 2" in result.new
    assert not [f for f in result.findings if "division" in f.message]


@pytest.mark.parametrize(
    "src, python2",
    [
        ("import six\nif six.PY2:\n    s = unicode(x)\nelse:\n    s = str(x)\n", False),
        ("import six\nif six.PY3:\n    s = str(x)\nelse:\n    s = unicode(x)\n", False),
        ("import sys\nif sys.version_info[0] == 2:\n    r = xrange\n", False),
        ("try:\n    r = xrange(3)\nexcept NameError:\n    r = range(3)\n", False),
        ("def f(x):\n    if PY2:\n        return unicode(x)\n    return x\n", False),
        ("try:\n    for i in xrange(3):\n        pass\nexcept KeyboardInterrupt:\n    pass\n", True),
        ("if x:\n    y = 1\nelse:\n    y = unicode(3)\n", True),
    ],
)
def test_version_guarded_python2_names_are_shims(src, python2):
    from symtrain.migrate.py2 import looks_like_python2

    assert looks_like_python2(src) is python2


def test_real_python2_markers_still_count():
    for marker in ("import cPickle", "for i in xrange(3): pass", "d.iteritems()", "print 'x'"):
        result = migrate_source(f"import theano\n{marker}\nh = 7 / 2\n", "s.py")
        assert result.python2, marker
        assert "h = 7 // 2" in result.new


# ---- 4. truth tests of None-defaulted parameters that receive graph variables -------------------------
@pytest.mark.parametrize(
    "src, expected",
    [
        (
            """\
     import theano
     def cd_updates(cost, end, persistent=None):
         updates = {}
         if persistent:
             updates[persistent] = end
         return updates
     """,
            "    if persistent is not None:",
        ),
        (
            """\
     import theano.tensor as T
     def layer(x, b=None):
         out = T.dot(x, x)
         if not b:
             return out
         return out + b
     """,
            "    if b is None:",
        ),
        (
            """\
     import theano.tensor as T
     def act(x, mask=None):
         return x if not mask else T.switch(mask, x, 0)
     """,
            "    return x if mask is None else T.switch(mask, x, 0)",
        ),
        (
            """\
     import theano.tensor as tensor
     def drop(x, noise=None, p=0.5):
         if noise and p > 0:
             x = x * noise.dimshuffle(0, 'x')
         return x
     """,
            "    if noise is not None and p > 0:",
        ),
        (
            """\
     import theano
     import theano.tensor as T
     def chain(x, init=None):
         start = init or T.zeros_like(x)
         return start
     """,
            "    start = (init if init is not None else T.zeros_like(x))",
        ),
        (
            """\
     import theano
     import theano.tensor as T
     def step(x, h=None):
         while h:
             break
         return x
     m = T.matrix()
     step(m, h=m)
     """,
            "    while h is not None:",
        ),
    ],
)
def test_truth_tests_of_graph_parameters_become_is_none(src, expected):
    new, findings = mig(src)
    assert expected in new.splitlines(), new
    assert lines_of(findings, "changed"), findings


@pytest.mark.parametrize(
    "src, plain",
    [
        ("import theano\ndef f(x, extra=None):\n    if extra:\n        return x\n", False),
        (
            "import theano.tensor as T\ndef f(x, axis=None):\n    if axis:\n"
            "        return T.sum(x, axis=axis)\n",
            True,
        ),
        ("import theano\ndef f(x, name=None):\n    if name:\n        print(name)\n", True),
        ("import theano\ndef f(x, tag=None):\n    if tag:\n        print('layer %s' % tag)\n", True),
        ("import theano\ndef f(x, hook=None):\n    if hook:\n        hook(x)\n", True),
        (
            "import theano\ndef f(x, items=None):\n    if not items:\n        items = []\n"
            "    items.append(x)\n",
            True,
        ),
    ],
)
def test_truth_tests_without_graph_evidence_are_reported_not_rewritten(src, plain):
    new, findings = mig(src)
    assert new == src.replace("import theano", "import pytensor")
    assert lines_of(findings, "review") == [3]
    said = [m for n, k, m in findings if k == "review" and "looks like a plain value" in m]
    assert bool(said) == plain


def test_python2_helper_without_theano_has_no_truth_test_reports():
    new, findings = mig("def label(x, name=None):\n    if name:\n        print name\n    return x\n")
    assert "    if name:" in new and not [f for f in findings if "truth test" in f[2]]


def test_persistent_chain_runs_after_the_rewrite():
    """The issue's CD snippet: with a shared persistent chain it builds its updates instead of raising."""
    new, _ = mig("""\
        import theano
        import numpy
        def cd_updates(cost, end, persistent=None):
            updates = {}
            if persistent:
                updates[persistent] = end
            return updates
        chain = theano.shared(numpy.zeros(3))
        ups = cd_updates(None, chain * 2, persistent=chain)
        none = cd_updates(None, chain * 2)
        """)
    ns: dict = {}
    exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
    assert list(ns["ups"]) == [ns["chain"]] and ns["none"] == {}


def test_not_p_anywhere_and_elif_become_is_none():
    new, findings = mig(
        "import theano.tensor as T\ndef f(x, h=None):\n    fresh = not h\n    if not h:\n"
        "        h = T.zeros_like(x)\n    elif h:\n        pass\n    return T.dot(h, x), fresh\n"
    )
    assert "    fresh = h is None" in new and "    elif h is not None:" in new
    assert lines_of(findings, "changed") == [3, 4, 6] and not lines_of(findings, "review")


# ---- 5. Python 2 division: integer-valued numpy calls are integers; float/symbolic sides are quiet ----
DIVISION_HEADER = (
    "import numpy\nimport numpy as np\nimport theano\nimport theano.tensor as tensor\n"
    "from theano import tensor as TT\nprint 'py2'\n"
)


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            "fan_out = shape[0] * numpy.prod(shape[2:]) / numpy.prod(pool)",
            "fan_out = shape[0] * numpy.prod(shape[2:]) // numpy.prod(pool)",
        ),
        (
            "w = (image_shape[2] - filter_shape[2] + 1) / poolsize[0]",
            "w = (image_shape[2] - filter_shape[2] + 1) // poolsize[0]",
        ),
        ("h = np.sum(sizes) / 2", "h = np.sum(sizes) // 2"),
        ("k = len(layers) / 2", "k = len(layers) // 2"),
        ("c = data.shape[1] / np.prod((2, 2))", "c = data.shape[1] // np.prod((2, 2))"),
        ("q = max(len(a), 3) / 2", "q = max(len(a), 3) // 2"),
        ("r = x.size / x.shape[0]", "r = x.size // x.shape[0]"),
    ],
)
def test_integer_operands_are_floor_divided(line, expected):
    new, findings = mig(
        DIVISION_HEADER + "def f(x, a, data, layers, shape, pool, image_shape, filter_shape, "
        "poolsize, sizes):\n    " + line + "\n"
    )
    assert "    " + expected in new.splitlines(), new
    assert lines_of(findings, "changed") == [8] and not lines_of(findings, "review")


@pytest.mark.parametrize(
    "line",
    [
        "y = tensor.sum(x) / x.shape[0]",
        "y = TT.dot(x, x) / 2",
        "y = numpy.sqrt(6. / (n_in + n_out))",
        "y = (x ** 2).mean() / 3",
        "y = np.mean(errs) / 2",
        "y = float(n) / batch_size",
        "y = lr / 2",
        "y = h / 2",
        "y = numpy.prod(numpy.ones(3) * 0.5) / 2",
        "y = math.sqrt(n) / 2",
        "y = numpy.random.RandomState(1).uniform(size=3) / 2",
        "y = self_lr / 2",
        "y = numpy.zeros(3) / 2",
        "y = numpy.cast['float32'](n) / 2",
        "y = np.asarray(x, dtype='float32') / 255",
    ],
)
def test_float_and_symbolic_operands_are_quiet(line):
    src = (
        DIVISION_HEADER + "import math\nlr = 0.1\nself_lr = lr\ndef f(x, n, n_in, n_out, errs, batch_size):\n"
        "    h = tensor.matrix()\n    " + line + "\n"
    )
    new, findings = mig(src)
    assert "    " + line in new.splitlines(), new
    assert not [f for f in findings if "division" in f[2]], findings


@pytest.mark.parametrize(
    "line",
    [
        "y = foo(x) / 3",
        "y = err / seen",
        "y = self.cost / n",
        "y = numpy.sum(err) / n",
        "y = x.sum() / len(x)",
        "y = numpy.load(p) / 255",
        "y = np.dot(x, x) / 2",
    ],
)
def test_doubtful_division_is_reported(line):
    new, findings = mig(DIVISION_HEADER + "def f(self, x, err, seen, n):\n    " + line + "\n")
    assert "    " + line in new.splitlines()
    assert lines_of(findings, "review") == [8]


def test_python2_builtin_round_is_reported():
    new, findings = mig(DIVISION_HEADER + "a = round(2.5)\nb = round(x, 2)\nc = T.round(x)\n")
    assert "a = round(2.5)" in new
    assert [n for n, k, m in findings if "builtin `round" in m] == [7]


def test_accumulators_are_integers_only_if_everything_added_is():
    new, findings = mig(
        DIVISION_HEADER + "def a(xs, n_batches):\n    total_cost = 0\n    for x in xs:\n"
        "        total_cost += f(x)\n    return total_cost / n_batches\n"
        "def b(xs, n_batches):\n    seen = 0\n    for x in xs:\n        seen += 1\n"
        "    return seen / n_batches\n"
    )
    assert "    return total_cost / n_batches" in new and "    return seen // n_batches" in new
    assert lines_of(findings, "review") == [11] and lines_of(findings, "changed") == [16]


def test_division_kinds_are_per_scope():
    new, findings = mig(
        DIVISION_HEADER + "def a(n):\n    x = 1.5\n    return n / x\n"
        "def b(n):\n    x = len(n)\n    return x / 2\nrate = 0.5\ndef c(m):\n    return rate / m\n"
    )
    assert "    return n / x" in new and "    return x // 2" in new and "    return rate / m" in new
    assert lines_of(findings, "changed") == [12] and not lines_of(findings, "review")


def test_lenet_fan_out_is_an_integer_again():
    new, _ = mig(
        DIVISION_HEADER + "def fans(shape, pool):\n    return numpy.prod(shape[1:]), "
        "shape[0] * numpy.prod(shape[2:]) / numpy.prod(pool)\n"
    )
    ns: dict = {}
    exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
    assert ns["fans"]((20, 1, 5, 5), (2, 2)) == (25, 125)
    assert ns["fans"]((50, 20, 5, 5), (3, 3)) == (500, 138)  # 1250 / 9 floored, as Python 2 computed


# ---- 6. Python 2 str through subprocess pipes ----------------------------------------------------------
@pytest.mark.parametrize(
    "call, expected",
    [
        (
            "p = Popen(['sort'], stdin=PIPE, stdout=PIPE)",
            "p = Popen(['sort'], stdin=PIPE, stdout=PIPE, text=True)",
        ),
        (
            "p = subprocess.Popen(cmd, stdout=subprocess.PIPE)",
            "p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)",
        ),
        ("p = sp.Popen(cmd, stderr=sp.PIPE)", "p = sp.Popen(cmd, stderr=sp.PIPE, text=True)"),
        (
            "v = subprocess.check_output(['echo', 'x'])",
            "v = subprocess.check_output(['echo', 'x'], text=True)",
        ),
        ("v = check_output('ls', shell=True)", "v = check_output('ls', shell=True, text=True)"),
        ("p = Popen(['ls'])", "p = Popen(['ls'])"),
        ("p = Popen(['ls'], stdout=log_file)", "p = Popen(['ls'], stdout=log_file)"),
        (
            "p = Popen(cmd, stdout=PIPE, universal_newlines=True)",
            "p = Popen(cmd, stdout=PIPE, universal_newlines=True)",
        ),
    ],
)
def test_python2_pipes_carry_text(call, expected):
    src = (
        "import subprocess\nimport subprocess as sp\nfrom subprocess import Popen, PIPE, check_output\n"
        f"import theano\n{call}\nprint 'done'\n"
    )
    new, findings = mig(src)
    assert expected in new.splitlines(), new
    assert lines_of(findings, "changed") == ([5] if expected != call else [])


def test_pipe_with_kwargs_is_reported_and_text_round_trips():
    new, findings = mig("import subprocess\nimport theano\nq = subprocess.Popen(cmd, **opts)\nprint 'x'\n")
    assert "q = subprocess.Popen(cmd, **opts)" in new and lines_of(findings, "review") == [3]
    new, _ = mig(
        "import sys\nfrom subprocess import Popen, PIPE\nimport theano\n"
        "p = Popen([sys.executable, '-c', 'import sys; print(sys.stdin.read().upper())'], stdin=PIPE, "
        "stdout=PIPE)\nout, _ = p.communicate('abc')\nprint out.strip()\n"
    )
    ns: dict = {}
    exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
    assert ns["out"].strip() == "ABC"


# ---- 7. T.round's mode follows the file's Theano API era ------------------------------------------------
@pytest.mark.parametrize(
    "marker, mode, kind",
    [
        ("from theano.tensor.signal import downsample", True, "changed"),
        ("from theano.tensor.nnet import conv", True, "changed"),
        ("p = theano.Param(x, default=1)", True, "changed"),
        ("from theano.tensor.signal import pool", False, None),
        ("from theano.tensor.signal.pool import pool_2d", False, None),
        ("y = T.nnet.conv2d(x, w)", False, None),
        ("i = theano.In(x, value=1)", False, None),
        ("z = 1", False, "review"),
    ],
)
def test_round_mode_from_the_api_era(marker, mode, kind):
    src = f"import theano\nimport theano.tensor as T\n{marker}\nr = T.round(x)\n"
    new, findings = mig(src)
    line = [x for x in new.splitlines() if x.startswith("r = ")][0]
    assert ("half_away_from_zero" in line) == mode
    assert [k for n, k, m in findings if n == 4 and "round" in m] == ([kind] if kind else [])


def test_round_method_on_a_variable_follows_the_era_too():
    new, findings = mig(
        "import theano.tensor as T\nfrom theano.tensor.signal import downsample\nx = T.vector()\n"
        "y = x.round()\nz = x.round(mode='half_to_even')\nw = [1.5].count(1)\n"
    )
    assert "y = x.round(mode='half_away_from_zero')" in new and "z = x.round(mode='half_to_even')" in new
    assert lines_of(findings, "changed") == [4]
    new, findings = mig("import theano.tensor as T\nx = T.vector()\ny = x.round()\n")
    assert "y = x.round()" in new and lines_of(findings, "review") == [3]


# ---- 8. unseeded MRG_RandomStreams uses Theano's default seed -----------------------------------------
def test_unseeded_mrg_streams_repeat_run_to_run():
    src = (
        "import theano\nfrom theano.sandbox.rng_mrg import MRG_RandomStreams\nrng = MRG_RandomStreams()\n"
        "other = MRG_RandomStreams(7)\nu = rng.uniform((4,))\nf = theano.function([], u)\n"
    )
    new, findings = mig(src)
    assert "rng = MRG_RandomStreams(seed=12345)" in new and "other = MRG_RandomStreams(7)" in new
    assert lines_of(findings, "changed") == [3]
    draws = []
    for _ in range(2):
        ns: dict = {}
        exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
        draws.append(ns["f"]())
    assert (draws[0] == draws[1]).all()
    from symtrain.migrate.runtime import MRG_RandomStreams

    a, b = MRG_RandomStreams().uniform((3,)), MRG_RandomStreams().uniform((3,))
    assert (a.eval() == b.eval()).all()


# ---- print((...)) double parentheses --------------------------------------------------------------------
def test_print_statements_have_single_parentheses():
    new, findings = mig(
        "import theano\nprint ('a %d' % 3)\nprint ('loss', 2)\nprint (x)\nprint 'x', 1\nprint ((1, 2))\n"
    )
    assert new.splitlines()[1:] == [
        "print('a %d' % 3)",
        "print('loss', 2)",
        "print (x)",
        "print('x', 1)",
        "print ((1, 2))",
    ]
    assert lines_of(findings, "changed") == [3]


# ---- 9. conv2d with a kernel size known only at run time -----------------------------------------------
@pytest.mark.parametrize(
    "call", ["T.nnet.conv2d(x, w)", "conv.conv2d(x, w)", "conv2d(x, w, border_mode='full')"]
)
def test_conv2d_with_a_run_time_kernel_size_migrates_and_runs(call):
    import numpy as np

    new, findings = mig(f"""\
        import theano
        import theano.tensor as T
        from theano.tensor.nnet import conv, conv2d
        x, w = T.tensor4('x'), T.tensor4('w')
        f = theano.function([x, w], {call}, mode='FAST_COMPILE')
        """)
    assert not [f for f in findings if f[1] == "untranslated"]
    ns: dict = {}
    exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 1, 5, 5)).astype(
        ns["theano" if "theano" in ns else "pytensor"].config.floatX
    )
    ker = rng.standard_normal((3, 1, 2, 2)).astype(img.dtype)
    out = ns["f"](img, ker)
    full = "full" in call
    assert out.shape == ((2, 3, 6, 6) if full else (2, 3, 4, 4))
    flipped = ker[:, :, ::-1, ::-1]  # Theano's conv2d flips the kernel (a true convolution)
    padded = np.pad(img, ((0, 0), (0, 0), (1, 1), (1, 1))) if full else img
    ref = np.array(
        [
            [
                [
                    [np.sum(padded[b, 0, i : i + 2, j : j + 2] * flipped[k, 0]) for j in range(out.shape[3])]
                    for i in range(out.shape[2])
                ]
                for k in range(3)
            ]
            for b in range(2)
        ]
    )
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_names_rebound_in_a_function_are_not_the_import():
    """A parameter or local variable that shadows an imported module name is not rewritten as that module;
    a function-level import still is."""
    new, _ = mig(
        "import theano.tensor as T\nfrom theano.tensor.nnet import conv\n"
        "def f(x, conv=None):\n    return conv.conv2d(x)\n"
        "def g(x):\n    T = x\n    return T.nnet.sigmoid\n"
        "def h():\n    import theano.tensor as T\n    return T.nnet.sigmoid(1)\n"
        "z = T.nnet.sigmoid(conv.conv2d(1, 2))\n"
    )
    lines = new.splitlines()
    assert "    return conv.conv2d(x)" in lines and "    return T.nnet.sigmoid" in lines
    assert "    return T.sigmoid(1)" in lines and "z = T.sigmoid(conv.conv2d(1, 2))" in lines


def test_cli_report_lists_every_behaviour_changing_rewrite(tmp_path, capsys):
    """The report names file:line for each silent rewrite (latin1, open mode, round, list(), //, print)."""
    from symtrain.cli import main

    script = tmp_path / "old.py"
    script.write_text(
        "import cPickle\nimport theano.tensor as T\nfrom theano.tensor.signal import downsample\n"
        "def load(p):\n    f = open(p)\n    return cPickle.load(f)\n"
        "def pairs(a, b):\n    return zip(a, b)\n"
        "r = T.round(T.vector())\nn = len(pairs([1], [2])) / 2\nprint ('n', n)\n"
    )
    assert main(["migrate", str(script)]) == 0
    report = capsys.readouterr().err
    changed = {int(line.split(":")[1]) for line in report.splitlines() if "[changed]" in line}
    assert changed == {5, 6, 8, 9, 10}, report
    assert "old.py:11: [review] `print (a, b)` printed a tuple" in report  # parses as Python 3: left
    assert "symtrain migrate: 5 changed, 1 review" in report
    script.write_text("import cPickle\nprint ('n', 1)\nprint 'x'\n")  # not Python 3: the fixer rewrites it
    assert main(["migrate", str(script)]) == 0
    report = capsys.readouterr().err
    assert "old.py:2: [changed] `print (a, b)` printed a tuple" in report
