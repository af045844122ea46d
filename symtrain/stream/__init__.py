"""Streaming: chunk plans, device buffers, background loaders and the ChunkStream that ties them together.

Imports are lazy: a loader process imports ``symtrain.stream.load`` (pure numpy) without pulling in the
graph library through this package.
"""

from __future__ import annotations

from symtrain.lazy import lazy_exports

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
    "TransformContext": "symtrain.stream.transform",
    "ArraySet": "symtrain.stream.arrays",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = list(_LAZY)
