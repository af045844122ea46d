"""EpochMean: the one running mean of named metrics (epoch training metrics, evaluation passes, log lines)."""

from __future__ import annotations

from collections.abc import Mapping


class EpochMean:
    """Running weighted means of named metrics: ``add(metrics, rows)``, ``result()``.

    ``sums`` and ``rows`` are plain floats/ints so that a checkpoint can store and restore them exactly.
    """

    def __init__(self, sums: Mapping[str, float] | None = None, rows: int = 0) -> None:
        self.sums: dict[str, float] = dict(sums or {})
        self.rows = int(rows)

    def add(self, metrics: Mapping[str, float], rows: int = 1) -> None:
        """Add ``metrics`` with weight ``rows`` (1: a plain mean over calls)."""
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * rows
        self.rows += int(rows)

    def result(self) -> dict[str, float]:
        """The means so far ({} before the first ``add``)."""
        return {k: s / self.rows for k, s in self.sums.items()} if self.rows else {}
