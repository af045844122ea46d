"""Issue 17 round 2: more snippets of each defect class, written the way Theano 0.7 / 1.0+six tutorial code
looks (keyword `value=`, `seed=None`, augmented assignment, ternaries, helpers that pickle a passed file)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

# the migrate tool's dependencies are not in the Aesara venv (make test-aesara collects every module)
pytest.importorskip("libcst")
pytest.importorskip("fissix")

from symtrain.migrate import migrate_source  # noqa: E402


def mig(src: str, **kw) -> tuple[str, list[tuple[int, str, str]]]:
    """The migrated text (checked idempotent) and the findings as (line, kind, message)."""
    result = migrate_source(textwrap.dedent(src), "s.py", **kw)
    assert migrate_source(result.new, "s.py", **kw).new == result.new, "not idempotent"
    return result.new, [(f.line, f.kind, f.message) for f in sorted(result.findings)]


def changed(findings) -> list[int]:
    return sorted({line for line, k, _ in findings if k == "changed"})


# ---- 4. truth tests: augmented assignment and ternaries are graph evidence -----------------------------
@pytest.mark.parametrize(
    "src, expected, line",
    [
        (
            "import theano.tensor as T\ndef cost(y, reg=None):\n    c = T.mean(y)\n    if reg:\n"
            "        c += reg\n    return c\n",
            "    if reg is not None:",
            4,
        ),
        (
            "import theano.tensor as T\ndef step(x, h0=None):\n    h = h0 if h0 else T.zeros_like(x)\n"
            "    return T.dot(x, h)\n",
            "    h = h0 if h0 is not None else T.zeros_like(x)",
            3,
        ),
        (
            "import theano.tensor as TT\ndef step(x, h0=None):\n    h = TT.zeros_like(x) if not h0 else h0\n"
            "    return h\n",
            "    h = TT.zeros_like(x) if h0 is None else h0",
            3,
        ),
        (
            "import theano.tensor as T\ndef penalty(w, l2=None):\n    if not l2:\n        l2 = 0.0\n"
            "    l2 += T.sum(w ** 2)\n    return l2\n",
            "    if l2 is None:",
            3,
        ),
    ],
)
def test_augmented_and_ternary_graph_uses_rewrite_truth_tests(src, expected, line):
    new, findings = mig(src)
    assert expected in new.splitlines(), new
    assert changed(findings) == [line]


# ---- 8. MRG_RandomStreams(seed=None): Theano refused it; Theano's default seed -------------------------
@pytest.mark.parametrize(
    "call, expected",
    [
        ("MRG_RandomStreams(seed=None)", "MRG_RandomStreams(seed=12345)"),
        ("MRG_RandomStreams(None)", "MRG_RandomStreams(12345)"),
        ("MRG_RandomStreams(seed=None, use_cuda=False)", "MRG_RandomStreams(seed=12345, use_cuda=False)"),
    ],
)
def test_mrg_seed_none_gets_theano_default_seed(call, expected):
    new, findings = mig(
        f"import theano\nfrom theano.sandbox.rng_mrg import MRG_RandomStreams\nsrng = {call}\n"
    )
    assert f"srng = {expected}" in new and changed(findings) == [3]


def test_mrg_seed_parameter_that_is_none_repeats_run_to_run():
    from symtrain.migrate.runtime import MRG_RandomStreams

    def draw(seed=None):
        return MRG_RandomStreams(seed).uniform((3,)).eval()

    assert (draw() == draw()).all() and (draw(None) == MRG_RandomStreams().uniform((3,)).eval()).all()


# ---- 10. out-of-core: shared(value=...) is Theano's keyword for the value ------------------------------
@pytest.mark.parametrize(
    "src, expected",
    [
        (
            "import numpy as np\nimport theano\nmm = np.memmap('x.dat', dtype='float32', mode='r', shape=(8, "
            "3))\nx = theano.shared(value=mm, name='x')\n",
            "x = symtrain.shared(value=mm, name='x')",
        ),
        (
            "import numpy\nimport theano\nclass Data(object):\n    def __init__(self, path):\n"
            "        self.x = theano.shared(name='x', value=numpy.load(path, mmap_mode='r'), borrow=True)\n",
            "        self.x = symtrain.shared(name='x', value=numpy.load(path, mmap_mode='r'), borrow=True)",
        ),
        (
            "import numpy as np\nimport theano\nf = lambda batch_num: np.zeros((4, 2))\n"
            "y = theano.shared(borrow=True, value=lambda batch_num: np.zeros((4, 2)))\n",
            "y = symtrain.shared(borrow=True, value=symtrain.migrate.runtime.batch_chunks("
            "lambda batch_num: np.zeros((4, 2))))",
        ),
    ],
)
def test_out_of_core_value_keyword(src, expected):
    new, findings = mig(src, out_of_core=True)
    assert expected in new.splitlines(), new
    assert changed(findings)[-1] == 4 + ("class" in src)


# ---- 1. an open() passed to a helper that pickles that parameter gets a binary mode --------------------
@pytest.mark.parametrize(
    "src, binary, review",
    [
        (
            """\
            import cPickle
            import theano
            def _dump(f, obj):
                cPickle.dump(obj, f)
            def save(obj, p):
                f = open(p, 'w')
                _dump(f, obj)
                f.close()
            def log(p):
                f = open(p, 'w')
                f.write('x')
            """,
            [6],
            [10],
        ),
        (
            """\
            import cPickle as pickle
            import theano
            class Model(object):
                def _write(self, fh, protocol=-1):
                    pickle.dump(self.params, fh, protocol)
                def save(self, path):
                    with open(path, 'w') as fh:
                        self._write(fh)
                def save_text(self, path):
                    with open(path, 'w') as fh:
                        fh.write('x')
            """,
            [7],
            [10],
        ),
        (
            """\
            import six.moves.cPickle as pickle
            import theano
            def load_from(f):
                return pickle.load(f)
            def load(path):
                return load_from(open(path))
            def load2(path):
                with open(path) as g:
                    return load_from(f=g)
            """,
            [6, 8],
            [],
        ),
        (
            """\
            import cPickle
            import theano
            class A(object):
                def _write(self, fh):
                    cPickle.dump(self.params, fh)
                def save(self, path):
                    with open(path, 'w') as fh:
                        self._write(fh)
            class B(object):
                def _write(self, fh):
                    fh.write('text')
                def save(self, path):
                    with open(path, 'w') as fh:
                        self._write(fh)
            def _write(fh):
                fh.write('x')
            def top(p):
                with open(p, 'w') as fh:
                    _write(fh)
            """,
            [7],
            [13, 18],
        ),
    ],
)
def test_open_passed_to_a_pickling_helper_is_binary(src, binary, review):
    new, findings = mig(src)
    opens = {k: ln for k, ln in enumerate(new.splitlines(), 1) if "open(" in ln}
    assert sorted(k for k, ln in opens.items() if "'wb'" in ln or "'rb'" in ln) == binary, new
    assert sorted({n for n, k, msg in findings if k == "review" and "open()" in msg}) == review
    assert set(binary) <= set(changed(findings))
    assert "import pickle as pickle" not in new


def test_helper_pickled_model_round_trips(tmp_path):
    new, _ = mig("""\
    import cPickle
    import theano
    def _dump(f, obj):
        cPickle.dump(obj, f, -1)
    def save(obj, p):
        f = open(p, 'w')
        _dump(f, obj)
        f.close()
    def load(p):
        with open(p) as f:
            return cPickle.load(f)
    """)
    ns: dict = {}
    exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
    ns["save"]({"W": [1.5, 2.5]}, str(tmp_path / "m.pkl"))
    assert ns["load"](str(tmp_path / "m.pkl")) == {"W": [1.5, 2.5]}


# ---- 6. pipes: code that decodes bytes itself keeps bytes; universal_newlines already chose text -------
@pytest.mark.parametrize(
    "body, expected, kind",
    [
        (
            "    out = subprocess.check_output(['git', 'rev-parse', 'HEAD']).decode('utf-8').strip()",
            "    out = subprocess.check_output(['git', 'rev-parse', 'HEAD']).decode('utf-8').strip()",
            None,
        ),
        (
            "    p = subprocess.Popen(['git', 'log'], stdout=subprocess.PIPE)\n    return p.communicate()[0]"
            ".decode('ascii')",
            "    p = subprocess.Popen(['git', 'log'], stdout=subprocess.PIPE)",
            "review",
        ),
        (
            "    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, "
            "universal_newlines=True)",
            "    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, "
            "universal_newlines=True)",
            None,
        ),
        (
            "    return subprocess.Popen(cmd, 0, None, subprocess.PIPE).communicate('x')",
            "    return subprocess.Popen(cmd, 0, None, subprocess.PIPE, text=True).communicate('x')",
            "changed",
        ),
        (
            "    out = subprocess.check_output('hostname', shell=True).strip()",
            "    out = subprocess.check_output('hostname', shell=True, text=True).strip()",
            "changed",
        ),
    ],
)
def test_python2_pipes_that_handle_bytes_themselves(body, expected, kind):
    new, findings = mig(f"import subprocess\nimport theano\ndef run(cmd):\n{body}\n    print 'done'\n")
    assert expected in new.splitlines(), new
    kinds = {k for n, k, msg in findings if n == 4 and ("text=True" in msg or "bytes" in msg)}
    assert kinds == ({kind} if kind else set()), findings


def test_out_of_core_memmap_bound_to_an_attribute_in_the_same_method(tmp_path):
    src = """\
    import numpy
    import theano
    import theano.tensor as T
    class Data(object):
        def __init__(self, path):
            self.mm = numpy.memmap(path, dtype='float32', mode='r', shape=(8, 3))
            self.x = theano.shared(value=self.mm, name='x')
            self.w = theano.shared(self.other)
    """
    new, findings = mig(src, out_of_core=True)
    assert "        self.x = symtrain.shared(value=self.mm, name='x')" in new.splitlines()
    assert "        self.w = pytensor.shared(self.other)" in new.splitlines()
    assert changed(findings)[-1] == 7
    path = tmp_path / "x.dat"
    np.ones((8, 3), "float32").tofile(path)
    ns: dict = {}
    exec(compile(new.replace("self.w = pytensor.shared(self.other)", "pass"), "s.py", "exec"), ns)  # noqa: S102
    d = ns["Data"](str(path))
    f = ns["symtrain"].function([], ns["T"].sum(d.x))
    assert float(f()) == 24.0


# ---- 2. a loop over a dict's view that adds or removes that dict's keys ---------------------------------
@pytest.mark.parametrize(
    "body, expected",
    [
        ("    for k in d.keys():\n        del d[k]", "    for k in list(d.keys()):"),
        ("    for k, v in d.items():\n        d[k + '_old'] = v", "    for k, v in list(d.items()):"),
        (
            "    for name in self.params.keys():\n        if name.startswith('tmp'):\n"
            "            self.params.pop(name)",
            "    for name in list(self.params.keys()):",
        ),
        ("    for k, v in d.items():\n        d[k] += v", "    for k, v in d.items():"),
        ("    for k in d.keys():\n        e[k] = 1", "    for k in d.keys():"),
    ],
)
def test_dict_changed_while_iterating_its_view(body, expected):
    src = f"from __future__ import print_function\nimport theano\ndef f(self, d, e):\n{body}\n"
    new, findings = mig(src)
    assert expected in new.splitlines(), new
    assert changed(findings) == ([4] if "list(" in expected else [])
    if "self" not in body:
        ns: dict = {}
        exec(compile(new, "s.py", "exec"), ns)  # noqa: S102 - the point of the test
        ns["f"](None, {"a": 1, "b": 2}, {})


# ---- 4. constructors called by their class name; a branch storing p where the other stores a graph ------
@pytest.mark.parametrize(
    "src, expected, line",
    [
        (
            """\
            import theano.tensor as T
            class DA(object):
                def __init__(self, n, input=None):
                    if input:
                        self.x = input
                    self.n = n
            def build():
                x = T.matrix('x')
                return DA(5, input=x)
            """,
            "        if input is not None:",
            4,
        ),
        (
            """\
            import theano.tensor as T
            class DA(object):
                def __init__(self, input=None):
                    if not input:
                        self.x = T.dmatrix(name='input')
                    else:
                        self.x = input
            """,
            "        if input is None:",
            4,
        ),
        (
            """\
            import theano.tensor as T
            class Layer(object):
                def __init__(self, rng, inp=None):
                    self.inp = inp
            def net(rng):
                h = T.tanh(T.matrix())
                return Layer(rng, h)
            def stack(rng, prev=None):
                x = prev if prev else T.matrix('x')
                return Layer(rng, x)
            """,
            "    x = prev if prev is not None else T.matrix('x')",
            9,
        ),
    ],
)
def test_truth_tests_of_constructor_and_branch_parameters(src, expected, line):
    new, findings = mig(src)
    assert expected in new.splitlines(), new
    assert changed(findings) == [line]


# ---- 10. generator methods of the same class --------------------------------------------------------
def test_out_of_core_generator_methods_of_the_class():
    src = """\
    import numpy as np
    import theano
    class Data(object):
        def __init__(self, n):
            self.n = n
            self.x = theano.shared(self.batches())
            self.y = theano.shared(self.batches)
            self.w = theano.shared(self.get(0))
        def batches(self):
            for i in range(self.n):
                yield np.zeros((4, 2), dtype='float32')
        def get(self, i):
            return np.zeros((4, 2), dtype='float32')
    """
    new, findings = mig(src, out_of_core=True)
    lines = new.splitlines()
    assert "        self.x = symtrain.shared(lambda: self.batches())" in lines, new
    assert "        self.y = symtrain.shared(self.batches)" in lines
    assert "        self.w = pytensor.shared(self.get(0))" in lines
    assert changed(findings) == [6, 7]


def test_out_of_core_slice_of_a_memmap_is_reported():
    src = """\
    import numpy as np
    import theano
    data = np.load('x.npy', mmap_mode='r')
    x = theano.shared(data[:, :10], borrow=True)
    y = theano.shared(np.load('y.npy', mmap_mode='r')[1000:])
    z = theano.shared(np.zeros((3, 3))[:2])
    """
    new, findings = mig(src, out_of_core=True)
    assert "symtrain.shared" not in new
    assert sorted(n for n, k, msg in findings if k == "review" and "slice of a memmap" in msg) == [4, 5]


# ---- 1. open() modes Python 3.11 refuses ('U'), and modes that are not literals -------------------------
@pytest.mark.parametrize(
    "body, expected, kinds",
    [
        ("    return cPickle.load(open(p, 'rU'))", "open(p, 'rb')", {"changed"}),
        ("    return cPickle.load(open(p, 'r+'))", "open(p, 'r+b')", {"changed"}),
        ("    return open(p, 'rU').read()", "    return open(p, 'r').read()", set()),
        ("    with open(p, 'U') as fh:\n        return fh.read()", "    with open(p, 'r') as fh:", set()),
        ("    return cPickle.load(open(p, mode))", "open(p, mode)", {"review"}),
    ],
)
def test_open_modes_python3_accepts(body, expected, kinds):
    new, findings = mig(f"import cPickle\nimport theano\ndef f(p, mode='r'):\n{body}\n")
    assert expected in new, new
    assert {k for n, k, msg in findings if "open()" in msg} == kinds
