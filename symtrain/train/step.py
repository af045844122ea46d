"""Compile a training step (``compile_step``) or an evaluator (``compile_eval``) over a stream's batch index.

One compiled call per minibatch, ``f(index)``: the minibatch is the stream's slice of its device buffers
(``stream.batch(field)``, or ``givens=`` for graphs written against free symbolic inputs), the updates come
from the optimizer, and the outputs are named scalar metrics. With ``accumulate=k`` the gradients of k
consecutive calls are summed, weighted by each batch's valid rows, in named shared accumulators and applied
once, by a second small compiled function, as the update of one step on the concatenated batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from symtrain.backend import (
    MissingInputError,
    SharedVariable,
    TensorVariable,
    UnusedInputError,
    config,
    function,
    get_mode,
    grad,
    pt,
    shared,
)
from symtrain.errors import ConfigError
from symtrain.optim.clip import check_params
from symtrain.optim.schedules import Schedule
from symtrain.optim.updates import slot
from symtrain.train.contracts import StreamLike, SymbolicStream
from symtrain.train.means import EpochMean
from symtrain.validate import check_int

COMPILE_MODES = ("NUMBA", "CVM", "C", "FAST_COMPILE", "FAST_RUN", "JAX", "PYTORCH")


def compile_cache_dirs() -> dict[str, str]:
    """Where compiled code is cached: the C modules and the Numba cache, both under ``base_compiledir``.

    Set ``PYTENSOR_FLAGS=base_compiledir=/path`` (before Python starts, or before the first import of
    symtrain's backend) to move them; the Numba cache path is fixed when PyTensor's Numba backend loads.
    """
    base = str(config.base_compiledir)
    return {"base_compiledir": base, "compiledir": str(config.compiledir), "numba": f"{base}/numba"}


def resolve_mode(mode: Any) -> tuple[Any, str]:
    """``(mode object, name)`` for ``mode`` (None = the configured default, a name, or a Mode instance)."""
    if mode is None or isinstance(mode, str):
        label = str(config.mode if mode is None else mode)
        try:
            resolved = get_mode(label)
        except Exception as exc:
            raise ConfigError(f"mode={mode!r} is not a known mode; use one of "
                              f"{', '.join(COMPILE_MODES)}") from exc
        return resolved, label
    if hasattr(mode, "linker"):
        return mode, type(mode.linker).__name__
    raise ConfigError(f"mode must be None, a mode name ({', '.join(COMPILE_MODES)}) or a Mode, "
                      f"got {type(mode).__name__}")


def _linker_name(mode: Any) -> str:
    return type(getattr(mode, "linker", None)).__name__


def _check_stream(stream: Any) -> None:
    """ConfigError unless ``stream`` has the symbolic side a step is compiled against (a ChunkStream)."""
    if not isinstance(stream, SymbolicStream):
        raise ConfigError(f"stream is a {type(stream).__name__}, not a stream with a symbolic batch index "
                          "(index, batch, givens, batch_valid, batch_mask): pass a ChunkStream")


def _reduce(name: str, expr: Any, stream: SymbolicStream) -> Any:
    """A scalar metric stays as given (it must be the mean over valid rows); a per-row vector is averaged
    over the valid rows of the batch using the stream's mask."""
    if not isinstance(expr, TensorVariable):
        raise ConfigError(f"outputs[{name!r}] must be a symbolic expression, got {type(expr).__name__}")
    if expr.ndim == 0:
        return expr
    if expr.ndim == 1:
        mask = stream.batch_mask()
        valid = pt.maximum(stream.batch_valid(), 1).astype(expr.dtype if "float" in expr.dtype
                                                           else config.floatX)
        return pt.sum(expr * mask.astype(valid.dtype)) / valid
    raise ConfigError(f"outputs[{name!r}] has {expr.ndim} dims: give a scalar (batch mean) or a per-row "
                      "vector")


def _metrics(outputs: Mapping[str, Any] | None, stream: SymbolicStream,
             reserved: Iterable[str] = ()) -> dict[str, Any]:
    if outputs is None:
        return {}
    if not isinstance(outputs, Mapping):
        raise ConfigError(f"outputs must be a dict name -> expression, got {type(outputs).__name__}")
    reserved = set(reserved)
    out = {}
    for name, expr in outputs.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"output names must be non-empty strings, got {name!r}")
        if name in reserved:
            raise ConfigError(f"output name {name!r} is reserved (the step reports it itself)")
        out[name] = _reduce(name, expr, stream)
    return out


def _compile(inputs: list, outputs: list, updates: Any, givens: Any, mode: Any, what: str) -> Any:
    try:
        return function(inputs, outputs, updates=updates, givens=givens, mode=mode)
    except NotImplementedError as exc:
        if _linker_name(mode) != "CLinker":
            raise
        raise ConfigError(f"{what}: mode='C' cannot compile this graph (an op has no C code here: the pip "
                          "wheels link no BLAS for the C backend; set PYTENSOR_FLAGS=blas__ldflags=... or "
                          "use mode='CVM' or 'NUMBA')") from exc
    except (MissingInputError, UnusedInputError) as exc:
        raise ConfigError(
            f"{what}: the graph needs an input the stream does not provide; build it from "
            f"stream.batch(field) or pass givens={{var: 'field'}} ({str(exc).splitlines()[0]})") from exc


def _updated_shared(fns: Sequence[Any], prefix: str) -> list[Any]:
    """Every shared variable a compiled function updates (explicit or default updates, e.g. RNGs)."""
    found: list[Any] = []
    for fn in fns:
        for inp in fn.maker.inputs:
            if getattr(inp, "update", None) is not None and isinstance(inp.variable, SharedVariable):
                if all(inp.variable is not v for v in found):
                    found.append(inp.variable)
    for k, var in enumerate(v for v in found if not v.name):
        var.name = f"{prefix}/state{k}"  # e.g. an RNG from RandomStream; stable for the same graph
    return found


def _by_name(variables: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var in variables:
        if var.name in out and out[var.name] is not var:
            raise ConfigError(f"two different shared variables are both named {var.name!r}: state names must "
                              "be unique (give optimizers or schedules distinct name=)")
        out[var.name] = var
    return out


class StepControls:
    """What every training step shares: ``flush()``, ``advance_schedules()``, ``state_variables()``.

    A subclass provides ``pending`` (micro-batches accumulated, not applied), ``_apply()``, ``schedules``
    and ``_state`` (name -> shared variable).
    """

    schedules: list[Schedule]
    pending: int
    _apply: Callable[[], Any]
    _state: dict[str, Any]

    def flush(self) -> bool:
        """Apply a partial accumulation group (mean over the rows it saw); True if an update was applied.

        The trainer calls it at the end of every epoch (on every process at the same point), so the last
        ``steps_per_epoch % accumulate`` micro-batches are not dropped.
        """
        if self.pending == 0:
            return False
        self._apply()
        return True

    def advance_schedules(self, step: int, epoch: int) -> None:
        """Call ``advance(step, epoch)`` on every schedule the step reads."""
        for s in self.schedules:
            s.advance(step, epoch)

    def state_variables(self) -> dict[str, Any]:
        """Every shared variable the step updates or reads as state, by unique name (for checkpoints):
        parameters, optimizer state and counters, accumulators, schedule variables, RNG states."""
        return dict(self._state)


class Step(StepControls):
    """A compiled training step: ``step(i)`` runs minibatch ``i`` of the chunk in the buffers and returns
    ``{"loss": float, **outputs}``; ``flush()`` applies a partial accumulation group."""

    def __init__(self, *, name: str, names: list[str], fn: Any, apply_fn: Any | None, accumulate: int,
                 count: Any | None, params: list, schedules: list[Schedule], mode: str, linker: str,
                 compile_seconds: float, recipe: Mapping[str, Any] | None = None,
                 build: Callable[[], tuple[Any, Any]] | None = None):
        self.name = name
        self.names = names
        self.accumulate = accumulate
        self.params = params
        self.schedules = schedules
        self.mode = mode
        self.linker = linker
        self.compile_seconds = compile_seconds
        self.recipe = dict(recipe or {})  # the symbolic inputs, so a distributed trainer can recompile them
        self._count = count
        self._build = build  # set when compiling is deferred to the first use (see compile_step)
        self._compiled: dict[str, Any] | None = None
        if fn is not None:
            self._take(fn, apply_fn)
        else:  # deferred: the first call (or state_variables) compiles
            self._fn = lambda index: self._compile_now()[0](index)
            self._apply = lambda: self._compile_now()[1]()

    def _compile_now(self) -> tuple[Any, Any]:
        self._state  # noqa: B018 (the property compiles)
        return self._fn, self._apply

    def _take(self, fn: Any, apply_fn: Any | None) -> dict[str, Any]:
        self._fn, self._apply = fn, apply_fn
        fns = [fn] if apply_fn is None else [fn, apply_fn]
        extra = [s.variable for s in self.schedules]
        self._compiled = _by_name([*self.params, *_updated_shared(fns, self.name), *extra])
        return self._compiled

    @property
    def _state(self) -> dict[str, Any]:  # type: ignore[override]
        if self._compiled is not None:
            return self._compiled
        assert self._build is not None
        t0 = time.perf_counter()
        state = self._take(*self._build())
        self.compile_seconds += time.perf_counter() - t0
        return state

    def __call__(self, index: int | np.integer) -> dict[str, float]:
        outs = self._fn(np.asarray(index, dtype=np.int64))
        if self._apply is not None and self._count.get_value(borrow=True) >= self.accumulate:
            self._apply()
        return dict(zip(self.names, map(float, outs)))

    @property
    def pending(self) -> int:
        """Micro-batches accumulated and not yet applied (always 0 when ``accumulate == 1``)."""
        return 0 if self._count is None else int(self._count.get_value(borrow=True))

    def __repr__(self) -> str:
        return (f"Step(name={self.name!r}, outputs={self.names}, accumulate={self.accumulate}, "
                f"mode={self.mode!r}, state={len(self._state)} variables)")


def compile_step(cost: Any, params: Sequence, stream: SymbolicStream, optimizer: Callable,
                 outputs: Mapping | None = None,
                 accumulate: int = 1, mode: Any = None, name: str = "train", *,
                 givens: Mapping | None = None, schedules: Sequence[Schedule] = (),
                 updates: Mapping | Sequence | None = None) -> Step:
    """Compile ``cost`` (a scalar built from ``stream.batch(...)``) into a training step over
    ``stream.index``.

    ``optimizer`` is any callable ``(loss_or_grads, params) -> {shared var: new value}``: an
    ``st.optim.adam(1e-3)`` rule, a builder such as ``st.optim.adam`` itself, or your own function.
    ``outputs`` adds named metrics (scalars = batch means, or per-row vectors averaged over valid rows).
    ``accumulate=k`` applies the valid-row-weighted mean gradient of k calls once (see ``Step.flush``).
    ``schedules`` lists schedules your own optimizer reads (an UpdateRule's are found automatically).
    ``updates``: further ``{shared var: new value}`` applied on every call (with ``accumulate=k``: every
    micro-batch), e.g. the ``{rng: next_rng}`` of ``st.nnet.dropout`` or a ``pt.random`` draw with an
    explicit shared generator; those variables join ``state_variables()`` and so the checkpoints.
    """
    _check_stream(stream)
    if not isinstance(cost, TensorVariable) or cost.ndim != 0:
        raise ConfigError("cost must be a scalar expression, got "
                          f"{getattr(cost, 'type', type(cost).__name__)}")
    params = check_params(params)
    if not callable(optimizer):
        raise ConfigError("optimizer must be callable as optimizer(loss_or_grads, params), got "
                          f"{optimizer!r}")
    accumulate = check_int("accumulate", accumulate, 1)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty string, got {name!r}")
    mode_obj, mode_name = resolve_mode(mode)
    metrics = _metrics(outputs, stream, reserved=("loss",))
    names = ["loss", *metrics]
    outs = [cost, *metrics.values()]
    all_schedules = _schedules(optimizer, schedules)
    given = stream.givens(givens) if givens else None
    extra = {} if updates is None else _check_updates(updates, "updates")
    _no_clash(extra, params, "updates= must not update parameters (the optimizer does)")
    t0 = time.perf_counter()
    if accumulate == 1:
        updates = _check_updates(optimizer(cost, params), "optimizer")
        _no_clash(extra, updates, "updates= and the optimizer both update")
        count = None

        def build() -> tuple[Any, Any]:
            return _trusted(_compile([stream.index], outs, {**updates, **extra}, given, mode_obj,
                                     "compile_step")), None
    else:
        grads = grad(cost, params)
        valid = stream.batch_valid()
        sums = [slot(p, name, "grad_sum") for p in params]
        rows = shared(np.asarray(0, dtype=np.int64), name=f"{name}/accum_rows")
        count = shared(np.asarray(0, dtype=np.int64), name=f"{name}/accum_count")
        acc_updates = [(s, s + g.astype(p.dtype) * valid.astype(p.dtype))
                       for s, g, p in zip(sums, grads, params)]
        acc_updates += [(rows, rows + valid.astype("int64")), (count, count + 1), *extra.items()]
        mean_grads = [s / pt.maximum(rows, 1).astype(p.dtype) for s, p in zip(sums, params)]
        updates = _check_updates(optimizer(mean_grads, params), "optimizer")
        _no_clash(extra, updates, "updates= and the optimizer both update")
        clash = [v.name for v in updates if any(v is s for s in (*sums, rows, count))]
        if clash:
            raise ConfigError(f"optimizer updates the accumulators {clash}")
        resets = [(s, pt.zeros_like(s)) for s in sums] + [(rows, pt.zeros_like(rows)),
                                                          (count, pt.zeros_like(count))]

        def build() -> tuple[Any, Any]:
            fn = _compile([stream.index], outs, acc_updates, given, mode_obj, "compile_step")
            apply_fn = function([], [], updates=list(updates.items()) + resets, mode=mode_obj)
            return _trusted(fn), _trusted(apply_fn)
    # In a rank of an MPI job, fit(distributed=True) recompiles the gradient and the update separately and
    # never calls this step: compiling it there would only cost start-up time. It compiles on first use.
    fn, apply_fn = (None, None) if _in_mpi_job() else build()
    return Step(name=name, names=names, fn=fn, apply_fn=apply_fn, accumulate=int(accumulate), count=count,
                params=params, schedules=all_schedules, mode=mode_name, linker=_linker_name(mode_obj),
                compile_seconds=time.perf_counter() - t0, build=build,
                recipe={"cost": cost, "params": params, "optimizer": optimizer, "metrics": metrics,
                        "stream": stream, "givens": given, "updates": extra, "mode": mode_obj})


def _trusted(fn: Any) -> Any:
    fn.trust_input = True
    return fn


def _in_mpi_job() -> bool:
    """True in a rank of a multi-rank MPI job (judged from the launcher's environment, no mpi4py import)."""
    from symtrain.distributed.comm import world_size

    return world_size() > 1


def _schedules(optimizer: Any, extra: Sequence[Schedule]) -> list[Schedule]:
    found = list(getattr(optimizer, "schedules", []) or [])
    for s in extra:
        if not isinstance(s, Schedule):
            raise ConfigError(f"schedules must hold Schedule objects, got {type(s).__name__}")
        if all(s is not f for f in found):
            found.append(s)
    _by_name(s.variable for s in found)
    return found


def _check_updates(updates: Any, what: str) -> dict:
    if isinstance(updates, Mapping):
        items = list(updates.items())
    elif isinstance(updates, list | tuple):
        items = list(updates)
    else:
        raise ConfigError(f"{what} must return a dict shared variable -> new value, got "
                          f"{type(updates).__name__}")
    out: dict = {}
    for var, new in items:
        if not isinstance(var, SharedVariable):
            raise ConfigError(f"{what} returned an update for {var!r}, which is not a shared variable")
        if not hasattr(var.type, "dtype"):  # a random generator: its update is the next_rng of a draw
            if getattr(new, "type", None) != var.type:
                raise ConfigError(f"{what}: the update of {var.name or var.type!r} must be a symbolic "
                                  f"{var.type} (the next_rng of a draw from it), got "
                                  f"{getattr(new, 'type', type(new).__name__)}")
            out[var] = new  # unnamed ones are named <step name>/state<k> like default-update RNGs
            continue
        if not var.name:
            raise ConfigError(f"{what} updates an unnamed shared variable ({var.type}): name it so "
                              "checkpoints can store it (st.optim.slot(param, owner, slot) makes named "
                              "state)")
        new = pt.as_tensor_variable(new)
        if new.dtype != var.dtype:
            raise ConfigError(f"{what}: the update of {var.name!r} has dtype {new.dtype}, the variable "
                              f"{var.dtype}; cast it (an upcast would be silent otherwise)")
        out[var] = new
    return out


def _no_clash(extra: Mapping, others: Iterable, message: str) -> None:
    """ConfigError when a variable of ``extra`` (the updates= argument) is also in ``others``."""
    both = [str(v.name or v) for v in others if any(v is e for e in extra)]
    if both:
        raise ConfigError(f"{message}: {both}")


class Evaluator:
    """A compiled evaluation function over a stream: ``ev(i)`` -> per-batch metrics (means over valid
    rows), ``ev.run(epoch)`` -> the whole pass, each batch weighted by its valid rows."""

    def __init__(self, fn: Any, names: list[str], stream: StreamLike, mode: str, compile_seconds: float):
        self._fn = fn
        self.names = names
        self.stream = stream
        self.mode = mode
        self.compile_seconds = compile_seconds

    def batch(self, index: int | np.integer) -> tuple[dict[str, float], int]:
        """Metrics of batch ``index`` and its number of valid rows."""
        *outs, valid = self._fn(np.asarray(index, dtype=np.int64))
        return dict(zip(self.names, map(float, outs))), int(valid)

    def __call__(self, index: int | np.integer) -> dict[str, float]:
        return self.batch(index)[0]

    def run(self, epoch: int = 0) -> dict[str, float]:
        """Evaluate every batch of ``stream.epoch(epoch)``; returns the row-weighted means and ``rows``."""
        acc = EpochMean()
        for chunk in self.stream.epoch(epoch):
            for i in chunk.indices:
                metrics, valid = self.batch(i)
                acc.add(metrics, valid)
        return {**acc.result(), "rows": float(acc.rows)}


def compile_eval(outputs: Mapping[str, Any], stream: SymbolicStream, mode: Any = None, *,
                 givens: Mapping | None = None) -> Evaluator:
    """Compile named metrics (scalars = means over valid rows, or per-row vectors) over ``stream.index``."""
    _check_stream(stream)
    metrics = _metrics(outputs, stream, reserved=("rows",))
    if not metrics:
        raise ConfigError("outputs must name at least one metric, e.g. {'loss': cost}")
    mode_obj, mode_name = resolve_mode(mode)
    t0 = time.perf_counter()
    given = stream.givens(givens) if givens else None
    fn = _compile([stream.index], [*metrics.values(), stream.batch_valid()], None, given, mode_obj,
                  "compile_eval")
    fn.trust_input = True
    return Evaluator(fn, list(metrics), stream, mode_name, time.perf_counter() - t0)
