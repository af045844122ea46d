"""The storage subcommands: ``datasets digits``, ``convert``, ``inspect``, ``shuffle``.

Heavy imports (numpy, scikit-learn, numba, h5py) happen inside the run functions so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import sys


def _size(text: str) -> int:
    """'512M', '2G', '1048576' -> bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 512M, 2G)") from None


def _digits(args: argparse.Namespace) -> int:
    from symtrain.storage.digits import build_digits

    out = build_digits(args.out, rows=args.rows, seed=args.seed, overwrite=args.overwrite,
                       progress=not args.quiet)
    print(f"wrote {out}/train, {out}/valid, {out}/test")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from symtrain.storage.convert import convert

    header = {"auto": None, "yes": True, "no": False}[args.header]
    out = convert(args.inputs, args.out, dtype=args.dtype, label_column=args.label_column, header=header,
                  delimiter=args.delimiter, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from symtrain.storage.inspect import format_inspection, inspect_path

    reports = inspect_path(args.path, stats=not args.no_stats, check=args.check, verify=args.verify,
                           progress=not args.quiet and not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    else:
        print("\n".join(format_inspection(r) for r in reports))
    failed = any(r.get("nonfinite") for r in reports) or any(not r["verify"]["ok"] for r in reports
                                                             if "verify" in r)
    return 1 if failed else 0


def _shuffle(args: argparse.Namespace) -> int:
    from symtrain.storage.shuffle import shuffle_dataset

    out = shuffle_dataset(args.input, args.out, args.seed, memory_limit=args.memory, overwrite=args.overwrite,
                          progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the storage subcommands to the ``symtrain`` parser."""
    p = sub.add_parser("datasets", help="build ready-made datasets (digits)")
    dsub = p.add_subparsers(dest="dataset", metavar="DATASET")
    d = dsub.add_parser("digits",
                        help="scikit-learn's real handwritten digits as 28x28 train/valid/test datasets",
                        description="Write OUT/train, OUT/valid, OUT/test (x float32[784], y int64) from "
                        "scikit-learn's 1797 bundled digit images; --rows enlarges train with distorted "
                        "copies.")
    d.add_argument("out", help="output directory")
    d.add_argument("--rows", type=int, default=None, help="train rows (default: the real train images only)")
    d.add_argument("--seed", type=int, default=0, help="split and distortion seed (default 0)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing digits directory")
    d.set_defaults(run=_digits)
    p.set_defaults(run=lambda args: (p.print_help(), 2)[1])

    c = sub.add_parser("convert", help="convert .npy/.npz, mnist.pkl.gz pickles, CSV or HDF5 to a dataset",
                       description="Convert user data to a symtrain dataset with bounded memory. Several "
                       "inputs are .npy files, one per field (NAME=PATH, or named by file stem); a single "
                       ".npy becomes field x. A Theano-tutorial pickle becomes OUT/train, OUT/valid, "
                       "OUT/test.")
    c.add_argument("inputs", nargs="+", metavar="IN", help="input file(s)")
    c.add_argument("out", metavar="OUT", help="output dataset directory")
    c.add_argument("--dtype", default=None,
                   help="store as: one dtype for every float field (float32), or per field x:float32,y:int32")
    c.add_argument("--label-column", default=None,
                   help="CSV: column index or header name of the label (-> y)")
    c.add_argument("--header", choices=("auto", "yes", "no"), default="auto",
                   help="CSV header line (default auto)")
    c.add_argument("--delimiter", default=None, help="CSV delimiter (default: sniffed)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output")
    c.set_defaults(run=_convert)

    i = sub.add_parser("inspect", help="fields, rows, dtypes, bytes, fingerprint and statistics of a dataset",
                       description="Describe a dataset (or every dataset in a directory such as a digits "
                                   "OUT).")
    i.add_argument("path", help="dataset directory, or a directory of datasets")
    i.add_argument("--check", action="store_true", help="scan for NaN/inf (exit status 1 if found)")
    i.add_argument("--verify", action="store_true",
                   help="recompute the fingerprint from the data (exit status 1 if it differs)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--no-stats", action="store_true", help="skip the statistics pass")
    i.set_defaults(run=_inspect)

    s = sub.add_parser("shuffle", help="write a fully shuffled copy of a dataset with bounded memory")
    s.add_argument("input", metavar="IN", help="input dataset")
    s.add_argument("out", metavar="OUT", help="output dataset")
    s.add_argument("--seed", type=int, required=True, help="permutation seed")
    s.add_argument("--memory", type=_size, default="512M", help="memory budget (default 512M)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    s.set_defaults(run=_shuffle)
