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
@pytest.mark.parametrize("src, binary, reported", [
    ("""\
     import gzip, pickle
     import theano
     def load(p):
         f = gzip.open(p, 'rb'); return pickle.load(f)
     def report(p, lines):
         f = open(p, 'w'); f.write('\\n'.join(lines))
     """, [], [6]),
    ("""\
     import pickle
     import theano
     def save(p, obj):
         with open(p, 'w') as f:
             pickle.dump(obj, f)
     def log(p, text):
         with open(p, 'w') as f:
             f.write(text)
     """, [4], [7]),
    ("""\
     import pickle
     import theano
     f = open('log.txt', 'w')
     def load(p):
         with open(p) as f:
             return pickle.load(f)
     """, [5], [3]),
    ("""\
     import pickle
     import theano
     def both(a, b):
         f = open(a, 'w')
         f.write('header')
         f.close()
         f = open(b)
         return pickle.load(f)
     """, [7], [4]),
    ("""\
     import gzip, pickle
     import theano
     def either(p, gz):
         if gz:
             f = gzip.open(p)
         else:
             f = open(p)
         return pickle.load(f)
     """, [7], []),
    ("""\
     import pickle
     import theano
     def direct(p, obj):
         pickle.dump(obj, open(p, 'w'))
         return pickle.load(file=open(p))
     """, [4, 5], []),
])
def test_open_mode_follows_the_binding(src, binary, reported):
    new, findings = mig(src)
    changed_opens = [n for n, line in enumerate(new.splitlines(), 1)
                     if "open(" in line and ("'wb'" in line or "'rb'" in line) and "gzip" not in line]
    assert changed_opens == binary
    assert [line for line, k, m in findings if k == "changed" and "binary mode" in m] == binary
    assert [line for line, k, m in findings if k == "review" and "open()" in m] == reported


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
