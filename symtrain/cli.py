"""The ``symtrain`` command line: one subcommand per job, each defined next to the code it drives.

Each module in COMMAND_MODULES has ``register(subparsers)``, which adds its subcommands with
``set_defaults(run=callable)``; heavy imports happen inside those callables so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from symtrain.errors import SymtrainError

COMMAND_MODULES = [
    "symtrain.storage.commands",
    "symtrain.train.commands",
    "symtrain.migrate.commands",
]


def build_parser() -> argparse.ArgumentParser:
    from symtrain import __version__

    parser = argparse.ArgumentParser(
        prog="symtrain", description="Out-of-core training for PyTensor graphs: datasets, training, migration.")
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
    try:
        return int(args.run(args) or 0)
    except SymtrainError as exc:
        print(f"symtrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"symtrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
