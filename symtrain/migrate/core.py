"""The migration driver: parse, convert Python 2 if needed, rewrite, report (see symtrain.migrate).

``migrate_source(text, path)`` returns the new text and the findings (what could not be translated or
needs a human look, with line numbers); ``migrate_paths`` does it for files and directories. The runtime
layer the rewritten code calls lives in ``symtrain.migrate.runtime`` and ``symtrain.nnet``.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import os
import re
import tokenize
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from symtrain.errors import MigrationError
from symtrain.migrate import py2
from symtrain.migrate.division import fix_division
from symtrain.migrate.oneshot import wrap_one_shot
from symtrain.migrate.report import Finding, format_report
from symtrain.migrate.subproc import fix_pipes
from symtrain.migrate.transform import rewrite_module
from symtrain.migrate.truth import fix_truth_tests

_THEANO_ERA = re.compile(r"^[ \t]*(?:import[ \t]+[^\n#]*\b|from[ \t]+)(?:theano|six)\b", re.MULTILINE)
_ONE_SHOT = re.compile(r"\b(?:zip|map|filter)\s*\(|\.(?:keys|values|items)\s*\(\s*\)")
_NONE_DEFAULT = re.compile(r"=\s*None\s*[,)]")
_LEGACY_WORDS = ("theano", "aesara", "six", "THEANO_FLAGS", "AESARA_FLAGS", ".theanorc")


@dataclass
class Result:
    """The outcome for one file: old and new text, whether it was Python 2, and the findings."""

    path: str
    old: str
    new: str
    python2: bool = False
    findings: list[Finding] = field(default_factory=list)
    encoding: str = "utf-8"

    @property
    def changed(self) -> bool:
        return self.old != self.new


def migrate_source(source: str, path: str = "<string>", out_of_core: bool = False) -> Result:
    """Rewrite one module's source text; raise MigrationError if it is neither Python 3 nor Python 2.

    ``out_of_core=True`` also applies the streaming rewrite of ``shared_dataset`` where it is safe
    (``symtrain.migrate.out_of_core``, rules in docs/out-of-core-legacy.md).
    """
    python3_syntax = py2.parses_as_python3(source)
    python2 = not python3_syntax or py2.looks_like_python2(source)
    if not python2 and not any(word in source for word in _LEGACY_WORDS) and not out_of_core:
        return Result(path, source, source, False, [])  # nothing of Theano, Aesara, six or Python 2
    text = py2.convert(source, path, python3_syntax) if python2 else source
    findings: list[Finding] = py2.fixer_wrappings(source, text, path) if python2 else []
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        raise MigrationError(f"{path}: cannot parse after the Python 2 conversion: {exc}") from exc
    if python2:
        module = py2.fix_file_builtin(module)
        module, found = fix_division(module, path)
        findings += found
        module, found = fix_pipes(module, path)
        findings += found
        if not python3_syntax:
            module, found = py2.fix_print_parens(module, path, py2.converted_lines(source, text))
            findings += found
        else:
            findings += py2.report_tuple_prints(module, path)
    before = module.code
    module, found = rewrite_module(module, path, python2)
    findings += found
    # the passes below see the rewritten module, whose imports may take more or fewer lines: their
    # findings are mapped back to the lines of the file as it was
    renamed = module.code
    later: list[Finding] = []
    theano_era = python2 or bool(_THEANO_ERA.search(source))
    if theano_era and _ONE_SHOT.search(text):
        module, found = wrap_one_shot(module, path)
        later += found
    if theano_era and _NONE_DEFAULT.search(text):  # Aesara variables already refused bool()
        module, found = fix_truth_tests(module, path)
        later += found
    if out_of_core:
        from symtrain.migrate.out_of_core import rewrite_out_of_core

        module, found = rewrite_out_of_core(module, path)
        later += found
    to_old = _line_map(renamed, before)
    later = [dataclasses.replace(f, line=to_old(f.line)) for f in later]
    fixed = {f.line for f in later if f.kind == "changed" and "truth test" in f.message}
    # the generic "`if x:` on a symbolic variable" review is settled where the test was rewritten
    findings = [f for f in findings if not (f.line in fixed and "on a symbolic variable" in f.message)]
    return Result(path, source, module.code, python2, findings + later)


def _line_map(new: str, old: str) -> Callable[[int], int]:
    """Map 1-based line numbers of ``new`` to the matching lines of ``old`` (within a changed block: the
    same offset, clipped to the block)."""
    matcher = difflib.SequenceMatcher(a=old.splitlines(), b=new.splitlines(), autojunk=False)
    table: dict[int, int] = {}
    for _, i1, i2, j1, j2 in matcher.get_opcodes():
        for j in range(j1, j2):
            table[j + 1] = min(i1 + (j - j1), max(i2 - 1, i1)) + 1
    return lambda line: table.get(line, line)


def iter_python_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """The given files, and every ``*.py`` below the given directories (sorted, hidden dirs skipped)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for sub in sorted(path.rglob("*.py")):
                if not any(part.startswith(".") for part in sub.relative_to(path).parts) and sub.is_file():
                    yield sub  # regular files only: reading a FIFO named x.py would block forever
        elif path.is_file():
            yield path
        elif path.exists():
            raise MigrationError(f"{path}: is not a regular file or a directory")
        else:
            raise MigrationError(f"{path}: no such file or directory")


def read_source(path: Path) -> tuple[str, str]:
    """A file's text and its encoding (the PEP 263 coding cookie, or UTF-8; latin-1 if it is not UTF-8)."""
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        encoding = "utf-8"
    try:
        return data.decode(encoding), encoding
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1"), "latin-1"


def migrate_file(path: Path, out_of_core: bool = False) -> Result:
    """Read and rewrite one file (nothing is written)."""
    try:
        source, encoding = read_source(path)
    except OSError as exc:
        raise MigrationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    result = migrate_source(source, str(path), out_of_core=out_of_core)
    result.encoding = encoding
    return result


def migrate_paths(paths: Iterable[str | os.PathLike], out_of_core: bool = False) -> list[Result]:
    """Rewrite every Python file under ``paths`` in memory."""
    return [migrate_file(p, out_of_core) for p in iter_python_files(paths)]


__all__ = [
    "Result",
    "Finding",
    "migrate_source",
    "migrate_file",
    "migrate_paths",
    "iter_python_files",
    "format_report",
]
