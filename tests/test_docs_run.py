"""Every fenced ```python and ```bash/```sh block of README.md and docs/*.md runs as written.

The runnable blocks of one page run in order in one subprocess, in a fresh temporary directory, like a
reader following the page: python blocks share one namespace, shell blocks run with ``bash -e``, and
``symtrain``, ``python`` and ``.venv/bin/...`` resolve to this interpreter's environment. The graph
library compiles with FAST_COMPILE; floatX stays at its default, as a reader's would.

A block immediately preceded by a line ``<!-- docs-test: skip (reason) -->`` is not run (the reason must
be given: it installs, runs for minutes, or needs the reader's own files); one preceded by
``<!-- docs-test: file NAME -->`` is the content of file NAME, written where the page's commands run. A page
with a line
``<!-- docs-test: continues PAGE.md -->`` first runs PAGE.md's blocks in the same session, for pages
that build on the tutorial's objects. ``SETUP`` lists what a page says another command made first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
RUN_LANGS = {"python": "python", "py": "python", "bash": "sh", "sh": "sh", "shell": "sh"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
SKIP = re.compile(r"^<!-- docs-test: skip \((?P<reason>[^)]*\S[^)]*)\) -->$")
CONTINUES = re.compile(r"^<!-- docs-test: continues (?P<page>[\w./-]+\.md) -->$")
FILE = re.compile(r"^<!-- docs-test: file (?P<name>[\w.-]+) -->$")
COMMAND = re.compile(r"^(symtrain (datasets|convert|inspect|shuffle|train|plot|migrate)\b(?!:)|python3? |"
                     r"\.venv/bin/|make |pip )")
TIMEOUT = 600

# What a page says was created before its first block, by a step the test cannot run (e.g. `make demo`).
SETUP = {
    "README.md": "symtrain datasets digits demo-run/data   # what `make demo` writes first (with more rows)",
}


def blocks(page: Path) -> list[tuple[str, int, str, str | None]]:
    """(language, first line number, code, skip reason or None) of every fenced block of ``page``.

    A block marked ``docs-test: file NAME`` comes back with language ``file:NAME``.
    """
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        code = textwrap.dedent("\n".join(line[len(indent):] if line.startswith(indent) else line
                                         for line in lines[i + 1:j]))
        prev = lines[i - 1].strip() if i else ""
        skip, file = SKIP.match(prev), FILE.match(prev)
        out.append((f"file:{file.group('name')}" if file else lang.lower(), i + 1, code,
                    skip.group("reason") if skip else None))
        i = j + 1
    return out


def runnable(page: Path) -> list[tuple[str, str, str]]:
    """(kind, "page:line" label, code) of the blocks the test runs for ``page``, continued pages first."""
    before = continued(page)
    return (runnable(before) if before else []) + own_blocks(page)


def own_blocks(page: Path) -> list[tuple[str, str, str]]:
    """(kind, "page:line" label, code) of ``page``'s own runnable blocks, its SETUP command first."""
    out: list[tuple[str, str, str]] = []
    name = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name
    if name in SETUP:
        out.append(("sh", f"{name}:setup", SETUP[name]))
    for lang, line, code, skip in blocks(page):
        if lang.startswith("file:"):
            out.append(("file", lang[5:], code))
        elif lang in RUN_LANGS and skip is None:
            out.append((RUN_LANGS[lang], f"{name}:{line}", code))
    return out


DRIVER = '''
import subprocess, sys, traceback
blocks = {blocks!r}
ns = {{"__name__": "__main__"}}
for kind, label, code in blocks:
    print(f"--- {{label}} ({{kind}})", flush=True)
    if kind == "file":
        open(label, "w").write(code)
    elif kind == "python":
        try:
            exec(compile(code, label, "exec"), ns)
        except BaseException:
            traceback.print_exc()
            sys.exit(f"FAILED: python block {{label}}")
    else:
        rc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code]).returncode
        if rc:
            sys.exit(f"FAILED: shell block {{label}} exited {{rc}}")
'''


def run_pages(pages: list[Path], tmp: Path) -> subprocess.CompletedProcess:
    """Run the pages' blocks in order in ``tmp`` in one subprocess and return the finished process."""
    todo = [block for page in pages for block in own_blocks(page)]
    (tmp / "driver.py").write_text(DRIVER.format(blocks=todo), encoding="utf-8")
    (tmp / ".venv").symlink_to(Path(sys.prefix))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    for var in ("PYTENSOR_FLAGS", "AESARA_FLAGS"):  # the suite's floatX=float32 must not leak in
        env[var] = "mode=FAST_COMPILE"
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([sys.executable, "driver.py"], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def continued(page: Path) -> Path | None:
    """The page ``page`` continues (its ``continues`` marker), or None."""
    for line in page.read_text(encoding="utf-8").splitlines():
        m = CONTINUES.match(line.strip())
        if m:
            return page.parent / m.group("page")
    return None


def sessions() -> list[list[Path]]:
    """Pages grouped into sessions: a page and, after it, every page that continues it (one subprocess)."""
    heads = [p for p in PAGES if continued(p) is None]
    out = [[p, *(q for q in PAGES if continued(q) == p)] for p in heads]
    return [group for group in out if any(own_blocks(p) for p in group)]


@pytest.mark.parametrize("group", sessions(), ids=lambda g: "+".join(p.relative_to(ROOT).as_posix()
                                                                     for p in g))
def test_page_runs_as_written(group: list[Path], tmp_path: Path) -> None:
    proc = run_pages(group, tmp_path)
    assert proc.returncode == 0, f"{group[0].name}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_markers_are_well_formed(page: Path) -> None:
    """A skip marker gives a reason and sits right above a runnable block; continued pages exist."""
    lines = page.read_text(encoding="utf-8").splitlines()
    starts = {line - 1 for lang, line, _, _ in blocks(page) if lang in RUN_LANGS or lang.startswith("file:")}
    for n, line in enumerate(lines, 1):
        if not line.strip().startswith("<!-- docs-test:"):
            continue
        if line.strip().startswith("<!-- docs-test: skip"):
            assert SKIP.match(line.strip()), f"{page.name}:{n}: skip marker without a (reason)"
            assert n in starts, f"{page.name}:{n}: skip marker not immediately above a python/sh block"
        elif FILE.match(line.strip()):
            assert n in starts, f"{page.name}:{n}: file marker not immediately above a fenced block"
        else:
            m = CONTINUES.match(line.strip())
            assert m, f"{page.name}:{n}: unknown docs-test marker {line.strip()!r}"
            assert (page.parent / m.group("page")).is_file(), f"{page.name}:{n}: no page {m.group('page')}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_commands_are_in_runnable_blocks(page: Path) -> None:
    """A command shown in an unlabeled fence would escape the test: label it ```sh (or ```console for a
    transcript with its output)."""
    for lang, line, code, _ in blocks(page):
        first = next((s.strip() for s in code.splitlines() if s.strip()), "")
        assert lang or not COMMAND.match(first), (
            f"{page.name}:{line}: command in an unlabeled block: {first!r}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pages_stand_alone(page: Path) -> None:
    """The docs never send a reader to notes that are not in the repository."""
    text = page.read_text(encoding="utf-8")
    cited = re.findall(r"\bDESIGN\b(?:\.md)?|\bANCHORS\.md|\bMIGRATION_NOTES\b", text)
    assert not cited, f"{page.name} cites {cited}, which are not in the repository"


def test_block_parser_reads_markers(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("x\n<!-- docs-test: skip (installs) -->\n```sh\nmake "
                    "demo\n```\n\n```python\nprint(1)\n```\n```console\n$ ls\n```\n", encoding="utf-8")
    assert [(lang, line, skip) for lang, line, _, skip in blocks(page)] == [
        ("sh", 3, "installs"), ("python", 7, None), ("console", 10, None)]
    assert [(kind, code) for kind, _, code in runnable(page)] == [("python", "print(1)")]
