"""Sharded plans (no MPI needed): N ranks with batch B see exactly the global batches of one process
with batch N*B, each row once, for every policy, a partial last batch, drop_last, and mid-epoch starts."""

from __future__ import annotations

import numpy as np
import pytest

from symtrain.distributed.shard import ShardSpec, shard_stream
from symtrain.errors import ConfigError
from symtrain.storage import write_dataset
from symtrain.stream import ChunkStream


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    """A dataset whose field ``i`` is the row number (so buffers show which rows they hold)."""
    rows = 203
    return write_dataset(tmp_path_factory.mktemp("shard") / "ids",
                         {"i": np.arange(rows, dtype=np.int64), "x": np.zeros((rows, 2), np.float32)})


def _batches(stream: ChunkStream, epoch: int, start: int = 0) -> list[tuple[np.ndarray, int]]:
    """(valid row ids, valid count) of every step of ``epoch`` from ``start``, read from the buffers."""
    out = []
    b = stream.batch_size
    for chunk in stream.epoch(epoch, start):
        buf, n = stream.buffers["i"].get_value(), int(stream.device.n_valid.get_value())
        assert buf.shape[0] == stream.chunk_rows
        for j in chunk.indices:
            valid = int(np.clip(n - j * b, 0, b))
            assert not buf[j * b + valid:(j + 1) * b].any()  # padding is zeros
            out.append((buf[j * b:j * b + valid].copy(), valid))
    return out


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("policy,mix,drop_last", [("shuffle", 1, False), ("shuffle", 3, True),
                                                   ("sequential", 1, False), ("sequential", 1, True)])
def test_ranks_together_see_the_one_process_global_batches(ids, ranks, policy, mix, drop_last):
    per = 6
    opts = dict(chunk_rows=50, policy=policy, mix=mix, seed=5, drop_last=drop_last)
    with ChunkStream(ids, batch_size=per * ranks, **opts) as one:
        for epoch, start in ((0, 0), (1, 0), (1, 3)):
            want = _batches(one, epoch, start)
            got = []
            for r in range(ranks):
                with ChunkStream(ids, batch_size=per, **opts) as s:
                    shard_stream(s, r, ranks)
                    assert s.steps_per_epoch == one.steps_per_epoch
                    assert s.state()["plan"] == one.state()["plan"]  # checkpoints record the global plan
                    got.append(_batches(s, epoch, start))
            assert all(len(g) == len(want) for g in got)
            for k, (rows, valid) in enumerate(want):
                parts = [got[r][k] for r in range(ranks)]
                assert sum(v for _, v in parts) == valid
                np.testing.assert_array_equal(np.sort(np.concatenate([p for p, _ in parts])), np.sort(rows))
                filled = [v for _, v in parts]
                assert filled == sorted(filled, reverse=True)  # a partial batch fills the low ranks first


def test_rank_reads_long_runs_and_checks_arguments(ids):
    from symtrain.stream.plan import epoch_loads

    with ChunkStream(ids, batch_size=8, chunk_rows=200, seed=1) as s:
        shard_stream(s, 1, 2)
        load = epoch_loads(s.spec, 3).load(0)
        assert load.n_valid == s.chunk_rows == 96 and len(load.ranges) < load.n_valid / 4
        assert (load.epoch, load.number) == (3, 0 * 2 + 1)  # transforms draw apart on each rank
        with pytest.raises(ConfigError, match="outside"):
            ShardSpec(s.spec.full, 2, 2)
    with ChunkStream(ids, batch_size=40, chunk_rows=50) as s:
        with pytest.raises(ConfigError, match="global batch"):
            shard_stream(s, 0, 2)
