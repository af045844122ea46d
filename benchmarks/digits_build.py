"""The digits dataset builder: its speed and whether its distorted rows teach a model the real digits.

    .venv/bin/python -m benchmarks.digits_build --rows 300000          # build speed (docs/datasets.md)
    .venv/bin/python -m benchmarks.digits_build --learn 60000 --seed 0 # learnability (2-4 minutes)
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from symtrain.storage.digits import (
    AUGMENT,
    FEATURES,
    build_digits,
    load_originals,
    render_train_chunk,
    split_indices,
)


def build_speed(rows: int, seed: int) -> None:
    """Time a build into a temporary directory (after compiling the render kernel once)."""
    render_train_chunk(*load_originals(), np.arange(10), 0, 20, 0, AUGMENT)
    with tempfile.TemporaryDirectory(dir=".") as d:
        t = time.perf_counter()
        build_digits(Path(d) / "digits", rows=rows, seed=seed, progress=False)
        dt = time.perf_counter() - t
        size = sum(f.stat().st_size for f in (Path(d) / "digits" / "train").iterdir())
    print(f"built {rows} train rows ({size / 2**30:.2f} GiB) in {dt:.2f} s: "
          f"{rows / dt / 1e3:.0f} k rows/s, {size / dt / 2**20:.0f} MiB/s")


def learnability(rows: int, seed: int) -> None:
    """Train scikit-learn's MLP (784-256-10) on distorted rows only; score it on the real test images."""
    from sklearn.neural_network import MLPClassifier

    images, labels = load_originals()
    idx = split_indices(labels, seed)
    skip = len(idx["train"])  # start after the real images: distorted rows only
    x, y = render_train_chunk(images, labels, idx["train"], skip, skip + rows, seed, AUGMENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((256,), max_iter=15, random_state=seed).fit(x, y)
    acc = clf.score(images[idx["test"]].reshape(-1, FEATURES), labels[idx["test"]])
    print(f"MLP 784-256-10 trained on {rows} distorted rows: {acc:.4f} accuracy on the "
          f"{len(idx['test'])} real test images")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--rows N`` times a build; ``--learn N`` measures learnability instead."""
    ap = argparse.ArgumentParser(description="measure the digits build speed (and optionally learnability)")
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learn", type=int, default=0, metavar="N",
                    help="instead: train an MLP on N distorted rows and score the real test images")
    a = ap.parse_args(argv)
    if a.learn:
        learnability(a.learn, a.seed)
    else:
        build_speed(a.rows, a.seed)


if __name__ == "__main__":
    main()
