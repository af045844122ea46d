"""Transforms run by the loaders: the context they get, declared outputs, and the checks on what they did.

Pure numpy (no graph library), so a loader process can import it. A user transform is either
``fn(arrays)`` (the original form: it changes the valid rows in place) or ``fn(arrays, ctx)``, where
``ctx`` is a ``TransformContext`` carrying the epoch, the fill's number, the piece's buffer positions,
the global row indices and a ``numpy.random.Generator`` on a Philox (counter-based) bit generator keyed
on (stream seed, epoch, fill, piece). Pieces are cut from the plan alone (``PlanSpec.piece_rows``), so
the augmented rows are a pure function of the plan: the same for any number of workers, thread or
process loader, and after a resume.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from symtrain.errors import ConfigError
from symtrain.stream.load import FieldSource, Load
from symtrain.validate import is_int

AUGMENT_TAG = 0x61756731  # keeps the transform's random streams apart from the plan's (same seed)
PIECE_MIN_ROWS = 128  # a piece (unit of parallel work and of random streams) is >= this many rows
STREAMABLE_KINDS = "biufc"  # bool, integers, floats, complex: what a device buffer can hold


@dataclass(frozen=True)
class TransformContext:
    """What a two-argument transform ``fn(arrays, ctx)`` knows about the rows it is given.

    ``rows``: the dataset row (relative to its row 0) of each array row; ``lo``/``hi``: the positions of
    these rows in the buffer; ``rng``: a Generator keyed on (seed, epoch, number, lo, hi), independent of
    the worker that runs the piece.
    """

    epoch: int
    number: int
    lo: int
    hi: int
    rows: np.ndarray
    seed: int
    rng: np.random.Generator


def piece_generator(seed: int, epoch: int, number: int, lo: int, hi: int) -> np.random.Generator:
    """The transform's Generator for one piece: Philox keyed on (seed, epoch, fill, lo, hi)."""
    key = np.random.SeedSequence([AUGMENT_TAG, seed, epoch, number, lo, hi])
    return np.random.Generator(np.random.Philox(key))


def check_streamable(where: str, name: str, dtype: Any) -> np.dtype:
    """ConfigError unless ``dtype`` fits a device buffer (native numeric or bool; no strings, dates)."""
    dt = np.dtype(dtype)
    if dt.kind not in STREAMABLE_KINDS or dt.fields is not None or dt.subdtype is not None:
        what = {"U": "unicode strings", "S": "byte strings", "V": "raw void/structured records",
                "M": "datetimes", "m": "timedeltas", "O": "Python objects"}.get(dt.kind, "unsupported")
        raise ConfigError(f"{where}: field {name!r} is stored as {dt.str} ({what}); only numeric and bool "
                          "fields can be streamed into device buffers: leave it out with fields=[...] or "
                          "store it as numbers")
    if dt.kind in "fc" and dt.itemsize > (16 if dt.kind == "c" else 8):
        raise ConfigError(f"{where}: field {name!r} is stored as {dt.str} (extended precision, "
                          f"{dt.name}); device buffers hold at most float64/complex128: convert it once "
                          "(for an array: x.astype(np.float64); for a dataset: write a converted copy)")
    if not dt.isnative:
        raise ConfigError(f"{where}: field {name!r} is stored as {dt.str}, in non-native byte order; device "
                          "buffers hold native-order numbers: convert it once (for an array: "
                          "x.astype(x.dtype.newbyteorder('=')); for a dataset: write a converted copy)")
    return dt


def parse_outputs(outputs: Mapping[str, Any] | None, sources: Mapping[str, FieldSource]
                  ) -> dict[str, FieldSource]:
    """Declared output specs ``{field: (dtype, row_shape)}`` (or a dtype) as FieldSources of the buffers."""
    if outputs is None:
        return {}
    if not isinstance(outputs, Mapping):
        raise ConfigError(f"outputs must be a dict field -> (dtype, row_shape), got {outputs!r}")
    out = {}
    for name, spec in outputs.items():
        if name not in sources:
            raise ConfigError(f"outputs: {name!r} is not a streamed field; fields are {list(sources)}")
        src = sources[name]
        dtype, shape = (spec if isinstance(spec, tuple) and len(spec) == 2 else (spec, src.row_shape))
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise ConfigError(f"outputs[{name!r}]: {dtype!r} is not a dtype") from None
        check_streamable(f"outputs[{name!r}]", name, dtype)
        if (not isinstance(shape, tuple | list) or len(shape) > 31
                or any(not is_int(d) or d < 0 for d in shape)):
            raise ConfigError(f"outputs[{name!r}]: row shape must be a tuple of ints >= 0, got {shape!r}")
        out[name] = replace(src, dtype=dtype.str, row_shape=tuple(int(d) for d in shape))
    return out


def _takes_context(fn: Callable) -> bool:
    """True if ``fn`` needs two positional arguments (arrays, ctx); False for the one-argument form."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(None)
        return False
    except TypeError:
        pass
    try:
        sig.bind(None, None)
        return True
    except TypeError:
        raise ConfigError(f"transform {_name(fn)} must take (arrays) or (arrays, ctx)") from None


def _same_memory(new: Any, view: np.ndarray) -> bool:
    """True if ``new`` is just another view of exactly ``view``'s memory (a reshape): writes went through."""
    return (isinstance(new, np.ndarray) and new.dtype == view.dtype and new.size == view.size
            and new.flags.c_contiguous and view.flags.c_contiguous and new.ctypes.data == view.ctypes.data)


_WHERE = "raised in transform"  # the note Augment adds to an exception from the user's function


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of a fill's failure, plus where in the transform it was raised (if it was)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where = [n for n in getattr(exc, "__notes__", ()) if isinstance(n, str) and n.startswith(_WHERE)]
    return text + (f" ({where[0]})" if where else "")


def _name(fn: Any) -> str:
    return repr(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


class Augment:
    """A user transform prepared for the loaders (picklable if the function is).

    ``sources``: the fields as stored; ``outputs``: FieldSources of the fields whose buffer spec the
    transform changes. ``piece_rows``: rows per piece (from the plan); ``start``: the dataset's row 0.
    """

    def __init__(self, fn: Callable, sources: Mapping[str, FieldSource], *, seed: int, piece_rows: int,
                 start: int = 0, outputs: Mapping[str, FieldSource] | None = None):
        if not callable(fn):
            raise ConfigError(f"transform must be a callable taking (arrays) or (arrays, ctx), got {fn!r}")
        self.fn = fn
        self.with_context = _takes_context(fn)
        self.sources = dict(sources)
        self.outputs = dict(outputs or {})
        self.seed = int(seed)
        self.piece_rows = int(piece_rows)
        self.start = int(start)

    @property
    def buffer_sources(self) -> dict[str, FieldSource]:
        """The fields as the device buffers hold them (declared outputs replace the stored spec)."""
        return {n: self.outputs.get(n, s) for n, s in self.sources.items()}

    def pieces(self, n_valid: int, workers: int) -> list[tuple[int, int]]:
        """Buffer position ranges the transform is called on: fixed by the plan (one whole fill for the
        one-argument form with one worker, as before)."""
        if n_valid == 0:
            return []
        if not self.with_context and workers == 1:
            return [(0, n_valid)]
        p = self.piece_rows
        return [(a, min(a + p, n_valid)) for a in range(0, n_valid, p)]

    def apply(self, inputs: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray], load: Load,
              lo: int, hi: int, offsets: Mapping[str, int] | None = None) -> None:
        """Run the transform on positions ``lo:hi``; ``inputs[f]`` holds position p at ``p - offsets[f]``.

        Fields without a declared output are changed in place in ``out`` (``inputs[f] is out[f]``); the
        declared ones must be given as arrays of the declared spec, checked and copied into ``out``.
        """
        n = hi - lo
        offsets = offsets or {}
        given = {f: inputs[f][lo - offsets.get(f, 0):hi - offsets.get(f, 0)] for f in self.sources}
        views = dict(given)
        try:
            if self.with_context:
                rows = part_rows(load, lo, hi) - self.start
                ctx = TransformContext(load.epoch, load.number, lo, hi, rows, self.seed,
                                       piece_generator(self.seed, load.epoch, load.number, lo, hi))
                result = self.fn(given, ctx)
            else:
                result = self.fn(given)
        except Exception as exc:  # the loaders' StreamError names the transform and the rows with this
            exc.add_note(f"{_WHERE} {_name(self.fn)} on buffer rows {lo}:{hi} of fill {load.number}, "
                         f"epoch {load.epoch}")
            raise
        if result is not None:
            if not (self.outputs and isinstance(result, Mapping)):
                raise ConfigError(f"transform {_name(self.fn)} returned a value; it must modify the arrays "
                                  "it "
                                  "is given in place and return None (or return a dict of the fields "
                                  "declared in outputs=)")
            given.update(result)
        extra = sorted(set(given) - set(self.sources))
        if extra:
            raise ConfigError(f"transform {_name(self.fn)} added {extra}: a transform cannot add fields "
                              f"(streamed fields: {list(self.sources)})")
        for f in self.sources:
            if f not in given:
                raise ConfigError(f"transform {_name(self.fn)} removed field {f!r} from the arrays")
            new = given[f]
            if f in self.outputs:
                self._put_output(f, new, out[f][lo:hi], n)
            elif new is not views[f] and not _same_memory(new, views[f]):
                raise ConfigError(
                    f"transform {_name(self.fn)} replaced arrays[{f!r}] with a new array instead of writing "
                    f"into it, so the buffer would keep the untransformed rows: write in place "
                    f"(arrays[{f!r}][...] = ...), or declare the new spec with outputs={{{f!r}: (dtype, "
                    "row_shape)}}")

    def _put_output(self, f: str, new: Any, dst: np.ndarray, n: int) -> None:
        want = self.outputs[f]
        if not isinstance(new, np.ndarray) or new.dtype != np.dtype(want.dtype) or new.shape != dst.shape:
            got = (f"{new.dtype.str} {new.shape}" if isinstance(new, np.ndarray) else type(new).__name__)
            raise ConfigError(f"transform {_name(self.fn)} gave field {f!r} as {got}, but outputs= declares "
                              f"{want.dtype} rows of shape {want.row_shape} ({n} rows: {dst.shape}); set "
                              f"arrays[{f!r}] to an array of exactly that dtype and shape")
        if new is not dst:
            dst[...] = new


class LoaderTransform:
    """Adapts a loader-level ``fn(arrays, n_valid)`` (whole staging set, one worker) to Augment's API."""

    def __init__(self, fn: Callable[[dict[str, np.ndarray], int], Any], sources: Mapping[str, FieldSource]):
        self.fn = fn
        self.sources = dict(sources)
        self.outputs: dict[str, FieldSource] = {}
        self.buffer_sources = self.sources

    def pieces(self, n_valid: int, workers: int) -> list[tuple[int, int]]:
        """One piece: the whole fill (such a transform may look at all rows)."""
        if workers != 1:
            raise ConfigError("a loader-level transform(arrays, n_valid) needs workers=1; pass the transform "
                              "to ChunkStream to spread it over workers")
        return [(0, n_valid)] if n_valid else []

    def apply(self, inputs: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray], load: Load,
              lo: int, hi: int, offsets: Mapping[str, int] | None = None) -> None:
        """Call ``fn(out, n_valid)`` on the whole staging set."""
        self.fn(dict(out), load.n_valid)


def as_loader_transform(transform: Any, sources: Mapping[str, FieldSource]
                        ) -> Augment | LoaderTransform | None:
    """The loader's transform object: an Augment as is, a plain ``fn(arrays, n_valid)`` wrapped, or None."""
    if transform is None or isinstance(transform, Augment | LoaderTransform):
        return transform
    if not callable(transform):
        raise ConfigError(f"transform must be a callable (arrays, n_valid), got {transform!r}")
    return LoaderTransform(transform, sources)


def split_pieces(pieces: list[tuple[int, int]], workers: int) -> list[list[tuple[int, int]]]:
    """Cut ``pieces`` into ``workers`` contiguous groups of nearly equal size (some may be empty)."""
    k, r = divmod(len(pieces), workers)
    out, i = [], 0
    for w in range(workers):
        j = i + k + (1 if w < r else 0)
        out.append(pieces[i:j])
        i = j
    return out


def part_rows(load: Load, lo: int, hi: int) -> np.ndarray:
    """Absolute file rows of buffer positions ``lo:hi`` of ``load``."""
    return load.rows()[lo:hi]


def fill_part(sources: Mapping[str, FieldSource], load: Load, out: Mapping[str, np.ndarray],
              transform: Augment | LoaderTransform | None, pieces: list[tuple[int, int]],
              scratch: dict[str, np.ndarray], zero_tail: bool) -> None:
    """One worker's share of a fill: read the positions of ``pieces`` (contiguous), transform each piece.

    Fields with a declared output are read into ``scratch`` (their stored spec), transformed and copied
    into ``out``; the others are read straight into ``out`` and transformed in place.
    """
    from symtrain.stream.load import _gather_file, fill

    outs = transform.outputs if transform is not None else {}
    if pieces:
        lo, hi = pieces[0][0], pieces[-1][1]
        plain = {f: s for f, s in sources.items() if f not in outs}
        if plain:
            fill(plain, load, {f: out[f] for f in plain}, lo=lo, hi=hi, zero_tail=False)
        inputs = {f: out[f] for f in plain}
        offsets = dict.fromkeys(plain, 0)
        if outs:
            rows = part_rows(load, lo, hi)
            for f in outs:
                src = sources[f]
                arr = scratch.get(f)
                if arr is None or arr.shape[0] < hi - lo:
                    arr = scratch[f] = src.empty(hi - lo)
                if src.array is not None:
                    np.take(src.array, rows, axis=0, out=arr[:hi - lo], mode="clip")
                else:
                    _gather_file(src, rows, arr[:hi - lo])
                inputs[f], offsets[f] = arr, lo
        if transform is not None:
            for a, b in pieces:
                transform.apply(inputs, out, load, a, b, offsets)
    if zero_tail:
        for arr in out.values():
            if arr.shape[0] > load.n_valid:
                arr[load.n_valid:] = 0
