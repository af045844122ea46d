"""Streaming: chunk plans, device buffers, background loaders and the ChunkStream that ties them together.

Imports are lazy: a loader process imports ``symtrain.stream.load`` (pure numpy) without pulling in the
graph library through this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ChunkStream": "symtrain.stream.chunkstream",
    "Chunk": "symtrain.stream.chunkstream",
    "DeviceBuffers": "symtrain.stream.buffers",
    "ThreadLoader": "symtrain.stream.prefetch",
    "PlanSpec": "symtrain.stream.plan",
    "make_spec": "symtrain.stream.plan",
    "epoch_loads": "symtrain.stream.plan",
    "epoch_order": "symtrain.stream.plan",
    "Load": "symtrain.stream.load",
    "FieldSource": "symtrain.stream.load",
    "Loader": "symtrain.stream.load",
    "fill": "symtrain.stream.load",
    "sources_of": "symtrain.stream.load",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'symtrain.stream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = list(_LAZY)
