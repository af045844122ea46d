"""Shared command line of the example scripts: ``python examples/NAME.py [--data DIR] [--run-dir DIR] ...``.

Without ``--data`` the digits dataset (scikit-learn's real 8x8 digits as 28x28 rows, split into
train/valid/test) is built once into ``--digits`` (default ``digits-data``). Each example is also a
``symtrain train`` script: ``symtrain train examples/mlp.py --data D/train --valid D/valid --run-dir R``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(script: str, epochs: int) -> None:
    from symtrain.train.commands import run_script

    ap = argparse.ArgumentParser(description=f"train {Path(script).stem} over a streamed dataset")
    ap.add_argument("--data", help="training dataset (default: DIGITS/train)")
    ap.add_argument("--valid", help="validation dataset (default: DIGITS/valid when --data is not given)")
    ap.add_argument("--digits", default="digits-data", help="where to build the digits data when needed")
    ap.add_argument("--rows", type=int, default=None, help="train rows for the digits build (default: real only)")
    ap.add_argument("--run-dir", default=f"runs/{Path(script).stem}")
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data, valid = args.data, args.valid
    if data is None:
        from symtrain.storage.digits import build_digits, digits_is_current

        if not digits_is_current(args.digits, args.rows, 0):
            build_digits(args.digits, rows=args.rows, overwrite=True)
        data, valid = Path(args.digits) / "train", Path(args.digits) / "valid"
    history = run_script(script, data, args.run_dir, valid=valid, epochs=args.epochs, resume=args.resume,
                         overwrite=not args.resume)
    best = history.best
    print(f"{history.stop_reason} after {history.global_step} steps; run directory {args.run_dir}"
          + (f"; best validation {best['metrics']} at epoch {best['epoch'] + 1}" if best else ""))
