"""``symtrain migrate PATH...``: show (``--diff``), apply (``--write``) or check (``--check``) the rewrite."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from symtrain.atomic import write_file_atomic
from symtrain.errors import MigrationError

if TYPE_CHECKING:  # the migrate modules import libcst: loaded only when the command runs
    from symtrain.migrate.core import Result


def register(subparsers) -> None:
    """Add the ``migrate`` subcommand."""
    p = subparsers.add_parser(
        "migrate",
        help="rewrite Theano/Aesara sources to PyTensor",
        description="Rewrite Theano and Aesara sources (Python 2 included) to PyTensor and symtrain. "
        "Prints a unified diff by default, then a report (file:line) of what needs a human and "
        "of every rewrite that can change behaviour.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (searched for *.py)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--diff", action="store_const", dest="mode", const="diff", help="print a unified diff (the default)"
    )
    mode.add_argument(
        "--write",
        action="store_const",
        dest="mode",
        const="write",
        help="rewrite the files in place (keeping FILE.bak unless --no-backup)",
    )
    mode.add_argument(
        "--check",
        action="store_const",
        dest="mode",
        const="check",
        help="exit 1 if any file would change, listing those files (for CI); nothing is written",
    )
    p.add_argument("--no-backup", action="store_true", help="with --write: do not keep FILE.bak")
    p.add_argument("--no-report", action="store_true", help="do not print the report")
    p.add_argument(
        "--out-of-core",
        action="store_true",
        help="also stream memmaps, generator-backed data and tutorial-style shared_dataset "
        "variables through symtrain.shared where that is safe (see docs/migration.md); "
        "reported otherwise",
    )
    p.set_defaults(run=run, mode="diff")


def _write(path: Path, result: Result, backup: bool, written: int) -> None:
    """Write FILE.bak (if asked) and FILE, each atomically (a full disk or a read-only directory leaves the
    old file whole); an OSError becomes one MigrationError line (exit 2) that says what was left as it was."""
    try:
        mode = path.stat().st_mode & 0o7777
        if backup:
            bak = path.with_name(path.name + ".bak")
            write_file_atomic(bak, result.old.encode(result.encoding))
            os.chmod(bak, mode)
        write_file_atomic(path, result.new.encode(result.encoding))
        os.chmod(path, mode)
    except OSError as exc:
        done = f"{written} file(s) rewritten before it" if written else "no file rewritten"
        raise MigrationError(
            f"cannot write {exc.filename or path}: {exc.strerror or exc}; {path} is unchanged "
            f"({done}, the rest left as they were)"
        ) from exc


def run(args: argparse.Namespace) -> int:
    from symtrain.migrate import format_report, iter_python_files, migrate_file

    findings = []
    changed = 0
    failed = 0
    written = 0
    files = list(iter_python_files(args.paths))  # a missing path stops the run before anything is written
    for path in files:
        try:
            result = migrate_file(path, out_of_core=args.out_of_core)
        except MigrationError as exc:  # one unparsable file does not stop the others
            failed += 1
            print(f"symtrain migrate: error: {exc}", file=sys.stderr)
            continue
        findings += result.findings
        if not result.changed:
            continue
        changed += 1
        if args.mode == "diff":
            sys.stdout.writelines(
                difflib.unified_diff(
                    result.old.splitlines(keepends=True),
                    result.new.splitlines(keepends=True),
                    fromfile=f"a/{str(path).lstrip('/')}",
                    tofile=f"b/{str(path).lstrip('/')}",
                )
            )
        elif args.mode == "write":
            _write(path, result, not args.no_backup, written)
            written += 1
            print(f"rewrote {path}", file=sys.stderr)
        else:
            print(f"would rewrite {path}")
    if not args.no_report:
        sys.stderr.write(format_report(findings))
    if failed:
        print(f"symtrain migrate: {failed} file(s) could not be parsed (left unchanged)", file=sys.stderr)
    if args.mode == "check":
        print(f"{changed} file(s) need migration" if changed else "all files migrated", file=sys.stderr)
        return 2 if failed else 1 if changed else 0
    return 2 if failed else 0
