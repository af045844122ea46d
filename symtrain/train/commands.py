"""``symtrain train SCRIPT`` and ``symtrain plot RUN_DIR``.

A training script is a Python file defining ``build(train, valid)``: it gets the training ChunkStream and
the validation ChunkStream (or None), builds the model from ``train.batch(...)`` and returns either a
compiled Step or a dict ``{"step": step, "validation": evaluator, **fit keyword arguments}``. It may
define ``STREAM = {"batch_size": ..., "chunk_rows": ..., ...}`` (ChunkStream defaults the command line
overrides) and ``FIT = {...}`` (fit defaults). The files in ``examples/`` are such scripts.

The run directory is locked and checked before the script is imported or compiled. The options a run
starts with are stored in RUN/options.json; ``--resume`` reuses every option not given (the script and
``--data`` too), refuses one that would make it another run (another script, batch size, chunk size,
policy, mix or seed) and lets ``--epochs``, ``--valid``, ``--data``, ``--loader`` and
``--checkpoint-every-steps`` override, with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import inspect
import logging
import os
import shlex
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from symtrain.errors import ConfigError, SymtrainError
from symtrain.train import rundir
from symtrain.train.callbacks import Callback

if TYPE_CHECKING:
    from symtrain.train.contracts import TrainerLike

log = logging.getLogger("symtrain.train")

STREAM_KEYS = ("batch_size", "chunk_rows", "policy", "mix", "seed", "loader")
FIXED_ON_RESUME = ("batch_size", "chunk_rows", "policy", "mix", "seed")  # a resumed run cannot change these
FROM_COMMAND_LINE = ("run_dir", "resume", "overwrite")  # fit arguments a script may not set
OPTIONS_SCHEMA = {
    "script": (str,),
    "data": (str,),
    "valid": (str, type(None)),
    "epochs": (int,),
    "stream": (dict,),
    "checkpoint_every_steps": (int, type(None)),
    "ranks": (int, type(None)),  # MPI ranks of the run's last start (batch_size is per rank); None: 1
}
DEFAULT_STREAM = {"batch_size": 128, "chunk_rows": 16384}
DEFAULT_EPOCHS = 10


def load_script(path: str | Path) -> Any:
    """Import a training script as a module; ConfigError if it is missing, not a file, fails to import,
    or defines no ``build``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"script {str(path)!r} is a directory; name the Python file defining build(train, valid)"
        )
    if not path.is_file():
        if path.exists():  # a FIFO or device: importing it would block or read garbage
            raise ConfigError(f"script {str(path)!r} is not a regular file; name the Python file defining "
                              "build(train, valid)")
        raise ConfigError(f"script {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"symtrain_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except SymtrainError:
        raise
    except Exception as exc:
        raise ConfigError(f"script {str(path)!r} failed to load: {_describe(exc)}") from exc
    if not callable(getattr(module, "build", None)):
        raise ConfigError(f"script {str(path)!r} defines no build(train, valid) function")
    return module


def _describe(exc: BaseException) -> str:
    """``Type: message`` plus where in the user's code it happened (the deepest frame outside symtrain and
    installed libraries, e.g. the script's line), for a one-line error."""
    where = ""
    paths = sysconfig.get_paths()
    library = (str(Path(__file__).parent.parent), paths["purelib"], paths["platlib"], paths["stdlib"])
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith(library) and not name.startswith("<"):
            where = f" (at {name}:{tb.tb_lineno})"
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" (at {exc.filename}:{exc.lineno})"
    log.debug("the script raised", exc_info=exc)
    return f"{type(exc).__name__}: {exc}{where}; `symtrain -vv train ...` logs the traceback"


def _keywords(fn: Any, skip: tuple[str, ...]) -> list[str]:
    return [
        n
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and n not in skip)
    ]


def _check_keys(where: str, what: str, given: Any, known: list[str], reserved: tuple[str, ...] = ()) -> dict:
    """ConfigError naming ``where`` for a non-dict, a reserved key or an unknown key (with a close match)."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: {what} must be a dict, got {type(given).__name__}")
    for key in given:
        if key in reserved:
            raise ConfigError(
                f"{where}: {what} sets {key!r}, which comes from the command line (--run-dir, "
                "--resume, --overwrite); remove it"
            )
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: {what} has an unknown key {key!r}{hint}; known keys: {', '.join(known)}"
            )
    return dict(given)


def _stream_keys() -> list[str]:
    from symtrain.stream import ChunkStream

    return [k for k in _keywords(ChunkStream.__init__, ("self", "dataset_or_path")) if k != "name"]


def _fit_keys() -> list[str]:
    from symtrain.train.fit import fit

    return [k for k in _keywords(fit, ("step", "stream", "epochs")) if k not in FROM_COMMAND_LINE] + [
        "epochs"
    ]


def _same_path(a: Any, b: Any) -> bool:
    if not isinstance(a, str | os.PathLike) or not isinstance(b, str | os.PathLike):
        return a is b
    return Path(a).resolve() == Path(b).resolve()


def _abs(p: Any) -> Any:
    """An absolute path string (stored options work from any directory); a Dataset object stays as it is."""
    return str(Path(p).absolute()) if isinstance(p, str | os.PathLike) else p


def resolve_run(
    script: str | Path | None,
    data: str | Path | None,
    run_dir: str | Path,
    *,
    valid: str | Path | None = None,
    epochs: int | None = None,
    resume: bool = False,
    stream_options: Mapping[str, Any] | None = None,
    checkpoint_every_steps: int | None = None,
) -> dict[str, Any]:
    """The options a run trains with: those given, completed on ``resume`` from the run's stored options
    (RUN/options.json). A given option that would make the resumed run a different run (script, batch size,
    chunk size, policy, mix, seed) is refused; ``epochs``, ``valid``, ``data``, ``loader`` and
    ``checkpoint_every_steps`` override the stored ones, logged. ``None`` means "not given"."""
    run_dir = Path(run_dir)
    given_stream = {k: v for k, v in (stream_options or {}).items() if v is not None}
    for name, value in (("epochs", epochs), ("checkpoint_every_steps", checkpoint_every_steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            flag = "--" + name.replace("_", "-")  # checked before anything is compiled
            raise ConfigError(f"{flag} must be an integer >= 1, got {value!r}")
    stored = rundir.load_options(run_dir, OPTIONS_SCHEMA) if resume and run_dir.is_dir() else None
    if stored is not None:
        _check_stored(stored, run_dir / rundir.OPTIONS)
    if stored is None:
        if resume:
            log.info(
                "resume: %s holds no stored options (%s); using the options given", run_dir, rundir.OPTIONS
            )
        for name, value in (("a script", script), ("--data", data)):
            if value is None:
                raise ConfigError(
                    f"{name} is required"
                    + (f": {run_dir / rundir.OPTIONS} does not exist to take it from" if resume else "")
                )
        return {
            "script": script,
            "data": data,
            "valid": valid,
            "epochs": epochs,
            "stream": given_stream,
            "checkpoint_every_steps": checkpoint_every_steps,
        }
    where = run_dir / rundir.OPTIONS
    out = dict(stored, stream=dict(stored["stream"]))
    per_rank = _elastic_batch(given_stream, stored, where)
    if per_rank is not None:  # another rank count, same global batch: checked, not a change of the run
        given_stream.pop("batch_size", None)
    if script is not None and not _same_path(script, stored["script"]):
        raise ConfigError(
            f"--resume: the script {str(script)!r} is not the run's {stored['script']!r} (stored in "
            f"{where}); a resumed run keeps its script: drop it or start a new run"
        )
    for key in FIXED_ON_RESUME:
        old = stored["stream"].get(key)
        if key in given_stream and old is not None and given_stream[key] != old:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"--resume: {flag} {given_stream[key]} differs from the run's {old} (stored in "
                f"{where}); a resumed run keeps its {key.replace('_', ' ')}: drop {flag} or start a "
                "new run (--overwrite, or another --run-dir)"
            )
    out["stream"].update(given_stream)
    if per_rank is not None:
        out["stream"]["batch_size"] = per_rank
    for key, value, show in (
        ("data", data, "--data"),
        ("valid", valid, "--valid"),
        ("epochs", epochs, "--epochs"),
        ("checkpoint_every_steps", checkpoint_every_steps, "--checkpoint-every-steps"),
    ):
        if (
            value is None
            or value == stored[key]
            or key in ("data", "valid")
            and stored[key] is not None
            and _same_path(value, stored[key])
        ):
            continue
        log.warning("--resume: %s %s overrides the run's %s (stored in %s)", show, value, stored[key], where)
        out[key] = value
    return out


STORED_BOUNDS = {"epochs": 1, "ranks": 1, "checkpoint_every_steps": 1}
STREAM_BOUNDS = {"batch_size": 1, "chunk_rows": 1, "mix": 1, "seed": 0}


def _check_stored(stored: Mapping[str, Any], where: Path) -> None:
    """Bounds of the stored options (their types are checked by ``load_options``): ConfigError naming the
    file and the field, so a tampered options.json never reaches the stream or fit."""
    fields = [(k, stored.get(k), lo) for k, lo in STORED_BOUNDS.items()]
    fields += [(f"stream.{k}", stored["stream"].get(k), lo) for k, lo in STREAM_BOUNDS.items()]
    for name, value, lo in fields:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= 2**53
        ):
            raise ConfigError(f"{where}: field {name!r} must be an integer >= {lo}, got {value!r}")
    for key in stored["stream"]:
        if key not in STREAM_KEYS:
            raise ConfigError(
                f"{where}: field 'stream' has an unknown key {key!r}; known: {', '.join(STREAM_KEYS)}"
            )
    for key in ("policy", "loader"):
        if stored["stream"].get(key) is not None and not isinstance(stored["stream"][key], str):
            raise ConfigError(
                f"{where}: field 'stream.{key}' must be a string, got {stored['stream'][key]!r}"
            )


def _elastic_batch(given: Mapping[str, Any], stored: Mapping[str, Any], where: Path) -> int | None:
    """The per-rank batch of a run resumed on another number of MPI ranks (None: same number): the global
    batch (ranks x --batch-size) is kept, so it is derived, or a given one is checked (ConfigError)."""
    from symtrain.distributed.comm import world_size

    ranks, was = world_size(), stored.get("ranks") or 1
    old = stored["stream"].get("batch_size")
    if old is None or ranks == was:
        return None
    total = old * was
    if "batch_size" not in given:
        if total % ranks:
            raise ConfigError(
                f"--resume on {ranks} ranks: the run's global batch {total} ({was} ranks x "
                f"{old}, stored in {where}) does not divide among {ranks} ranks"
            )
        return total // ranks
    if given["batch_size"] * ranks != total:
        raise ConfigError(
            f"--resume: --batch-size {given['batch_size']} on {ranks} ranks is a global batch "
            f"of {given['batch_size'] * ranks}, the run's is {total} ({was} ranks x {old}, "
            f"stored in {where}); a resumed run keeps its global batch"
        )
    return int(given["batch_size"])


class _StoreOptions(Callback):
    """Writes RUN/options.json once the run has started (so a refused start leaves the stored ones alone)."""

    def __init__(self, run_dir: Path, options: Mapping[str, Any]):
        self.run_dir, self.options = run_dir, dict(options)

    def on_fit_begin(self, trainer: TrainerLike) -> None:
        rundir.save_options(self.run_dir, self.options)


def train_run(
    options: Mapping[str, Any],
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    fit_options: Mapping[str, Any] | None = None,
) -> Any:
    """Train with resolved ``options`` (see :func:`resolve_run`): lock and check the run dir before the
    script is imported and compiled, build, fit; returns the History. Options not given come from the
    script's STREAM/FIT (or the defaults); the effective ones are stored in RUN/options.json."""
    from symtrain.distributed.comm import world_rank, world_size

    run_dir = Path(run_dir)
    with contextlib.ExitStack() as held:
        if world_rank() == 0:  # the writer takes the lock and checks the run dir before any compiling
            held.enter_context(rundir.session(run_dir, resume, overwrite, check_only=True,
                                               writes=(*rundir.WRITTEN_BY_FIT, rundir.OPTIONS)))
        module = load_script(options["script"])
        return _build_and_fit(
            module,
            options,
            run_dir,
            resume,
            overwrite,
            dict(fit_options or {}),
            writer=world_rank() == 0,
            mpi=world_size() > 1,
        )


def _build_and_fit(
    module: Any,
    options: Mapping[str, Any],
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    fit_options: dict,
    writer: bool,
    mpi: bool,
) -> Any:
    """Open the streams, call the script's build() (its errors become one ConfigError), run fit."""
    from symtrain.distributed.comm import world_size
    from symtrain.stream import ChunkStream
    from symtrain.train.fit import fit

    script = str(options["script"])
    stream_defaults = _check_keys(script, "STREAM", getattr(module, "STREAM", {}), _stream_keys())
    fit_defaults = _check_keys(script, "FIT", getattr(module, "FIT", {}), _fit_keys(), FROM_COMMAND_LINE)
    sopts = {**DEFAULT_STREAM, **stream_defaults, **options["stream"]}
    with ChunkStream(options["data"], **sopts, name="train") as train:
        vstream = None
        try:
            if options["valid"] is not None:
                vstream = ChunkStream(
                    options["valid"],
                    batch_size=sopts["batch_size"],
                    chunk_rows=sopts["chunk_rows"],
                    policy="sequential",
                    drop_last=False,
                    name="valid",
                )
            try:
                built = module.build(train, vstream)
            except SymtrainError:
                raise
            except Exception as exc:
                raise ConfigError(f"{script}: build(train, valid) raised {_describe(exc)}") from exc
            if not isinstance(built, dict):
                built = {"step": built}
            if "step" not in built:
                raise ConfigError(f"{script}: build() must return a Step or a dict with a 'step' key")
            extra = _check_keys(
                script,
                "the dict build() returned",
                {k: v for k, v in built.items() if k != "step"},
                _fit_keys(),
                FROM_COMMAND_LINE,
            )
            kwargs = {"epochs": DEFAULT_EPOCHS, **fit_defaults, **extra, **fit_options}
            kwargs["callbacks"] = [
                *fit_defaults.get("callbacks", ()),
                *extra.get("callbacks", ()),
                *fit_options.get("callbacks", ()),
            ]
            for key in ("epochs", "checkpoint_every_steps"):
                if options.get(key) is not None:
                    kwargs[key] = options[key]
            if writer and all(isinstance(options[k], str | None) for k in ("data", "valid")):
                every = kwargs.get("checkpoint_every_steps")
                stored = {
                    **options,
                    "script": _abs(script),
                    "data": _abs(options["data"]),
                    "valid": _abs(options["valid"]),
                    "epochs": kwargs["epochs"],
                    "checkpoint_every_steps": every if isinstance(every, int) else None,
                    "ranks": world_size(),
                    "stream": {
                        k: sopts[k]
                        for k in STREAM_KEYS
                        if k in sopts and isinstance(sopts[k], int | str) and not isinstance(sopts[k], bool)
                    },
                }
                kwargs["callbacks"].append(_StoreOptions(run_dir, stored))
            if mpi:  # started by mpiexec (or --ranks): train data-parallel over its ranks
                kwargs.setdefault("distributed", True)
            return fit(built["step"], train, run_dir=run_dir, resume=resume, overwrite=overwrite, **kwargs)
        finally:
            if vstream is not None:
                vstream.close()


def run_script(
    script: str | Path | None,
    data: str | Path | None,
    run_dir: str | Path,
    *,
    valid: str | Path | None = None,
    epochs: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stream_options: dict | None = None,
    fit_options: dict | None = None,
) -> Any:
    """What ``symtrain train`` does, callable from Python: returns the History. With ``resume=True`` the
    options not given (None) come from the run's stored options (RUN/options.json)."""
    fit_options = dict(fit_options or {})
    options = resolve_run(
        script,
        data,
        run_dir,
        valid=valid,
        epochs=epochs,
        resume=resume,
        stream_options=stream_options,
        checkpoint_every_steps=fit_options.pop("checkpoint_every_steps", None),
    )
    return train_run(options, run_dir, resume=resume, overwrite=overwrite, fit_options=fit_options)


def resume_command(prefix: str, options: Mapping[str, Any], run_dir: str | Path, extra: str = "") -> str:
    """The command that resumes this run with exactly its options (they are stored too)."""
    parts = [prefix, options["script"], "--data", options["data"]]
    if options.get("valid"):
        parts += ["--valid", options["valid"]]
    parts += ["--run-dir", str(run_dir)]
    if options.get("epochs") is not None:
        parts += ["--epochs", str(options["epochs"])]
    for key, value in options.get("stream", {}).items():
        parts += ["--" + key.replace("_", "-"), str(value)]
    if options.get("checkpoint_every_steps") is not None:
        parts += ["--checkpoint-every-steps", str(options["checkpoint_every_steps"])]
    return " ".join(shlex.quote(str(p)) if i else str(p) for i, p in enumerate(parts)) + " --resume" + extra


def _train(args: argparse.Namespace) -> int:
    from symtrain.distributed.comm import world_rank, world_size

    if args.ranks is not None and world_size() > 1 and args.ranks != world_size():
        raise ConfigError(
            f"--ranks {args.ranks} inside an MPI job of {world_size()} ranks: drop --ranks "
            "when starting mpiexec yourself"
        )
    if args.ranks is not None and args.ranks != 1 and world_size() == 1:
        from symtrain.distributed.launch import launch, without_ranks

        return launch(args.ranks, without_ranks(args.argv))
    if not args.resume and (args.script is None or args.data is None):
        raise ConfigError(
            "a script and --data are required (only --resume takes them from the run directory)"
        )
    fit_options: dict[str, Any] = {}
    if args.quiet:
        fit_options["progress"] = False

    def start() -> tuple[dict, Any]:  # (options, History)
        options = resolve_run(
            args.script,
            args.data,
            args.run_dir,
            valid=args.valid,
            epochs=args.epochs,
            resume=args.resume,
            stream_options={k: getattr(args, k) for k in STREAM_KEYS},
            checkpoint_every_steps=args.checkpoint_every_steps,
        )
        history = train_run(
            options, args.run_dir, resume=args.resume, overwrite=args.overwrite, fit_options=fit_options
        )
        return options, history

    if world_size() > 1:  # an error on one rank alone (e.g. in build()) must end the job, not hang it
        from symtrain.distributed.run import abort_on_error

        options, history = abort_on_error(start)
    else:
        options, history = start()
    if world_rank() != 0:  # rank 0 reports for the whole job
        return 130 if history.interrupted else 0
    if history.interrupted:
        try:  # the effective options, as the run stored them when it began
            stored = rundir.load_options(Path(args.run_dir), OPTIONS_SCHEMA) or options
        except SymtrainError:
            stored = options
        ranks = f" --ranks {world_size()}" if world_size() > 1 else ""
        print(
            f"interrupted; resume with: {resume_command('symtrain train', stored, args.run_dir, ranks)}",
            file=sys.stderr,
        )
        return 130
    best = history.best
    print(
        f"{history.stop_reason}: {history.global_step} steps, {len(history.epochs)} epochs; run directory "
        f"{args.run_dir}" + (f"; best {best['score']:.6g} at step {best['step']}" if best else "")
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from symtrain.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the model a script defines over a dataset, with checkpoints",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "script",
        nargs="?",
        help="Python file defining build(train, valid) (with --resume: taken from the run directory)",
    )
    p.add_argument("--data", help="training dataset directory (required unless --resume finds it stored)")
    p.add_argument("--valid", help="validation dataset directory, streamed sequentially")
    p.add_argument(
        "--run-dir",
        required=True,
        help="directory for the checkpoints, metrics.jsonl/csv, the plot and the stored options",
    )
    p.add_argument("--epochs", type=int, help="total epochs of the run (default: the script's FIT, else 10)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest valid checkpoint, with the options stored in the run directory",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over: delete symtrain's own checkpoints and logs in --run-dir (nothing else)",
    )
    p.add_argument("--batch-size", type=int, dest="batch_size", help="rows per training step")
    p.add_argument("--chunk-rows", type=int, dest="chunk_rows", help="rows per device buffer fill")
    p.add_argument("--policy", choices=("shuffle", "sequential"), help="row order of each epoch")
    p.add_argument("--mix", type=int, help="blocks mixed per buffer when shuffling")
    p.add_argument("--seed", type=int, help="seed of the shuffled row order")
    p.add_argument("--loader", choices=("thread", "process"), help="where chunks are read and transformed")
    p.add_argument(
        "--checkpoint-every-steps",
        type=int,
        dest="checkpoint_every_steps",
        help="also write a checkpoint every N steps",
    )
    p.add_argument(
        "--ranks",
        type=int,
        metavar="N",
        help="train data-parallel on N MPI ranks: starts `mpiexec -n N` itself (--batch-size is per rank)",
    )
    p.set_defaults(run=_train)

    q = sub.add_parser("plot", help="draw a run's learning curves to a PNG")
    q.add_argument("run_dir", help="a run directory written by fit or symtrain train")
    q.add_argument("-o", "--out", help="the PNG to write (default: RUN_DIR/curves.png)")
    q.set_defaults(run=_plot)
