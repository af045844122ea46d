"""``make demo``: build the real digits demo data (streamed in many chunks) and show ``symtrain inspect``.

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
    args = ap.parse_args(argv)
    try:
        data = build_demo_data(args.out, args.rows, args.seed)
    except SymtrainError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"\n$ symtrain inspect {data}")
    sys.stdout.flush()
    return cli_main(["inspect", str(data)])


if __name__ == "__main__":
    sys.exit(main())
