"""Soak: many short epochs (many chunk swaps, validation and a checkpoint every epoch) and many stream
open/close cycles with both loaders must not grow anonymous memory, open file descriptors or threads.

Figures (before/after) are printed; docs/reliability.md records them. Rerun with
``.venv/bin/python -m pytest tests/test_soak.py -s -q``.
"""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

import symtrain as st
from symtrain.train.callbacks import Callback

EPOCHS = 200
WARMUP = 10  # epochs before the first measurement (allocator pools, lazy imports, first checkpoint rotation)
MEMORY_SLACK = 8 << 20


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def sample() -> dict[str, int]:
    gc.collect()
    return {"rss_anon": rss_anon(), "fds": len(os.listdir("/proc/self/fd")),
            "threads": threading.active_count()}


def report(what: str, before: dict, after: dict) -> str:
    line = (f"{what}: RssAnon {before['rss_anon'] / 2**20:.1f} -> {after['rss_anon'] / 2**20:.1f} MiB "
            f"({(after['rss_anon'] - before['rss_anon']) / 2**20:+.2f}), fds {before['fds']} -> "
            f"{after['fds']}, threads {before['threads']} -> {after['threads']}")
    print("\nSOAK " + line)
    return line


def check(before: dict, after: dict) -> None:
    assert after["rss_anon"] - before["rss_anon"] < MEMORY_SLACK
    assert after["fds"] <= before["fds"]
    assert after["threads"] <= before["threads"]


class Probe(Callback):
    def __init__(self):
        self.first = self.last = None
        self.swaps = 0

    def on_chunk_begin(self, trainer, chunk):
        self.swaps += 1

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == WARMUP:
            self.first = sample()
        elif epoch == trainer.epochs - 1:
            self.last = sample()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("soak")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((68, 8)).astype(np.float32)
    y = rng.integers(0, 3, 68).astype(np.int64)
    train = st.write_dataset(root / "train", {"x": x, "y": y})
    return train, st.write_dataset(root / "valid", {"x": x[:20], "y": y[:20]}), root


def test_soak_fit_many_short_epochs(data):
    """200 epochs x 8 buffer fills of one batch each (the 4-row tail is dropped), a 3-fill validation pass
    per epoch, a checkpoint every 4 epochs (keep 2) and on every new best."""
    from symtrain.backend import shared

    train_path, valid_path, root = data
    with st.ChunkStream(train_path, batch_size=8, chunk_rows=8, seed=1) as train, \
            st.ChunkStream(valid_path, batch_size=8, chunk_rows=8, policy="sequential",
                           drop_last=False) as valid:
        W = shared(np.zeros((8, 3), np.float32), name="W")
        b = shared(np.zeros(3, np.float32), name="b")

        def loss(s):
            p = st.nnet.softmax(s.batch("x") @ W + b)
            return st.nnet.categorical_crossentropy(p, s.batch("y"))

        step = st.compile_step(loss(train).mean(), [W, b], train, st.optim.adam(1e-2))
        evaluator = st.compile_eval({"loss": loss(valid)}, valid)
        probe = Probe()
        history = st.fit(step, train, EPOCHS, validation=evaluator, run_dir=root / "run", keep=2,
                         checkpoint_every_epochs=4,
                         callbacks=[probe], progress=False, log_every=1000)
    assert history.stop_reason == "completed" and history.global_step == EPOCHS * (68 // 8)
    assert probe.swaps == EPOCHS * 8  # the 4-row tail holds no whole batch: dropped
    assert np.isfinite(history.epochs[-1]["loss"]) and history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    report(f"fit, epochs {WARMUP + 1}..{EPOCHS}, {probe.swaps} chunk swaps", probe.first, probe.last)
    check(probe.first, probe.last)
    assert len(list((root / "run" / "checkpoints").iterdir())) <= 3  # keep=2 plus best


@pytest.mark.parametrize("loader,cycles", [("thread", 60), ("process", 4)])
def test_soak_stream_open_close(data, loader, cycles):
    """Open, partly or fully iterate, and close streams repeatedly: every loader and file is released."""
    train_path, _, _ = data

    def cycle(k: int) -> None:
        with st.ChunkStream(train_path, batch_size=8, chunk_rows=32, seed=k, loader=loader) as s:
            for n, chunk in enumerate(s.epoch(k % 3)):
                s.buffers["x"].get_value(borrow=True)[: chunk.n_valid].sum()
                if k % 2 and n == 3:
                    break  # an early break must join the loader too

    cycle(0)  # warm-up: imports, allocator pools
    before = sample()
    for k in range(1, cycles + 1):
        cycle(k)
    after = sample()
    report(f"{loader} loader, {cycles} open/iterate/close cycles", before, after)
    check(before, after)
    assert not [t for t in threading.enumerate() if t.name.startswith("symtrain")]
