"""``python -m benchmarks.run --quick`` is a smoke run: it never replaces the committed RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import common
from benchmarks.run import results_path


def test_quick_run_writes_nothing_by_default() -> None:
    assert results_path(quick=True, no_write=False, out=None) is None


def test_quick_run_refuses_the_committed_results(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="must not replace RESULTS.md"):
        results_path(quick=True, no_write=False, out=common.RESULTS)
    assert results_path(quick=True, no_write=False, out=tmp_path / "quick.md") == tmp_path / "quick.md"


def test_full_run_writes_results_unless_told_not_to(tmp_path: Path) -> None:
    assert results_path(quick=False, no_write=False, out=None) == common.RESULTS
    assert results_path(quick=False, no_write=True, out=None) is None
    assert results_path(quick=False, no_write=False, out=tmp_path / "r.md") == tmp_path / "r.md"
