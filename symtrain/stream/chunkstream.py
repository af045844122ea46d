"""ChunkStream: feed a compiled step from a dataset on disk, one buffer of rows at a time.

The stream owns the device buffers (shared variables), the chunk plan and a background loader. Iterating
``stream.epoch(e)`` installs each buffer fill and yields a Chunk whose ``indices`` the caller passes to
its compiled step; the next fill is loaded in the background meanwhile. See docs/streaming.md.
"""

from __future__ import annotations

import importlib
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from symtrain.backend import TensorVariable
from symtrain.errors import CheckpointError, ConfigError, StreamError
from symtrain.storage import Dataset, open_dataset
from symtrain.stream.arrays import ArraySet
from symtrain.stream.buffers import DeviceBuffers
from symtrain.stream.load import Load, sources_of
from symtrain.stream.plan import EpochPlan, PlanSpec, epoch_loads, epoch_order, make_spec
from symtrain.stream.prefetch import ThreadLoader, check_workers
from symtrain.stream.transform import Augment, check_streamable, parse_outputs
from symtrain.validate import check_int

LOADERS = ("thread", "process")
DEFAULT_LOADER = "thread"


@dataclass(frozen=True)
class Chunk:
    """One installed buffer fill: call the step with each of ``indices`` while holding it.

    ``first_step`` is the in-epoch step number of ``indices[0]`` (so ``indices[j]`` is step
    ``first_step + j``); ``number`` is the fill's position in the epoch; ``n_valid`` its valid rows.
    """

    epoch: int
    number: int
    indices: range
    first_step: int
    n_valid: int


def loader_class(loader: str | Callable) -> Callable:
    """The loader class for ``loader`` ("thread", "process", or a class with the Loader constructor)."""
    if callable(loader):
        return loader
    if loader == "thread":
        return ThreadLoader
    if loader == "process":
        try:
            module = importlib.import_module("symtrain.stream.process_loader")
        except ModuleNotFoundError as exc:
            if exc.name != "symtrain.stream.process_loader":
                raise
            raise ConfigError("loader='process' is not available in this build "
                              "(symtrain.stream.process_loader "
                              "is missing); use loader='thread'") from None
        return module.ProcessLoader
    raise ConfigError(f"loader must be one of {LOADERS} (or a Loader class), got {loader!r}")


def state_differences(saved: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Each difference between a checkpoint's stream ``saved`` state and the ``live`` one, once, readably."""
    problems = []
    if saved.get("fingerprint") != live.get("fingerprint"):
        problems.append(f"dataset fingerprint {saved.get('fingerprint')!r} != {live.get('fingerprint')!r} "
                        "(a different dataset, or its files changed)")
    sp, lp = saved.get("plan", {}), live.get("plan", {})
    labels = {"batch_size": "batch size", "chunk_rows": "chunk size (rows)"}
    for key in (*labels, *sorted((set(sp) | set(lp)) - set(labels))):
        if sp.get(key) != lp.get(key):
            problems.append(f"{labels.get(key, key)}: checkpoint {sp.get(key)!r}, now {lp.get(key)!r}")
    rest = sorted((set(saved) | set(live)) - {"fingerprint", "plan", "fields", "rows"})
    for key in ("fields", "rows", *rest):
        if saved.get(key) != live.get(key):
            problems.append(f"{key}: checkpoint {saved.get(key)!r}, now {live.get(key)!r}")
    return problems


def _close_box(box: dict) -> None:
    loader, box["loader"] = box.get("loader"), None
    if loader is not None:
        loader.close()


class ChunkStream:
    """Streams a dataset through fixed-capacity device buffers (see docs/architecture.md, "stream").

    ``dataset_or_path``: an opened Dataset (or split), a dataset directory, or a dict of numpy arrays /
    memmaps with one row per example (see ``symtrain.stream.arrays``). ``chunk_rows`` is rounded
    down to a multiple of ``batch_size`` (``lcm(batch_size, mix)`` when shuffling). ``policy``:
    "shuffle" (chunk order and rows in each buffer permuted per epoch) or "sequential"; ``mix=K``: each
    buffer holds K blocks from anywhere in the file. ``drop_last``: drop the last partial batch (True) or
    keep it padded with zeros and counted by ``batch_valid()``. ``transform(arrays)`` or
    ``transform(arrays, ctx)``: runs in the loader on views of the valid rows and changes them in place
    (ctx: a ``TransformContext`` with a reproducible Generator, see docs/streaming.md); ``outputs``:
    field -> ``(dtype, row_shape)`` the transform produces instead of the stored spec (the buffers take
    it). ``workers``: loader threads/processes sharing each fill. ``dtypes``: field -> dtype the caller
    needs (checked).
    """

    def __init__(self, dataset_or_path: Dataset | str | os.PathLike, batch_size: int, chunk_rows: int, *,
                 fields: Sequence[str] | None = None, policy: str = "shuffle", mix: int = 1, seed: int = 0,
                 drop_last: bool = True, transform: Callable[..., Any] | None = None,
                 name: str = "stream", loader: str | Callable = DEFAULT_LOADER,
                 dtypes: Mapping[str, Any] | None = None, workers: int = 1,
                 outputs: Mapping[str, Any] | None = None):
        if isinstance(fields, str) or (fields is not None and (
                not fields or not all(isinstance(f, str) for f in fields))):
            raise ConfigError(f"fields must be a non-empty list of field names, got {fields!r}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        if transform is not None and not callable(transform):
            raise ConfigError(f"transform must be a callable taking a dict of arrays, got {transform!r}")
        if outputs is not None and transform is None:
            raise ConfigError("outputs= declares what a transform produces, but no transform was given")
        self.workers = check_workers(workers)
        self._loader_cls = loader_class(loader)
        self.loader = loader if isinstance(loader, str) else getattr(loader, "__name__", repr(loader))
        if isinstance(dataset_or_path, Dataset):
            ds, self._owns_dataset = dataset_or_path, False
            if fields is not None:
                ds = ds.select(list(fields))
        elif isinstance(dataset_or_path, str | os.PathLike):
            ds, self._owns_dataset = open_dataset(dataset_or_path, fields), True
        elif isinstance(dataset_or_path, Mapping):
            ds, self._owns_dataset = ArraySet(dataset_or_path, fields), False
        else:
            raise ConfigError("dataset_or_path must be a Dataset, a dataset directory or a dict of arrays, "
                              f"got "
                              f"{type(dataset_or_path).__name__}")
        self.dataset = ds
        self.requested_chunk_rows = chunk_rows  # before rounding: a sharded (MPI) plan rounds it anew
        try:
            if ds.rows == 0:
                raise ConfigError(f"{ds.path}: the dataset is empty (0 rows): nothing to stream")
            for f in ds.fields:
                check_streamable(str(getattr(ds.fields[f], "path", ds.path)), f, ds.field(f).dtype)
            self.spec: PlanSpec = make_spec(ds.rows, chunk_rows, batch_size, policy=policy, mix=mix,
                                            seed=seed,
                                            drop_last=drop_last, start=ds.start)
            self.sources = ds.sources if isinstance(ds, ArraySet) else sources_of(ds)
            self._transform = None if transform is None else Augment(
                transform, self.sources, seed=self.spec.seed, piece_rows=self.spec.piece_rows, start=ds.start,
                outputs=parse_outputs(outputs, self.sources))
            buffers = self.sources if self._transform is None else self._transform.buffer_sources
            self._check_dtypes(dtypes or {}, buffers)
            check = getattr(self._loader_cls, "check", None)
            if callable(check):  # what the loader cannot do is refused now, not at the first epoch
                check(self.sources, self._transform, self.workers)
            self.device = DeviceBuffers(buffers, self.spec.chunk_rows, self.spec.batch_size, name)
        except BaseException:
            if self._owns_dataset:
                ds.close()
            raise
        self.name = name
        self._box: dict = {"loader": None}
        self._finalizer = weakref.finalize(self, _close_box, self._box)
        self._pending: tuple[int, int, Load] | None = None
        self._active: weakref.ref | None = None
        self._next_epoch = 0
        self._closed = False
        self.wait_seconds = 0.0

    # ----- symbolic side -------------------------------------------------------------------------------
    @property
    def index(self):
        """The symbolic int64 scalar selecting the minibatch inside the current buffer."""
        return self.device.index

    @property
    def buffers(self) -> dict:
        """field -> shared variable (named ``f"{name}/{field}"``), fixed capacity ``chunk_rows``."""
        return self.device.shared

    def batch(self, field: str):
        """Symbolic minibatch ``buf[index*bs:(index+1)*bs]`` of ``field``."""
        return self.device.batch(field)

    def givens(self, mapping: Mapping[Any, str]) -> dict:
        """``{var: batch(field)}`` for ``function(..., givens=...)``; checks each variable's dtype, ndim."""
        out = {}
        for var, field in mapping.items():
            src = self.device.field(field)
            if not isinstance(var, TensorVariable):
                raise ConfigError(f"givens: key for field {field!r} must be a symbolic tensor variable, "
                                  f"got {var!r}")
            want_ndim = 1 + len(src.row_shape)
            if var.dtype != np.dtype(src.dtype).name or var.ndim != want_ndim:
                raise ConfigError(f"givens: variable {var.name or var} is {var.dtype} with {var.ndim} dims "
                                  f"but field "
                                  f"{field!r} streams {np.dtype(src.dtype).name} batches with {want_ndim} "
                                  "dims; "
                                  "declare the variable to match, or write a converted copy of the dataset")
            out[var] = self.batch(field)
        return out

    def batch_valid(self):
        """Symbolic int64: valid rows in the current batch (== batch_size unless it is the partial one)."""
        return self.device.batch_valid()

    def batch_mask(self):
        """Symbolic floatX vector of length batch_size: 1 for valid rows, 0 for zero padding."""
        return self.device.batch_mask()

    # ----- plan facts --------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    @property
    def chunk_rows(self) -> int:
        """The effective buffer capacity (after rounding)."""
        return self.spec.chunk_rows

    @property
    def rows(self) -> int:
        return self.spec.rows

    @property
    def steps_per_epoch(self) -> int:
        return self.spec.steps_per_epoch

    def epoch_order(self, e: int) -> np.ndarray:
        """The rows of the dataset (relative to its row 0) in the order epoch ``e`` visits them."""
        return epoch_order(self.spec, e)

    def state(self) -> dict:
        """Plan parameters + dataset fingerprint: what a checkpoint stores to resume this stream exactly."""
        return {"plan": self.spec.to_dict(), "fingerprint": self.dataset.fingerprint,
                "fields": list(self.sources), "rows": self.rows}

    def check_state(self, state: Mapping[str, Any]) -> None:
        """Raise CheckpointError naming every difference between ``state`` and this stream's state."""
        diffs = state_differences(state, self.state())
        if diffs:
            raise CheckpointError(f"stream {self.name!r} does not match the checkpoint: " + "; ".join(diffs))

    # ----- iteration ---------------------------------------------------------------------------------------
    def epoch(self, e: int, start_step: int = 0) -> Iterator[Chunk]:
        """Iterate the chunks of epoch ``e`` from in-epoch step ``start_step`` (0 <= start_step <= steps)."""
        if self._closed:
            raise StreamError(f"stream {self.name!r} is closed")
        e = check_int("epoch", e, 0, expected="a non-negative integer")
        start_step = check_int("start_step", start_step, 0, self.steps_per_epoch)
        self._close_active()
        gen = self._run_epoch(e, start_step)
        self._active = weakref.ref(gen)
        return gen

    def __iter__(self) -> Iterator[range]:
        """Run the next epoch (0, 1, ...), yielding each chunk's local batch indices (Theano-style loops)."""
        e, self._next_epoch = self._next_epoch, self._next_epoch + 1
        chunks = self.epoch(e)
        try:
            for chunk in chunks:
                yield chunk.indices
        finally:
            chunks.close()

    def _run_epoch(self, e: int, start_step: int) -> Iterator[Chunk]:
        spec = self.spec
        if start_step == spec.steps_per_epoch:
            return
        plan = epoch_loads(spec, e)
        g0, local0 = spec.locate(start_step)
        finished = False
        try:
            self._start(plan, g0)
            for g in range(g0, len(plan)):
                arrays, load = self._wait()
                self.device.install(arrays, load.n_valid)
                if g + 1 < len(plan):
                    self._submit(plan, g + 1)
                else:  # speculative: the first fill of the next epoch, used if that is what comes next
                    self._submit(epoch_loads(spec, e + 1), 0)
                lo = local0 if g == g0 else 0
                yield Chunk(epoch=e, number=g, indices=range(lo, spec.batches_in(g)),
                            first_step=g * spec.batches_per_load + lo, n_valid=load.n_valid)
            finished = True
        finally:
            if not finished:  # early break, an exception here or in the consumer, Ctrl-C: join the loader
                self._shutdown_loader()

    def _loader(self):
        if self._box["loader"] is None:
            kwargs = {"workers": self.workers} if self.workers != 1 else {}
            self._box["loader"] = self._loader_cls(self.sources, self.spec.chunk_rows,
                                                   transform=self._transform,
                                                   **kwargs)
        return self._box["loader"]

    def _submit(self, plan: EpochPlan, g: int) -> None:
        load = plan.load(g)
        self._loader().submit(load)
        self._pending = (plan.epoch, g, load)

    def _wait(self) -> tuple[dict[str, np.ndarray], Load]:
        if self._pending is None:
            raise StreamError(f"stream {self.name!r}: no fill in flight")
        t0 = time.perf_counter()
        try:
            arrays = self._box["loader"].wait()
        finally:
            self.wait_seconds += time.perf_counter() - t0
            load, self._pending = self._pending[2], None
        return arrays, load

    def _start(self, plan: EpochPlan, g: int) -> None:
        """Make load ``g`` of ``plan`` the fill in flight, reusing a speculative fill when it matches."""
        if self._pending is not None:
            if self._pending[:2] == (plan.epoch, g):
                return
            arrays, load = self._wait()  # not what is wanted: install it so the loader's free set stays free
            self.device.install(arrays, load.n_valid)
        self._submit(plan, g)

    def _close_active(self) -> None:
        gen = self._active() if self._active is not None else None
        self._active = None
        if gen is not None:
            gen.close()

    def _shutdown_loader(self) -> None:
        """Join the loader and point the buffers at zeros (never at memory a closed loader released)."""
        self._pending = None
        if self._box["loader"] is None:
            return
        try:
            self.device.park()
        finally:
            _close_box(self._box)

    def close(self) -> None:
        """Stop any epoch in progress, join the loader, release the dataset; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close_active()
            self._shutdown_loader()
        finally:
            if self._owns_dataset:
                self.dataset.close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_dtypes(self, dtypes: Mapping[str, Any], buffers: Mapping[str, Any]) -> None:
        for field, want in dtypes.items():
            self.dataset.field(field)  # ConfigError naming the fields
            have = np.dtype(buffers[field].dtype)
            try:
                want = np.dtype(want)
            except TypeError:
                raise ConfigError(f"dtypes[{field!r}]: {want!r} is not a dtype") from None
            if have != want:
                raise ConfigError(f"{self._field_path(field)}: field {field!r} is stored as {have} but "
                                  f"{want} is needed; write a converted copy of the dataset once instead of "
                                  "casting every chunk (a cast would copy each buffer)")

    def _field_path(self, field: str) -> str:
        return str(getattr(self.dataset.fields[field], "path", self.dataset.path))

    def __repr__(self) -> str:
        s = self.spec
        return (f"<ChunkStream {self.name!r} {s.rows} rows, batch {s.batch_size}, chunk {s.chunk_rows}, "
                f"{s.policy}, mix {s.mix}, seed {s.seed}, loader {self.loader}, workers {self.workers}>")
