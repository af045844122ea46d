"""Device buffers: one shared variable per field at a fixed capacity, plus the symbolic batch index.

A buffer's value is always an owned, writable, C-contiguous array of the field's dtype (never a memmap:
PyTensor's ``TensorType.filter`` would pass one through unchanged and the "device buffer" would become a
file mapping). Chunks are installed with ``set_value(arr, borrow=True)`` (no copy) and never change the
shape, so a compiled step is never recompiled; rows past ``n_valid`` are zeros.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from symtrain.backend import config, pt, shared
from symtrain.errors import ConfigError
from symtrain.stream.load import FieldSource
from symtrain.stream.transform import check_streamable


class DeviceBuffers:
    """The shared variables a compiled step reads, the symbolic ``index`` and the valid-row count."""

    def __init__(self, sources: Mapping[str, FieldSource], capacity: int, batch_size: int,
                 name: str = "stream"):
        if capacity % batch_size:
            raise ConfigError(f"buffer capacity {capacity} is not a multiple of batch_size {batch_size}")
        self.name = name
        self.capacity = capacity
        self.batch_size = batch_size
        self.sources = dict(sources)
        for f, src in self.sources.items():
            check_streamable(f"{name} buffers", f, src.dtype)
        self.shared = {f: shared(src.empty(capacity), name=f"{name}/{f}", borrow=True)
                       for f, src in self.sources.items()}
        self.n_valid = shared(np.array(0, dtype=np.int64), name=f"{name}/n_valid")
        self.index = pt.lscalar(f"{name}/index")
        self._batches: dict[str, object] = {}

    def field(self, name: str) -> FieldSource:
        try:
            return self.sources[name]
        except KeyError:
            raise ConfigError(f"{self.name}: unknown field {name!r}; streamed fields are "
                              f"{list(self.sources)}") from None

    def batch(self, field: str):
        """Symbolic minibatch ``buf[index*bs:(index+1)*bs]`` of ``field`` (the same variable each call)."""
        self.field(field)
        if field not in self._batches:
            bs, i = self.batch_size, self.index
            self._batches[field] = self.shared[field][i * bs:(i + 1) * bs]
        return self._batches[field]

    def batch_valid(self):
        """Symbolic int64: valid rows in the current batch (``batch_size`` except in a partial batch)."""
        return pt.clip(self.n_valid - self.index * self.batch_size, 0, self.batch_size)

    def batch_mask(self):
        """Symbolic floatX vector of length ``batch_size``: 1 for valid rows, 0 for padding."""
        return pt.lt(pt.arange(self.batch_size), self.batch_valid()).astype(config.floatX)

    def install(self, arrays: Mapping[str, np.ndarray], n_valid: int) -> None:
        """Make ``arrays`` (a loader's staging set) the buffers' values without copying."""
        for f, src in self.sources.items():
            arr = arrays[f]
            if (type(arr) is not np.ndarray or not arr.flags.c_contiguous or arr.dtype != np.dtype(src.dtype)
                    or arr.shape != (self.capacity, *src.row_shape)):
                raise ConfigError(f"{self.name}: staging array for {f!r} must be an owned C-contiguous "
                                  f"{np.dtype(src.dtype)} array of shape {(self.capacity, *src.row_shape)}, "
                                  f"got {type(arr).__name__} {getattr(arr, 'dtype', '?')} "
                                  f"{getattr(arr, 'shape', '?')}")
        for f in self.sources:
            self.shared[f].set_value(arrays[f], borrow=True)
        self.n_valid.set_value(np.array(n_valid, dtype=np.int64))

    def park(self) -> None:
        """Point the buffers at fresh zero arrays (lazily allocated) so none aliases a loader's memory."""
        self.install({f: src.empty(self.capacity) for f, src in self.sources.items()}, 0)
