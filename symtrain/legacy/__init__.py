"""Out-of-core for Theano-style scripts: ``symtrain.shared`` over a memmap, ``symtrain.function`` with a
global batch index (see docs/out-of-core-legacy.md)."""

from symtrain.legacy.function import StreamedFunction, function
from symtrain.legacy.streamed import StreamedSharedVariable, shared

__all__ = ["shared", "function", "StreamedSharedVariable", "StreamedFunction"]
