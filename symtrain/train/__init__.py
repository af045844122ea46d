"""Training: the compiled step and evaluator (step.py); the scheduler, callbacks and checkpoints live beside it.

Imports are lazy, so commands and modules that need no graph (``symtrain --help``, ``inspect``,
checkpoint reading) do not pay for importing the graph library.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "compile_step": "symtrain.train.step",
    "compile_eval": "symtrain.train.step",
    "Step": "symtrain.train.step",
    "Evaluator": "symtrain.train.step",
    "EpochMean": "symtrain.train.step",
    "compile_cache_dirs": "symtrain.train.step",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'symtrain.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["compile_step", "compile_eval", "Step", "Evaluator", "EpochMean", "compile_cache_dirs"]
