"""The PyTorch contenders the benchmarks compare symtrain against (benchmark-only: needs the ``bench`` extra).

Two ways users feed a CPU training loop from the same memmapped dataset (x float32[784], y int64):

- ``tutorial``: the pattern tutorials teach: a ``Dataset`` whose ``__getitem__`` returns
  ``torch.from_numpy(memmap[i])`` (copied first: memmap rows are read-only) behind
  ``DataLoader(batch_size=128, shuffle=True)``. One Python call, one random row read and one collate per row.
- ``batched``: the better variant: a ``BatchSampler(RandomSampler)`` hands the dataset a whole batch of
  indices and ``__getitem__`` does one sorted fancy-index read per field (``DataLoader(batch_size=None)``).

Both shuffle with a full random permutation of all rows per epoch (the best quality class; symtrain's
``policy="shuffle"`` permutes chunk order and rows inside each buffer instead). The memmaps are opened
lazily in each process, so DataLoader workers never pickle a memmap (numpy#2049).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from symtrain.storage import open_dataset

STYLES = ("tutorial", "batched")


class _MemmapRows(Dataset):
    """Rows of a symtrain dataset directory, read through read-only memmaps opened on first use."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        with open_dataset(self.path) as ds:
            self.rows = ds.rows
        self._x = self._y = None

    def __len__(self) -> int:
        return self.rows

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        if self._x is None:
            ds = open_dataset(self.path)
            self._x, self._y = ds["x"], ds["y"]
        return self._x, self._y

    def __getstate__(self) -> dict:  # workers reopen the files: never pickle a memmap
        return {"path": self.path, "rows": self.rows, "_x": None, "_y": None}


class TutorialDataset(_MemmapRows):
    """One row per ``__getitem__``, as in the tutorials."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._maps()
        return torch.from_numpy(x[i].copy()), torch.tensor(y[i])


class BatchReadDataset(_MemmapRows):
    """A whole batch per ``__getitem__``: one sorted fancy-index read per field (a fresh, writable array)."""

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._maps()
        rows = np.sort(np.asarray(idx, dtype=np.int64))
        return torch.from_numpy(x[rows]), torch.from_numpy(y[rows])


def make_loader(path: str | Path, style: str, num_workers: int, batch_size: int = 128,
                seed: int = 0) -> DataLoader:
    """A shuffling DataLoader over the dataset at ``path`` in the given style (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    if style == "tutorial":
        return DataLoader(TutorialDataset(path), batch_size=batch_size, shuffle=True, num_workers=num_workers,
                          generator=gen, persistent_workers=False)
    if style == "batched":
        ds = BatchReadDataset(path)
        sampler = BatchSampler(RandomSampler(ds, generator=gen), batch_size, drop_last=False)
        return DataLoader(ds, sampler=sampler, batch_size=None, num_workers=num_workers)
    raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def mlp(seed: int = 0) -> nn.Module:
    """The benchmark model: 784-256-10, ReLU, float32 (logits; the loss is cross-entropy)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def set_threads(n: int) -> None:
    """Intra-op threads = ``n`` (the BLAS thread count the symtrain contenders get), one inter-op thread."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started in this process
        pass


def train_epoch(model: nn.Module, loader: DataLoader, lr: float = 1e-3, on_first_step=None,
                max_steps: int | None = None) -> dict[str, float]:
    """One epoch of Adam on cross-entropy; returns steps, rows, seconds waiting for batches, first and mean
    loss."""
    import time

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    steps = rows = 0
    waited = 0.0
    first = float("nan")
    total = 0.0
    it = iter(loader)
    while max_steps is None or steps < max_steps:
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            break
        waited += time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        steps += 1
        rows += len(y)
        total += loss.item()
        if steps == 1:
            first = total
            if on_first_step is not None:
                on_first_step()
    return {"steps": steps, "rows": rows, "wait_s": waited, "first_loss": first,
            "mean_loss": total / steps if steps else float("nan")}
