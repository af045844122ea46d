"""Shared command line of the example scripts: ``python examples/NAME.py [--data DIR] [--run-dir DIR] ...``.

Without ``--data`` the digits dataset (scikit-learn's real 8x8 digits as 28x28 rows, split into
train/valid/test) is built once into ``--digits`` (default ``digits-data``); an existing directory there
is used as it is and never rebuilt or replaced. A run directory that already holds a run is refused
unless ``--resume`` (continue it, with its stored options) or ``--overwrite`` (start over: deletes only
symtrain's own checkpoints and logs). Each example is also a ``symtrain train`` script:
``symtrain train examples/mlp.py --data D/train --valid D/valid --run-dir R``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any


def digits_data(out: str | Path, rows: int | None) -> Path:
    """``out`` holding the digits build: built when missing; an existing one is used as it is (never
    rebuilt); anything else there is refused with a ConfigError."""
    from symtrain.errors import ConfigError
    from symtrain.storage.digits import build_digits, digits_is_current, read_digits_meta

    out = Path(out)
    if not out.exists():
        return build_digits(out, rows=rows)
    meta = read_digits_meta(out)
    if not isinstance(meta, dict):
        raise ConfigError(
            f"--digits {out}: exists and is not a digits build (no readable digits.json); it is "
            "never rebuilt or replaced: pass --data/--valid for your own datasets, or another --digits"
        )
    have = meta.get("rows")
    if rows is not None and have != rows:
        raise ConfigError(
            f"--digits {out}: holds a digits build with {have or 'the real'} train rows, not "
            f"--rows {rows}; it is never rebuilt: choose another --digits directory"
        )
    if not digits_is_current(out, have, meta.get("seed", 0)):
        raise ConfigError(
            f"--digits {out}: the digits build there is incomplete or from another symtrain "
            "version; it is never rebuilt: remove it yourself or choose another --digits"
        )
    logging.getLogger("symtrain.examples").info("using the digits build in %s as it is", out)
    return out


def _run(script: str, args: argparse.Namespace) -> int:
    from symtrain.train import rundir
    from symtrain.train.commands import OPTIONS_SCHEMA, resolve_run, train_run

    data, valid = args.data, args.valid
    stored = args.resume and (Path(args.run_dir) / rundir.OPTIONS).exists()
    if data is None and not stored:
        digits = digits_data(args.digits, args.rows)
        data, valid = digits / "train", valid or digits / "valid"
    options = resolve_run(script, data, args.run_dir, valid=valid, epochs=args.epochs, resume=args.resume)
    history = train_run(options, args.run_dir, resume=args.resume, overwrite=args.overwrite)
    if history.interrupted:
        again: list[Any] = [sys.executable, sys.argv[0], "--run-dir", args.run_dir]
        effective = rundir.load_options(Path(args.run_dir), OPTIONS_SCHEMA) or options
        again += ["--data", effective["data"]] + (
            ["--valid", effective["valid"]] if effective["valid"] else []
        )
        print(
            "interrupted; resume with: " + " ".join(shlex.quote(str(a)) for a in again) + " --resume",
            file=sys.stderr,
        )
        return 130
    best = history.best
    print(
        f"{history.stop_reason} after {history.global_step} steps; run directory {args.run_dir}"
        + (f"; best validation {best['metrics']} at epoch {best['epoch']}" if best else "")
    )
    return 0


def main(script: str, epochs: int) -> None:
    """Parse the example's command line, train, exit 0 / 130 (interrupted) / 2 (one-line error)."""
    from symtrain.errors import SymtrainError

    ap = argparse.ArgumentParser(description=f"train {Path(script).stem} over a streamed dataset")
    ap.add_argument("--data", help="training dataset (default: DIGITS/train)")
    ap.add_argument("--valid", help="validation dataset (default: DIGITS/valid when --data is not given)")
    ap.add_argument(
        "--digits",
        default="digits-data",
        help="where the digits data is built when missing (an existing build is used as it is)",
    )
    ap.add_argument(
        "--rows", type=int, default=None, help="train rows for the digits build (default: real only)"
    )
    ap.add_argument("--run-dir", default=f"runs/{Path(script).stem}")
    ap.add_argument("--epochs", type=int, default=None, help=f"total epochs of the run (default {epochs})")
    ap.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir with its stored options"
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in --run-dir (deletes only symtrain's own checkpoints and logs)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = _run(script, args)
    except SymtrainError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        code = 130
    except OSError as exc:  # the system refused (full disk, read-only directory): one line, as symtrain's CLI
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{Path(sys.argv[0]).name}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        code = 2
    sys.exit(code)
