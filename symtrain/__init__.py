"""symtrain: train PyTensor graphs on datasets larger than RAM, the Theano way.

Public names are imported lazily so that ``symtrain`` storage commands start fast without loading the
graph library; ``import symtrain as st; st.open_dataset(...)`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import Any

from symtrain.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    MigrationError,
    NonFiniteLossError,
    SchemaError,
    StreamError,
    SymtrainError,
)

__version__ = "0.1.0"

# public name -> module that defines it (filled in as the subsystems land)
_LAZY = {
    "open_dataset": "symtrain.storage",
    "Dataset": "symtrain.storage",
    "DatasetWriter": "symtrain.storage",
    "write_dataset": "symtrain.storage",
    "ChunkStream": "symtrain.stream",
    "compile_step": "symtrain.train.step",
    "compile_eval": "symtrain.train.step",
    "fit": "symtrain.train.fit",
    "Callback": "symtrain.train.callbacks",
    "EarlyStopping": "symtrain.train.early_stopping",
    "History": "symtrain.train.history",
    "shared": "symtrain.legacy",
    "function": "symtrain.legacy",
}
_SUBMODULES = {"storage", "stream", "optim", "train", "nnet", "migrate", "backend", "legacy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"symtrain.{name}")
    raise AttributeError(f"module 'symtrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = [
    "SymtrainError", "ConfigError", "DatasetError", "SchemaError", "StreamError", "CheckpointError",
    "NonFiniteLossError", "MigrationError", *_LAZY,
]
