"""``symtrain migrate``: rewrite Theano and Aesara sources (Python 2 ones too) to PyTensor and symtrain.

``migrate_source(text, path)`` returns the new text and the findings (what could not be translated or
needs a human look, with line numbers); ``migrate_paths`` does it for files and directories. The runtime
layer the rewritten code calls lives in ``symtrain.migrate.runtime`` and ``symtrain.nnet``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from symtrain.errors import MigrationError
from symtrain.migrate import py2
from symtrain.migrate.report import Finding, format_report
from symtrain.migrate.transform import rewrite_module


@dataclass
class Result:
    """The outcome for one file: old and new text, whether it was Python 2, and the findings."""

    path: str
    old: str
    new: str
    python2: bool = False
    findings: list[Finding] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.old != self.new


def migrate_source(source: str, path: str = "<string>") -> Result:
    """Rewrite one module's source text; raise MigrationError if it is neither Python 3 nor Python 2."""
    python3_syntax = py2.parses_as_python3(source)
    python2 = not python3_syntax or py2.looks_like_python2(source)
    text = py2.convert(source, path, python3_syntax) if python2 else source
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        raise MigrationError(f"{path}: cannot parse after the Python 2 conversion: {exc}") from exc
    findings: list[Finding] = []
    if python2:
        module, found = py2.fix_division(module, path)
        findings += found
    module, found = rewrite_module(module, path, python2)
    findings += found
    return Result(path, source, module.code, python2, findings)


def iter_python_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """The given files, and every ``*.py`` below the given directories (sorted, hidden dirs skipped)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for sub in sorted(path.rglob("*.py")):
                if not any(part.startswith(".") for part in sub.relative_to(path).parts):
                    yield sub
        elif path.is_file():
            yield path
        else:
            raise MigrationError(f"{path}: no such file or directory")


def migrate_file(path: Path) -> Result:
    """Read and rewrite one file (nothing is written)."""
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        source = path.read_text(encoding="latin-1")
    return migrate_source(source, str(path))


def migrate_paths(paths: Iterable[str | os.PathLike]) -> list[Result]:
    """Rewrite every Python file under ``paths`` in memory."""
    return [migrate_file(p) for p in iter_python_files(paths)]


__all__ = ["Result", "Finding", "migrate_source", "migrate_file", "migrate_paths", "iter_python_files",
           "format_report"]
