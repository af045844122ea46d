"""Training: the compiled step and evaluator (step.py); the scheduler, callbacks and checkpoints live beside
it.

Imports are lazy, so commands and modules that need no graph (``symtrain --help``, ``inspect``,
checkpoint reading) do not pay for importing the graph library.
"""

from __future__ import annotations

from symtrain.lazy import lazy_exports

_LAZY = {
    "compile_step": "symtrain.train.step",
    "compile_eval": "symtrain.train.step",
    "Step": "symtrain.train.step",
    "Evaluator": "symtrain.train.step",
    "EpochMean": "symtrain.train.means",
    "compile_cache_dirs": "symtrain.train.step",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = ["compile_step", "compile_eval", "Step", "Evaluator", "EpochMean", "compile_cache_dirs"]
