"""Chunk plans: which rows go into the buffer next and in what order, as a pure function of the parameters.

The order of epoch ``e`` depends only on (seed, e, rows, chunk_rows, batch_size, policy, mix, drop_last),
so resuming needs a cursor, never a pickled iterator. Pure numpy; no graph library.

Layout. The buffer capacity ``cap`` is ``chunk_rows`` rounded down to a multiple of ``batch_size``
(``lcm(batch_size, mix)`` for ``shuffle``) and never more than the dataset needs. The rows are cut into
blocks of ``cap // mix`` rows (the last block may be shorter). One buffer fill ("load") takes ``mix``
blocks: ``sequential`` takes them in file order (one contiguous read of ``cap`` rows, buffer order = file
order); ``shuffle`` permutes the full blocks per epoch, keeps the short tail block last, and permutes the
rows inside each buffer. Every load but the last holds exactly ``cap`` rows, a whole number of batches.

Edges. Only the last load of an epoch can be short, so only the last batch of an epoch can be partial.
``drop_last=True`` drops it: ``rows % batch_size`` rows (the last ones of ``epoch_order``) are skipped
and ``steps_per_epoch == rows // batch_size``. ``drop_last=False`` keeps it: ``ceil(rows / batch_size)``
steps, the last one with ``rows % batch_size`` valid rows followed by zero rows (see ``batch_valid`` /
``batch_mask`` on the stream). Either way the buffer shape never changes and rows past the valid count
are zeros, never rows of a previous chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from symtrain.errors import ConfigError
from symtrain.stream.load import Load
from symtrain.validate import check_int

POLICIES = ("sequential", "shuffle")
PLAN_VERSION = 1
MAX_BLOCKS = 1 << 24  # blocks per epoch: their permutation is an int64 vector (128 MiB at the bound)
MAX_CHUNK_ROWS = 1 << 27  # rows per buffer: a fill's permutation is an int64 vector (1 GiB at the bound)


def _int_arg(name: str, value: object, minimum: int) -> int:
    """An integer argument; the type and the bound get separate messages ("must be an integer", ">= 1")."""
    value = check_int(name, value)
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class PlanSpec:
    """The validated plan parameters; ``chunk_rows`` is the effective buffer capacity (see the module doc)."""

    rows: int
    chunk_rows: int
    batch_size: int
    policy: str
    mix: int
    seed: int
    drop_last: bool
    start: int = 0

    @property
    def block_rows(self) -> int:
        """Rows per contiguous read: ``chunk_rows // mix`` (``chunk_rows`` for sequential)."""
        return self.chunk_rows if self.policy == "sequential" else self.chunk_rows // self.mix

    @property
    def batches_per_load(self) -> int:
        """Batches in every load except possibly the last."""
        return self.chunk_rows // self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        if self.drop_last:
            return self.rows // self.batch_size
        return -(-self.rows // self.batch_size)

    @property
    def dropped_rows(self) -> int:
        """Rows skipped per epoch (the last ``dropped_rows`` of ``epoch_order``): ``rows % batch_size``/0."""
        return self.rows % self.batch_size if self.drop_last else 0

    @property
    def loads_per_epoch(self) -> int:
        """Buffer fills per epoch (a last fill that would hold no whole batch is skipped with drop_last)."""
        return -(-self.steps_per_epoch // self.batches_per_load)

    def batches_in(self, g: int) -> int:
        """Steps taken on load ``g``."""
        return min(self.batches_per_load, self.steps_per_epoch - g * self.batches_per_load)

    def locate(self, step: int) -> tuple[int, int]:
        """(load, local batch index) of in-epoch step ``step``."""
        return divmod(step, self.batches_per_load)

    @property
    def piece_rows(self) -> int:
        """Rows per transform piece: the fewest whole batches holding >= PIECE_MIN_ROWS rows (a plan fact).

        Small pieces keep a numpy augmentation's temporaries in cache (2x faster at 128 rows than at 1024
        on the reference machine) and spread a fill evenly over the workers."""
        from symtrain.stream.transform import PIECE_MIN_ROWS

        return self.batch_size * -(-PIECE_MIN_ROWS // self.batch_size)

    def to_dict(self) -> dict:
        return {"plan_version": PLAN_VERSION, **asdict(self)}


def make_spec(rows: int, chunk_rows: int, batch_size: int, *, policy: str = "shuffle", mix: int = 1,
              seed: int = 0, drop_last: bool = True, start: int = 0) -> PlanSpec:
    """Validate plan parameters (clear ConfigError naming the argument) and fix the buffer capacity.

    ``chunk_rows`` is rounded down to a multiple of ``batch_size`` (of ``lcm(batch_size, mix)`` when
    shuffling) so that a buffer holds whole batches, and capped at what the dataset needs.
    """
    rows = _int_arg("rows", rows, 0)
    if rows == 0:
        raise ConfigError("the dataset is empty (0 rows): nothing to stream")
    batch_size = _int_arg("batch_size", batch_size, 1)
    chunk_rows = _int_arg("chunk_rows", chunk_rows, 1)
    mix = _int_arg("mix", mix, 1)
    seed = _int_arg("seed", seed, 0)
    start = _int_arg("start", start, 0)
    if policy not in POLICIES:
        raise ConfigError(f"policy must be one of {POLICIES}, got {policy!r}")
    if not isinstance(drop_last, bool | np.bool_):
        raise ConfigError(f"drop_last must be True or False, got {drop_last!r}")
    if chunk_rows < batch_size:
        raise ConfigError(f"chunk_rows={chunk_rows} must be >= batch_size={batch_size} (a buffer holds whole "
                          "batches); raise chunk_rows or lower batch_size")
    if drop_last and batch_size > rows:
        raise ConfigError(f"batch_size={batch_size} is larger than the dataset ({rows} rows): with "
                          "drop_last=True not one step would run; lower batch_size or pass drop_last=False")
    unit = batch_size if policy == "sequential" else math.lcm(batch_size, mix)
    if chunk_rows < unit:
        raise ConfigError(f"chunk_rows={chunk_rows} must be >= lcm(batch_size, mix)={unit} so that each of "
                          "the "
                          f"mix={mix} blocks of a buffer has a whole number of rows and the buffer whole "
                          "batches")
    cap = min(chunk_rows // unit * unit, -(-rows // unit) * unit)
    if cap > MAX_CHUNK_ROWS:
        raise ConfigError(f"chunk_rows={cap} rows per buffer is more than a plan can hold "
                          f"({MAX_CHUNK_ROWS}: each "
                          "fill's row permutation takes 8 bytes a row); lower chunk_rows")
    blocks = -(-rows // (cap if policy == "sequential" else cap // mix))
    if blocks > MAX_BLOCKS:
        raise ConfigError(f"rows={rows} in buffers of {cap} rows (mix={mix}) makes {blocks} blocks per "
                          "epoch, "
                          f"more than a plan can order ({MAX_BLOCKS}: 8 bytes a block); raise chunk_rows, "
                          "or stream a split of the dataset")
    return PlanSpec(rows=rows, chunk_rows=cap, batch_size=batch_size, policy=str(policy), mix=mix, seed=seed,
                    drop_last=bool(drop_last), start=start)


def _rng(spec: PlanSpec, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, epoch, stream])


class EpochPlan:
    """The loads of one epoch, generated lazily (a buffer's permutation is made when asked for)."""

    def __init__(self, spec: PlanSpec, epoch: int):
        self.spec = spec
        self.epoch = _int_arg("epoch", epoch, 0)

    @cached_property
    def blocks(self) -> np.ndarray:
        """Block numbers in visit order: full blocks permuted (shuffle), the short tail block last."""
        s = self.spec
        full, tail = divmod(s.rows, s.block_rows)
        if s.policy == "sequential":
            order = np.arange(full, dtype=np.int64)
        else:
            order = _rng(s, self.epoch, 0).permutation(full)
        return np.append(order, full) if tail else order

    def __len__(self) -> int:
        return self.spec.loads_per_epoch

    @property
    def total_loads(self) -> int:
        """Loads holding every row (one more than ``len(self)`` when drop_last skips a batch-less tail)."""
        return -(-self.spec.rows // self.spec.chunk_rows)

    def load(self, g: int) -> Load:
        """Load ``g`` of this epoch."""
        if not 0 <= g < len(self):
            raise ConfigError(f"load {g} is outside 0..{len(self) - 1}")
        return self._load(g)

    def _load(self, g: int) -> Load:
        s = self.spec
        if s.policy == "sequential":
            a, b = g * s.chunk_rows, min((g + 1) * s.chunk_rows, s.rows)
            return Load(((s.start + a, s.start + b),), None, b - a, self.epoch, g)
        p = s.block_rows
        ranges: list[list[int]] = []
        for blk in sorted(int(b) for b in self.blocks[g * s.mix:(g + 1) * s.mix]):
            a, b = s.start + blk * p, s.start + min((blk + 1) * p, s.rows)
            if ranges and ranges[-1][1] == a:
                ranges[-1][1] = b  # adjacent blocks: one read
            else:
                ranges.append([a, b])
        n = sum(b - a for a, b in ranges)
        perm = _rng(s, self.epoch, 1 + g).permutation(n)
        return Load(tuple((a, b) for a, b in ranges), perm, n, self.epoch, g)

    def __iter__(self) -> Iterator[Load]:
        return (self.load(g) for g in range(len(self)))


def epoch_loads(spec: PlanSpec, epoch: int) -> EpochPlan:
    """The sequence of Loads of ``epoch`` (lazy, indexable with ``.load(g)``).

    A spec that is not a PlanSpec (one rank's share, ``symtrain.distributed.shard.ShardSpec``) makes its own.
    """
    return EpochPlan(spec, epoch) if isinstance(spec, PlanSpec) else spec.epoch_loads(epoch)


def epoch_order(spec: PlanSpec, epoch: int) -> np.ndarray:
    """Every row of the dataset (relative to its row 0) in the order epoch ``epoch`` visits them.

    Row ``order[s * batch_size + j]`` is row ``j`` of in-epoch step ``s``; with drop_last the last
    ``spec.dropped_rows`` entries are the rows skipped this epoch.
    """
    plan = EpochPlan(spec, epoch)
    return np.concatenate([plan._load(g).rows(spec.start) for g in range(plan.total_loads)])
