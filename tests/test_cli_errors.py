"""Issue 14 rules 8 and 9 for the command line: a system failure (full disk, read-only directory, a vanished
file) is one line and exit status 2 while real bugs keep their traceback, and help texts are whole
sentences."""

from __future__ import annotations

import argparse
import errno
import re
from pathlib import Path

import numpy as np
import pytest

from symtrain import cli


def _fail_with(monkeypatch, exc: BaseException) -> None:
    """Make ``symtrain inspect`` raise ``exc`` from inside its run function."""
    import symtrain.storage.inspect as inspect_mod

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(inspect_mod, "inspect_path", boom)


@pytest.mark.parametrize("exc, pattern", [
    (OSError(errno.ENOSPC, "No space left on device", "runs/a/curves.png"),
     r"^symtrain inspect: error: runs/a/curves.png: No space left on device \(the disk is full: free space"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/metrics.csv"),
     r"^symtrain inspect: error: /mnt/ro/metrics.csv: Read-only file system \(the file system is "
     r"read-only\)"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), r"/root/x: Permission denied \(-v shows"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"),
     r"error: a -> b: Invalid cross-device"),
    (MemoryError(), r"error: out of memory"),
])
def test_system_failures_are_one_line_and_exit_2(monkeypatch, capsys, tmp_path, exc, pattern):
    _fail_with(monkeypatch, exc)
    assert cli.main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and err.count("\n") == 1 and "Traceback" not in err, err


def test_verbose_shows_the_traceback(monkeypatch, tmp_path):
    _fail_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "x"))
    with pytest.raises(OSError):
        cli.main(["-v", "inspect", str(tmp_path)])


@pytest.mark.parametrize("exc", [TypeError("a bug"), KeyError("k"), AttributeError("a")])
def test_real_bugs_are_not_hidden(monkeypatch, tmp_path, exc):
    _fail_with(monkeypatch, exc)
    with pytest.raises(type(exc)):
        cli.main(["inspect", str(tmp_path)])


def test_a_read_only_target_is_one_line(tmp_path, capsys):
    """A dataset written under /proc (no new entries allowed, even for root) fails in one line, exit 2."""
    np.save(tmp_path / "x.npy", np.zeros((10, 2), np.float32))
    assert cli.main(["-q", "convert", str(tmp_path / "x.npy"), "/proc/symtrain-test/ds"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symtrain convert: error: /proc/symtrain-test/ds: cannot be created") and \
        err.count("\n") == 1, err


def _parsers(parser: argparse.ArgumentParser, name: str = "symtrain"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


CUT = re.compile(r"([-,:;(]|\b(e\.g|i\.e|see|and|or|the|a|of|to|with))\s*$")


def test_help_texts_are_whole_sentences():
    """No description or option help ends mid-sentence (a dangling word, comma, hyphen or open bracket)."""
    for name, parser in _parsers(cli.build_parser()):
        texts = [parser.description or ""] + [a.help or "" for a in parser._actions]
        for text in texts:
            assert not CUT.search(text.strip()), f"{name}: help stops mid-sentence: {text!r}"
            assert text.count("(") == text.count(")"), f"{name}: unbalanced brackets in {text!r}"
        if parser.description and "\n" not in parser.description:
            assert parser.description.rstrip().endswith((".", ")")), f"{name}: {parser.description!r}"


def test_doc_summary_keeps_the_whole_first_sentence():
    import symtrain.demo

    summary = cli.doc_summary(symtrain.demo.__doc__)
    assert summary.endswith("held-out images.") and "\n" not in summary and "``" not in summary
    assert cli.doc_summary("One line.\n\nMore.") == "One line."
    assert cli.doc_summary(None) == ""


def test_benchmarks_and_demo_use_whole_sentences():
    root = Path(__file__).resolve().parents[1]
    for path in [root / "symtrain" / "demo.py", *sorted((root / "benchmarks").glob("*.py"))]:
        text = path.read_text(encoding="utf-8")
        assert "__doc__.splitlines()[0]" not in text, f"{path.name}: a description cut at the first line"


def test_a_fifo_as_training_script_is_named_for_what_it_is(tmp_path, capsys):
    import os

    import symtrain as st

    st.write_dataset(tmp_path / "d", {"x": np.zeros((20, 3), np.float32), "y": np.zeros(20, np.int64)})
    os.mkfifo(tmp_path / "s.py")
    assert cli.main(["-q", "train", str(tmp_path / "s.py"), "--data", str(tmp_path / "d"), "--run-dir",
                     str(tmp_path / "r")]) == 2
    assert "is not a regular file" in capsys.readouterr().err
