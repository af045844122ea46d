"""Training: the compiled step and evaluator (step.py); the scheduler, callbacks and checkpoints live beside it."""

from symtrain.train.step import (
    EpochMean,
    Evaluator,
    Step,
    compile_cache_dirs,
    compile_eval,
    compile_step,
)

__all__ = ["compile_step", "compile_eval", "Step", "Evaluator", "EpochMean", "compile_cache_dirs"]
