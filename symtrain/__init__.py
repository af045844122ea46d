"""symtrain: train PyTensor graphs on datasets larger than RAM, the Theano way.

Public names are imported lazily so that ``symtrain`` storage commands start fast without loading the
graph library; ``import symtrain as st; st.open_dataset(...)`` works as usual.
"""

from __future__ import annotations

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
from symtrain.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, _SUBMODULES)


__all__ = [
    "SymtrainError", "ConfigError", "DatasetError", "SchemaError", "StreamError", "CheckpointError",
    "NonFiniteLossError", "MigrationError", *_LAZY,
]
