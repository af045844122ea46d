"""Sharded plans: rank r of N streams its share of every global batch of the one-process plan.

The global plan is the ordinary plan with batch size ``G = N * B`` (B: the per-rank batch) over the same
rows, chunk size, policy, mix, seed and drop_last, so which rows form which global batch depends only on
(seed, epoch, G), never on N: runs with different rank counts (and one process with batch G) see the
same batches, and a checkpoint resumes under another rank count with the same G. Each global batch is
sorted by file row and rank r takes rows ``[r*B, (r+1)*B)`` of it (the order inside a batch does not
change its gradient); sorting makes each rank's rows of a buffer fill cluster into long contiguous runs,
so a rank reads about its own share of the file, not everyone's. Only the last global batch of an epoch
can be partial; its valid rows go to the lowest ranks first and a rank may get none (the step weights
every rank's gradient by its valid rows). Each rank's buffer holds ``chunk_rows / N`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from symtrain.errors import ConfigError
from symtrain.stream.load import Load
from symtrain.stream.plan import EpochPlan, PlanSpec, make_spec

_PAD = np.iinfo(np.int64).max


def shard_load(load: Load, batch: int, rank: int, ranks: int) -> Load:
    """Rank ``rank``'s share of the global fill ``load`` whose buffer holds global batches of ``batch``.

    The share keeps the fill's epoch; its ``number`` is ``fill * ranks + rank``, so a transform's random
    draws (keyed on epoch, number and buffer positions) differ between ranks instead of repeating.
    """
    number = load.number * ranks + rank
    per = batch // ranks
    rows = load.rows(0)
    k = -(-len(rows) // batch)
    grid = np.full(k * batch, _PAD, dtype=np.int64)
    grid[:len(rows)] = rows
    grid = np.sort(grid.reshape(k, batch), axis=1)[:, rank * per:(rank + 1) * per].reshape(-1)
    mine = grid[grid != _PAD]  # only the last global batch can hold padding, at its end
    if len(mine) == 0:
        return Load((), None, 0, load.epoch, number)
    read = np.sort(mine)
    cuts = np.flatnonzero(np.diff(read) != 1) + 1
    starts = read[np.r_[0, cuts]]
    stops = read[np.r_[cuts - 1, len(read) - 1]] + 1
    ranges = tuple(zip(starts.tolist(), stops.tolist()))
    perm = None if np.array_equal(read, mine) else np.searchsorted(read, mine)
    return Load(ranges, perm, len(mine), load.epoch, number)


@dataclass(frozen=True)
class ShardSpec:
    """A PlanSpec look-alike for one rank: step counts of the global plan, this rank's batch and buffer.

    ``to_dict()`` is the global plan's, so a checkpoint records the plan every rank count shares.
    """

    full: PlanSpec
    rank: int
    ranks: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.ranks:
            raise ConfigError(f"rank {self.rank} is outside 0..{self.ranks - 1}")
        if self.full.batch_size % self.ranks or self.full.chunk_rows % self.ranks:
            raise ConfigError(f"the global batch {self.full.batch_size} and buffer {self.full.chunk_rows} "
                              f"must divide among {self.ranks} ranks")

    rows = property(lambda self: self.full.rows)
    policy = property(lambda self: self.full.policy)
    mix = property(lambda self: self.full.mix)
    seed = property(lambda self: self.full.seed)
    drop_last = property(lambda self: self.full.drop_last)
    start = property(lambda self: self.full.start)
    steps_per_epoch = property(lambda self: self.full.steps_per_epoch)
    batches_per_load = property(lambda self: self.full.batches_per_load)
    loads_per_epoch = property(lambda self: self.full.loads_per_epoch)
    dropped_rows = property(lambda self: self.full.dropped_rows)

    @property
    def batch_size(self) -> int:
        """The per-rank batch B."""
        return self.full.batch_size // self.ranks

    @property
    def chunk_rows(self) -> int:
        """This rank's buffer capacity: the global one divided by the rank count."""
        return self.full.chunk_rows // self.ranks

    def batches_in(self, g: int) -> int:
        return self.full.batches_in(g)

    def locate(self, step: int) -> tuple[int, int]:
        return self.full.locate(step)

    def to_dict(self) -> dict:
        return self.full.to_dict()

    def epoch_loads(self, epoch: int) -> ShardEpochPlan:
        """This rank's share of every fill of ``epoch`` (what ``plan.epoch_loads`` returns for this spec)."""
        return ShardEpochPlan(self, epoch)


class ShardEpochPlan:
    """The fills of one epoch for one rank: the global EpochPlan's loads, each cut down to this rank."""

    def __init__(self, spec: ShardSpec, epoch: int):
        self.spec = spec
        self.full = EpochPlan(spec.full, epoch)
        self.epoch = self.full.epoch

    def __len__(self) -> int:
        return len(self.full)

    def load(self, g: int) -> Load:
        return shard_load(self.full.load(g), self.spec.full.batch_size, self.spec.rank, self.spec.ranks)

    def __iter__(self) -> Iterator[Load]:
        return (self.load(g) for g in range(len(self)))


def global_spec(stream: Any, ranks: int) -> PlanSpec:
    """The one-process plan with batch ``ranks * stream.batch_size`` and the stream's other settings."""
    spec = stream.spec
    full = spec.full if isinstance(spec, ShardSpec) else spec
    per = full.batch_size // (spec.ranks if isinstance(spec, ShardSpec) else 1)
    chunk = getattr(stream, "requested_chunk_rows", None) or full.chunk_rows
    try:
        return make_spec(full.rows, chunk, per * ranks, policy=full.policy, mix=full.mix, seed=full.seed,
                         drop_last=full.drop_last, start=full.start)
    except ConfigError as exc:
        raise ConfigError(f"stream {getattr(stream, 'name', '?')!r} over {ranks} ranks (global batch "
                          f"{ranks} x {per} = {ranks * per}): {exc}") from None


def shard_stream(stream: Any, rank: int, ranks: int) -> None:
    """Make ``stream`` (a ChunkStream, not iterating) deliver rank ``rank``'s share of the global plan.

    The compiled graph keeps reading the same shared buffers with the same per-rank batch; only the
    plan and the buffer capacity change. ``ranks == 1`` restores the one-process plan.
    """
    if not all(hasattr(stream, a) for a in ("spec", "device", "_shutdown_loader")):
        raise ConfigError(f"distributed training shards a ChunkStream, got {type(stream).__name__}")
    if getattr(stream, "_active", None) is not None and stream._active() is not None:
        raise ConfigError(f"stream {stream.name!r} is iterating an epoch: shard it before training starts")
    full = global_spec(stream, ranks)
    spec: Any = full if ranks == 1 else ShardSpec(full, rank, ranks)
    stream._shutdown_loader()  # the loader's staging sets have the old capacity
    stream.spec = spec
    stream.device.capacity = spec.chunk_rows
    stream.device.park()
