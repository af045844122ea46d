"""Write a tiny ``mnist.pkl.gz``-format file from scikit-learn's 8x8 digits, the way Python 2 wrote it.

The tutorials' ``mnist.pkl.gz`` is ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` pickled
by Python 2 with protocol 2: the array bytes are Python 2 ``str`` objects (BINSTRING opcodes), which is
why Python 3 needs ``pickle.load(f, encoding='latin1')`` to read it. ``py2_pickle_dumps`` writes bytes
that way, so the corpus tests meet the same trap real users meet.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 with ``bytes`` written as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle_dumps(obj) -> bytes:
    """Pickle ``obj`` as Python 2 would have (protocol 2, byte strings as ``str``)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def digits_splits(n_train: int = 600, n_valid: int = 200, n_test: int = 200, seed: int = 0):
    """Shuffled 8x8 digits as float32 rows in [0, 1] and int64 labels, split three ways."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    x = (digits.data[order] / 16.0).astype(np.float32)
    y = digits.target[order].astype(np.int64)
    bounds = np.cumsum([0, n_train, n_valid, n_test])
    return tuple((x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))


def write_mnist_pkl_gz(path: str | Path, **kwargs) -> Path:
    """Write the splits to ``path`` (gzip of a Python-2-style pickle) and return the path."""
    path = Path(path)
    with gzip.open(path, "wb") as f:
        f.write(py2_pickle_dumps(digits_splits(**kwargs)))
    return path
