"""``make demo``: build the real digits demo data (streamed in many chunks), show ``symtrain inspect``,
then train an MLP on it out of core and report the test accuracy on the real held-out images.

``python -m symtrain.demo --out DIR``. A DIR that already holds a complete build with the same
parameters is reused. Later steps (training) call ``build_demo_data`` and go on from its result.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEMO_ROWS = 80_000  # ~240 MiB of train rows: many 16k-row chunks for the stream
DEMO_SEED = 0
DEMO_EPOCHS = 4


def build_demo_data(out: Path, rows: int = DEMO_ROWS, seed: int = DEMO_SEED) -> Path:
    """OUT/data/{train,valid,test}: the digits datasets, rebuilt only when missing, invalid or different."""
    from symtrain.storage.digits import build_digits, digits_is_current

    out = Path(out)
    data = out / "data"
    if digits_is_current(data, rows, seed):
        print(f"demo data: reusing {data} ({rows} train rows, seed {seed})")
        return data
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    build_digits(data, rows=rows, seed=seed, overwrite=data.exists())
    print(f"demo data: built {data} ({rows} train rows, seed {seed}) in {time.perf_counter() - t:.1f} s")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    from symtrain.cli import main as cli_main
    from symtrain.errors import SymtrainError

    ap = argparse.ArgumentParser(prog="python -m symtrain.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo-run"), help="run directory (default demo-run)")
    ap.add_argument("--rows", type=int, default=DEMO_ROWS, help=f"train rows (default {DEMO_ROWS})")
    ap.add_argument("--seed", type=int, default=DEMO_SEED, help="data seed (default 0)")
    ap.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"training epochs (default {DEMO_EPOCHS})")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted demo training run")
    args = ap.parse_args(argv)
    try:
        data = build_demo_data(args.out, args.rows, args.seed)
    except SymtrainError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"\n$ symtrain inspect {data}")
    sys.stdout.flush()
    rc = cli_main(["inspect", str(data)])
    if rc:
        return rc
    return train_demo(data, args.out / "run", args.epochs, args.resume, args.out)


def train_demo(data: Path, run_dir: Path, epochs: int, resume: bool, out: Path) -> int:
    """Train the MLP out of core (symtrain.train.digits_demo) and print the test accuracy and where things are."""
    from symtrain.errors import SymtrainError
    from symtrain.train.digits_demo import train_digits

    print(f"\ntraining a 784-256-10 MLP out of core for {epochs} epochs (Adam, validation, checkpoints) ...")
    sys.stdout.flush()
    t = time.perf_counter()
    try:
        r = train_digits(data, run_dir, epochs=epochs, resume=resume)
    except SymtrainError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    h = r["history"]
    if h.interrupted:
        print(f"\ninterrupted; resume with: python -m symtrain.demo --out {out} --resume", file=sys.stderr)
        return 130
    acc = r["test_accuracy"]
    print(f"\ntest accuracy: {acc:.2%} on the {r['test_rows']} real held-out digit images "
          f"({'meets' if acc >= 0.95 else 'BELOW'} the 95% target)")
    print(f"trained {r['rows_trained']:,} rows in {len(h.epochs)} epochs; best validation loss "
          f"{h.best['score']:.4f} (epoch {h.best['epoch'] + 1}); compile {r['timings']['compile_s']:.0f} s, "
          f"training {r['timings']['fit_s']:.0f} s, total {time.perf_counter() - t:.0f} s")
    print(f"run directory: {run_dir} (checkpoints/, metrics.jsonl, metrics.csv)")
    print(f"learning curves: {r['plot']}" if r["plot"] else "learning curves: not drawn (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
