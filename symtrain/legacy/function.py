"""``symtrain.function``: ``backend.function`` that streams the rows each call reads.

The row selections of streamed variables (found by ``indexmap``) are rebuilt over hidden local bounds.
Every call evaluates the global rows it needs from its index input, makes sure the chunk holding them is
in the device buffers (a hit costs nothing; a miss installs the prefetched chunk or loads one), passes
the local bounds, and prefetches the chunk a sequential loop needs next. Functions without streamed
variables are exactly ``backend.function``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from symtrain import backend
from symtrain.backend import ancestors, clone_replace
from symtrain.errors import ConfigError
from symtrain.legacy import indexmap
from symtrain.legacy.streamed import ChunkSource, StreamedSharedVariable, compiling_streamed
from symtrain.stream.load import Load, fill
from symtrain.stream.prefetch import ThreadLoader


def _is_streamed(v: Any) -> bool:
    return isinstance(v, StreamedSharedVariable)


class SyncLoader:
    """The Loader protocol (two staging sets) filled in the caller's thread; reads generator chunks too."""

    def __init__(self, sources: dict, chunk_rows: int):
        self.sources = sources
        self._sets = [{n: np.zeros((chunk_rows, *s.row_shape), dtype=np.dtype(s.dtype))
                       for n, s in sources.items()} for _ in range(2)]
        self._free = 0
        self._load: Load | None = None
        self.got = chunk_rows

    def submit(self, load: Load) -> None:
        self._load = load

    def wait(self) -> dict[str, np.ndarray]:
        out, load = self._sets[self._free], self._load
        self._free ^= 1
        start = load.ranges[0][0] if load.ranges else 0
        files = {n: s for n, s in self.sources.items() if not isinstance(s, ChunkSource)}
        if files:
            fill(files, load, out)
        got = [s.read(start, out[n][:load.n_valid]) for n, s in self.sources.items()
               if isinstance(s, ChunkSource)]
        self.got = min(got, default=load.n_valid)
        return out

    def close(self) -> None:
        self._sets = []


class Group:
    """Streamed variables loaded together: same rows, one window ``[start, start + n)`` for all."""

    def __init__(self, variables: tuple[StreamedSharedVariable, ...]):
        self.vars = variables
        for v in variables:
            v._stream.member_of.append(self)
        self.cap = min(v.capacity for v in variables)
        self.sequential = any(isinstance(v._stream.source, ChunkSource) for v in variables)
        self.loader: Any = None
        self.kind = "thread"  # "thread" or "process": which stream loader fills the staging sets
        self.pending: tuple[int, int] | None = None
        self.loads = 0  # windows installed (hits cost nothing)

    @property
    def rows(self) -> int | None:
        return self.vars[0]._stream.rows

    def _loader(self) -> Any:
        if self.loader is None:
            sources = {f"v{i}": v._stream.source for i, v in enumerate(self.vars)}
            if self.sequential:
                self.loader = SyncLoader(sources, self.cap)
            elif self.kind == "process":
                from symtrain.stream.process_loader import ProcessLoader
                self.loader = ProcessLoader(sources, self.cap)
                weakref.finalize(self, self.loader.close)
            else:
                self.loader = ThreadLoader(sources, self.cap)
                weakref.finalize(self, self.loader.close)
        return self.loader

    def window(self) -> tuple[int, int] | None:
        """The window all variables hold right now (None if they differ or hold nothing of ours)."""
        states = [v._stream for v in self.vars]
        first = states[0].window
        if first is None or any(s.window != first or s.owner is not self for s in states):
            return None
        return first

    def choose(self, s: int, e: int) -> tuple[int, int]:
        """The window for rows [s, e): the chunk ``k * cap`` holding s, or one starting at s if the rows
        straddle a chunk boundary."""
        start = s // self.cap * self.cap
        if e > start + self.cap:
            start = s
        rows = self.rows
        n = self.cap if rows is None else min(self.cap, rows - start)
        return start, n

    def ensure(self, s: int, e: int) -> tuple[int, int]:
        """Make the buffers hold rows [s, e); return the window."""
        have = self.window()
        if have is not None and have[0] <= s and e <= have[0] + have[1]:
            return have
        if self.sequential and e - s <= self.cap and s // self.cap * self.cap + self.cap < e:
            raise ConfigError(f"a call needs rows [{s}, {e}) of generator-backed {self._names()}, which "
                              f"straddle a chunk of {self.cap} rows; use a chunk_rows that is a multiple of "
                              "the batch size")
        target = self.choose(s, e)
        loader = self._loader()
        try:
            if self.pending is not None and self.pending != target:
                loader.wait()  # a wrong guess: finish it (errors still surface) and load what is needed
                self.pending = None
            if self.pending is None:
                loader.submit(_load(target))
            self.pending = None
            arrays = loader.wait()
        except BaseException:
            self.pending = None  # a failed or interrupted load: start the next call with a fresh loader
            self.close()
            raise
        if self.sequential:
            target = (target[0], loader.got)
            for v in self.vars:  # a generator's length is known once it is exhausted
                st = v._stream
                if st.rows is None and st.source.rows is not None:
                    st.rows = st.source.rows
                    st.rows_var.set_value(np.int64(st.rows))
        for i, v in enumerate(self.vars):
            v.install(arrays[f"v{i}"], target, self)
        self.loads += 1
        return target

    def prefetch(self, target: tuple[int, int] | None) -> None:
        if self.sequential or self.pending is not None or target is None or target[1] <= 0 \
                or target == self.window():
            return
        self._loader().submit(_load(target))
        self.pending = target

    def reset(self) -> None:
        """A member got new data (set_value): drop the loader (its sources changed) and re-check rows."""
        self.close()
        self.cap = min(v.capacity for v in self.vars)
        rows = {v.name: v._stream.rows for v in self.vars}
        if len(set(rows.values())) > 1:
            raise ConfigError("set_value: streamed variables used together must keep the same number of "
                              f"rows, now {rows}")

    def _names(self) -> str:
        return ", ".join(repr(v.name) for v in self.vars)

    def close(self) -> None:
        """Join the loader. Buffers holding its staging arrays are emptied first: a process loader's
        arrays live in shared memory that closing releases."""
        loader, self.loader = self.loader, None
        if loader is None:
            return
        for v in self.vars:
            if v._stream.owner is self:
                v.install(v.__dict__["_container"].value[:0].copy(), None, None)
        # A prefetch nobody will use is not waited for (its read may never end, e.g. on a FIFO swapped in
        # for the file): the loader's close is bounded and leaves a stuck reader behind as a daemon.
        self.pending = None
        loader.close()


def _load(window: tuple[int, int]) -> Load:
    start, n = window
    return Load(ranges=((start, start + n),) if n > 0 else (), perm=None, n_valid=n)


def group_for(variables: Sequence[StreamedSharedVariable]) -> Group:
    """The Group of exactly these variables, shared by every function that uses them together."""
    ordered = tuple(sorted(variables, key=lambda v: id(v._stream)))
    key = tuple(id(v._stream) for v in ordered)
    registry = ordered[0]._stream.__dict__.setdefault("groups", {})
    group = registry.get(key)
    if group is None:
        rows = {v.name: v._stream.rows for v in ordered if v._stream.rows is not None}
        if len(set(rows.values())) > 1:
            raise ConfigError("symtrain.function: streamed variables used together must have the same number "
                              f"of rows (they are sliced by the same index), got {rows}")
        group = registry[key] = Group(ordered)
    return group


def _flatten_outputs(outputs: Any) -> tuple[list, Any]:
    """The output variables in order, and a function rebuilding the original structure from new ones."""
    out_cls = backend.Out
    if outputs is None:
        return [], lambda new: None
    if isinstance(outputs, dict):
        keys = list(outputs)
        flat, rebuilds = zip(*(_flatten_outputs(outputs[k]) for k in keys), strict=True) if keys else ((), ())
        sizes = [len(f) for f in flat]

        def rebuild_dict(new: list) -> dict:
            out, pos = {}, 0
            for k, size, rb in zip(keys, sizes, rebuilds, strict=True):
                out[k] = rb(new[pos:pos + size])
                pos += size
            return out
        return [v for f in flat for v in f], rebuild_dict
    if isinstance(outputs, list | tuple):
        kind = type(outputs)
        parts = [_flatten_outputs(o) for o in outputs]

        def rebuild_seq(new: list) -> Any:
            out, pos = [], 0
            for flat, rb in parts:
                out.append(rb(new[pos:pos + len(flat)]))
                pos += len(flat)
            return kind(out)
        return [v for flat, _ in parts for v in flat], rebuild_seq
    if isinstance(outputs, out_cls):
        return [outputs.variable], lambda new: out_cls(new[0], borrow=outputs.borrow)
    return [outputs], lambda new: new[0]


def _input_variable(inp: Any) -> Any:
    return getattr(inp, "variable", inp)


class StreamedFunction:
    """A compiled function whose streamed row selections follow a global index (see module doc)."""

    def __init__(self, fn: Any, inputs: list, slices: list, hidden: list, group: Group, whole: bool,
                 prediction: tuple | None):
        self.fn = fn
        self._inputs = inputs
        self._slices = slices
        self._hidden = hidden  # per slice: (start name, stop name)
        self.group = group
        self._whole = whole
        self._prediction = prediction  # (input, slope, min offset, max end offset) when all slices agree
        used = {id(a.input): a.input for sl in slices for a in (sl.start, sl.stop)
                if a is not None and a.input is not None}
        self._used = [(pos, _input_variable(i)) for pos, i in enumerate(inputs)
                      if id(_input_variable(i)) in used]

    def __getattr__(self, name: str) -> Any:
        if name == "fn" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.fn, name)

    def _bind(self, args: tuple, kwargs: dict) -> dict:
        values = {}
        for pos, var in self._used:
            if pos < len(args):
                val = args[pos]
            elif var.name is not None and var.name in kwargs:
                val = kwargs[var.name]
            else:
                default = getattr(self._inputs[pos], "value", None)
                if default is None:
                    raise TypeError(f"missing a value for the index input {var}")
                val = default
            arr = np.asarray(val)
            if arr.ndim != 0 or arr.dtype.kind not in "iu":
                raise ConfigError(f"the index input {var.name or var} must be one integer, got {val!r}")
            values[var] = int(arr)
        return values

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        values = self._bind(args, kwargs)
        group = self.group
        rows = group.rows if group.rows is not None else 1 << 62
        ranges = [sl.rows(values, rows) for sl in self._slices]
        spans = [r for r in ranges if r[1] > r[0]]
        if self._whole:
            spans.append((0, rows))
        local = {}
        if spans:
            s, e = min(r[0] for r in spans), max(r[1] for r in spans)
            if e - s > group.cap:
                raise ConfigError(f"this call needs rows [{s}, {e}) of {group._names()}: {e - s} rows, more "
                                  f"than the {group.cap} rows of a chunk (raise chunk_rows in "
                                  "symtrain.shared)")
            loads = group.loads
            start, n = group.ensure(s, e)
            if group.loads != loads:
                self._prefetch(values, (start, n))
        else:
            start, n = group.window() or (0, 0)
        for (ls, le), (s, e) in zip(self._hidden, ranges, strict=True):
            lo = min(max(s - start, 0), n)
            local[ls] = np.asarray(lo, dtype=np.int64)
            local[le] = np.asarray(min(max(e - start, lo), n), dtype=np.int64)
        return self.fn(*args, **kwargs, **local)

    def _prefetch(self, values: dict, window: tuple[int, int]) -> None:
        """Start loading the window a sequential loop needs after this one (wrapping to the first batch)."""
        group, pred = self.group, self._prediction
        if pred is None or group.rows is None:
            return
        var, a, lo, hi = pred
        end = window[0] + window[1]
        if end >= group.rows:
            g = 0  # the loop starts over: the first batch of the next pass
        else:
            g = (end - hi) // a + 1  # the first batch whose rows end past this window
        s, e, _ = slice(a * g + lo, a * g + hi).indices(group.rows)
        if e <= s or e - s > group.cap:
            return
        group.prefetch(group.choose(s, e))

    def close(self) -> None:
        """Join the background loader of this function's variables (it restarts on the next call)."""
        self.group.close()


def _prediction(slices: list) -> tuple | None:
    inputs = set()
    slopes, los, his = set(), [], []
    for sl in slices:
        if sl.kind == "index":
            if sl.start.input is None:
                return None
            inputs.add(sl.start.input)
            slopes.add(sl.start.a)
            los.append(sl.start.b)
            his.append(sl.start.b + 1)
            continue
        if sl.start is None or sl.stop is None or sl.start.input is None or sl.stop.input is None:
            return None
        inputs.update((sl.start.input, sl.stop.input))
        slopes.update((sl.start.a, sl.stop.a))
        los.append(sl.start.b)
        his.append(sl.stop.b)
    if len(inputs) != 1 or len(slopes) != 1 or next(iter(slopes)) <= 0:
        return None
    return next(iter(inputs)), next(iter(slopes)), min(los), max(his)


def function(inputs: Sequence, outputs: Any = None, updates: Any = None, givens: Any = None,
             **kwargs: Any) -> Any:
    """Drop-in for ``theano.function``: streams the row slices of ``symtrain.shared`` variables.

    Returns ``backend.function(...)`` itself when no streamed variable is involved. ``loader="thread"``
    (default) or ``"process"`` picks the stream loader that prefetches chunks (a process overlaps better
    with a Numba-compiled step, which holds the GIL; see docs/streaming.md).
    """
    loader = kwargs.pop("loader", None)
    if loader not in (None, "thread", "process"):
        raise ConfigError(f"loader must be 'thread' or 'process', got {loader!r}")
    inputs = list(inputs)
    flat_out, rebuild_out = _flatten_outputs(outputs)
    update_pairs = list(updates.items()) if isinstance(updates, dict) else list(updates or [])
    given_pairs = list(givens.items()) if isinstance(givens, dict) else list(givens or [])
    roots = flat_out + [v for _, v in update_pairs] + [v for _, v in given_pairs]
    input_vars = [_input_variable(i) for i in inputs]
    slices, whole = indexmap.find_row_slices(roots, input_vars, _is_streamed)
    if not slices and not whole:
        return backend.function(inputs, outputs, updates=updates, givens=givens, **kwargs)
    for var, _ in update_pairs:
        if _is_streamed(var):
            raise ConfigError(f"symtrain.function: updates: {var.name!r} is a streamed (read-only) variable")
    variables: list = []
    for v in [*whole, *(s for sl in slices for s in sl.streamed)]:
        if all(v is not w for w in variables):
            variables.append(v)
    group = group_for(variables)
    if loader is not None and loader != group.kind:
        if group.loader is not None:
            raise ConfigError(f"loader={loader!r}: {group._names()} are already loaded by a {group.kind} "
                              "loader for another function; pass the same loader= to every function using "
                              "them")
        group.kind = loader
    for v in whole:
        if v._stream.rows is None or v._stream.rows > group.cap:
            rows = "an unknown number of" if v._stream.rows is None else v._stream.rows
            raise ConfigError(
                f"symtrain.function: the streamed variable {v.name!r} ({rows} rows, chunks of {group.cap}) "
                "is used whole, not through a row slice by an index input (e.g. in outputs or a givens value "
                "without [index * batch_size:(index + 1) * batch_size], or selected by fancy indexing, a "
                "transpose, a reduction); only row slices can be streamed")
    replace, bounds = {}, []
    for k, sl in enumerate(slices):
        names = (f"__symtrain_rows{k}_start", f"__symtrain_rows{k}_stop")
        start, stop = indexmap.local_bound(names[0]), indexmap.local_bound(names[1])
        bounds.append((names, start, stop))
        replace[sl.out] = indexmap.rebuild(sl, start, stop)
    new_roots = clone_replace(roots, replace=replace) if replace else roots
    n_out, n_up = len(flat_out), len(update_pairs)
    new_out = rebuild_out(list(new_roots[:n_out]))
    new_updates = [(k, v) for (k, _), v in zip(update_pairs, new_roots[n_out:n_out + n_up], strict=True)]
    new_givens = [(k, v) for (k, _), v in zip(given_pairs, new_roots[n_out + n_up:], strict=True)]
    # Only slices that survive the givens substitution get hidden inputs (and cause loads): a givens entry
    # for a variable the outputs never use must not make the function read rows.
    effective = list(new_roots[:n_out + n_up])
    if new_givens and effective:
        effective = clone_replace(effective, replace=dict(new_givens))
    present = {id(v) for v in ancestors(effective)}
    kept = [(sl, b) for sl, b in zip(slices, bounds, strict=True) if id(b[1]) in present
            or id(b[2]) in present]
    hidden_vars = [v for _, (_, start, stop) in kept for v in (start, stop)]
    with compiling_streamed():
        _check_unused(inputs, input_vars, outputs, updates, givens, flat_out, update_pairs, given_pairs,
                      kwargs)
        kwargs["on_unused_input"] = "ignore"  # the index often feeds only the bounds we replaced
        fn = backend.function([*inputs, *[backend.In(h) for h in hidden_vars]], new_out,
                              updates=new_updates or None, givens=new_givens or None, **kwargs)
    return StreamedFunction(fn, inputs, [sl for sl, _ in kept], [b[0] for _, b in kept], group, bool(whole),
                            _prediction([sl for sl, _ in kept]))


def _check_unused(inputs, input_vars, outputs, updates, givens, flat_out, update_pairs, given_pairs,
                  kwargs) -> None:
    """Give an input the user's graph really leaves unused the backend's own error or warning."""
    policy = kwargs.get("on_unused_input") or backend.config.on_unused_input
    if policy == "ignore":
        return
    effective = flat_out + [v for _, v in update_pairs]
    if given_pairs and effective:
        effective = clone_replace(effective, replace=dict(given_pairs))
    present = {id(v) for v in ancestors(effective)}
    if any(id(v) not in present for v in input_vars):
        backend.function(inputs, outputs, updates=updates, givens=givens, **kwargs)

