"""``symtrain train SCRIPT`` and ``symtrain plot RUN_DIR``.

A training script is a Python file defining ``build(train, valid)``: it gets the training ChunkStream and
the validation ChunkStream (or None), builds the model from ``train.batch(...)`` and returns either a
compiled Step or a dict ``{"step": step, "validation": evaluator, **fit keyword arguments}``. It may
define ``STREAM = {"batch_size": ..., "chunk_rows": ..., ...}`` (ChunkStream defaults the command line
overrides) and ``FIT = {...}`` (fit defaults). The files in ``examples/`` are such scripts.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

from symtrain.errors import ConfigError

log = logging.getLogger("symtrain.train")

STREAM_KEYS = ("batch_size", "chunk_rows", "policy", "mix", "seed", "loader")


def load_script(path: str | Path) -> Any:
    """Import a training script as a module (ConfigError if missing or without ``build``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"script {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"symtrain_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "build", None)):
        raise ConfigError(f"script {str(path)!r} defines no build(train, valid) function")
    return module


def run_script(script: str | Path, data: str | Path, run_dir: str | Path, *, valid: str | Path | None = None,
               epochs: int | None = None, resume: bool = False, overwrite: bool = False,
               stream_options: dict | None = None, fit_options: dict | None = None) -> Any:
    """What ``symtrain train`` does, callable from Python: returns the History."""
    from symtrain.distributed.comm import world_size
    from symtrain.stream import ChunkStream
    from symtrain.train.fit import fit

    module = load_script(script)
    sopts = {"batch_size": 128, "chunk_rows": 16384, **getattr(module, "STREAM", {}),
             **{k: v for k, v in (stream_options or {}).items() if v is not None}}
    fopts = {"epochs": 10, **getattr(module, "FIT", {})}
    if epochs is not None:
        fopts["epochs"] = epochs
    with ChunkStream(data, **sopts, name="train") as train:
        vstream = None
        try:
            if valid is not None:
                vstream = ChunkStream(valid, batch_size=sopts["batch_size"],
                                      chunk_rows=sopts["chunk_rows"], policy="sequential", drop_last=False,
                                      name="valid")
            built = module.build(train, vstream)
            if not isinstance(built, dict):
                built = {"step": built}
            if "step" not in built:
                raise ConfigError(f"{script}: build() must return a Step or a dict with a 'step' key")
            kwargs = {**fopts, **{k: v for k, v in built.items() if k != "step"}, **(fit_options or {})}
            if world_size() > 1:  # started by mpiexec (or --ranks): train data-parallel over its ranks
                kwargs.setdefault("distributed", True)
            return fit(built["step"], train, run_dir=run_dir, resume=resume, overwrite=overwrite, **kwargs)
        finally:
            if vstream is not None:
                vstream.close()


def _train(args: argparse.Namespace) -> int:
    from symtrain.distributed.comm import world_rank, world_size

    if args.ranks is not None and world_size() > 1 and args.ranks != world_size():
        raise ConfigError(f"--ranks {args.ranks} inside an MPI job of {world_size()} ranks: drop --ranks "
                          "when starting mpiexec yourself")
    if args.ranks is not None and args.ranks != 1 and world_size() == 1:
        from symtrain.distributed.launch import launch, without_ranks

        return launch(args.ranks, without_ranks(args.argv))
    fit_options: dict[str, Any] = {}
    if args.checkpoint_every_steps is not None:
        fit_options["checkpoint_every_steps"] = args.checkpoint_every_steps
    if args.quiet:
        fit_options["progress"] = False
    history = run_script(args.script, args.data, args.run_dir, valid=args.valid, epochs=args.epochs,
                         resume=args.resume, overwrite=args.overwrite,
                         stream_options={k: getattr(args, k) for k in STREAM_KEYS}, fit_options=fit_options)
    if world_rank() != 0:  # rank 0 reports for the whole job
        return 130 if history.interrupted else 0
    if history.interrupted:
        ranks = f" --ranks {world_size()}" if world_size() > 1 else ""
        print(f"interrupted; resume with: symtrain train {args.script} --data {args.data} --run-dir "
              f"{args.run_dir} --resume{ranks}", file=sys.stderr)
        return 130
    best = history.best
    print(f"{history.stop_reason}: {history.global_step} steps, {len(history.epochs)} epochs; run directory "
          f"{args.run_dir}" + (f"; best {best['score']:.6g} at step {best['step']}" if best else ""))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from symtrain.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the model a script defines over a dataset, with checkpoints",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("script", help="Python file defining build(train, valid)")
    p.add_argument("--data", required=True, help="training dataset directory")
    p.add_argument("--valid", help="validation dataset directory (streamed sequentially)")
    p.add_argument("--run-dir", required=True, help="checkpoints, metrics.jsonl/csv and curves go here")
    p.add_argument("--epochs", type=int, help="total epochs of the run (default: the script's FIT or 10)")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    p.add_argument("--overwrite", action="store_true", help="discard checkpoints already in --run-dir")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--chunk-rows", type=int, dest="chunk_rows", help="rows per device buffer fill")
    p.add_argument("--policy", choices=("shuffle", "sequential"))
    p.add_argument("--mix", type=int, help="blocks mixed per buffer when shuffling")
    p.add_argument("--seed", type=int)
    p.add_argument("--loader", choices=("thread", "process"))
    p.add_argument("--checkpoint-every-steps", type=int, dest="checkpoint_every_steps")
    p.add_argument("--ranks", type=int, metavar="N",
                   help="train data-parallel on N MPI ranks: starts `mpiexec -n N` itself "
                        "(--batch-size is per rank)")
    p.set_defaults(run=_train)

    q = sub.add_parser("plot", help="draw a run's learning curves to a PNG")
    q.add_argument("run_dir", help="a run directory written by fit / symtrain train")
    q.add_argument("-o", "--out", help="output PNG (default RUN_DIR/curves.png)")
    q.set_defaults(run=_plot)
