"""The ``symtrain`` command line: one subcommand per job, each defined next to the code it drives.

Each module in COMMAND_MODULES has ``register(subparsers)``, which adds its subcommands with
``set_defaults(run=callable)``; heavy imports happen inside those callables so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from symtrain.errors import SymtrainError

COMMAND_MODULES = [
    "symtrain.storage.commands",
    "symtrain.train.commands",
    "symtrain.migrate.commands",
]


_HINTS = {
    errno.ENOSPC: "the disk is full: free space and rerun",
    errno.EDQUOT: "the disk quota is exceeded: free space and rerun",
    errno.EFBIG: "the file is larger than the file system or a file-size limit allows",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def doc_summary(doc: str | None) -> str:
    """The first paragraph of a docstring on one line, without reST quoting: a whole sentence for --help."""
    first = (doc or "").strip().split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError from the system (full disk, read-only directory, ...): path, reason, hint."""
    reason = exc.strerror or str(exc)
    hint = _HINTS.get(exc.errno or 0)
    where = " -> ".join(os.fsdecode(f) for f in (exc.filename, exc.filename2) if f is not None)
    text = f"{where}: {reason}" if where else reason
    return f"{text} ({hint})" if hint and hint.lower() != reason.lower() else text


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM ends a command as Ctrl-C does: cleanup handlers run (no partial output is left behind)."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def build_parser() -> argparse.ArgumentParser:
    from symtrain import __version__

    parser = argparse.ArgumentParser(
        prog="symtrain",
        description="Out-of-core training for PyTensor graphs: datasets, training, migration.")
    parser.add_argument("--version", action="version", version=f"symtrain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --ranks N` relaunches it under mpiexec
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:  # the graph library's own INFO records (config parsing, compiles) need -vv
        for library in ("pytensor", "aesara", "numba"):
            logging.getLogger(library).setLevel(max(level, logging.WARNING))
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.run(args) or 0)
    except SymtrainError as exc:
        print(f"symtrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"symtrain {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `symtrain inspect ... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (OSError, MemoryError) as exc:  # the system refused (full disk, read-only dir): not a symtrain bug
        if args.verbose:
            raise  # -v shows the traceback
        what = describe_os_error(exc) if isinstance(exc, OSError) else "out of memory"
        print(f"symtrain {args.command}: error: {what} (-v shows where)", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
