"""The single import point of the graph library: PyTensor by default, Aesara with SYMTRAIN_BACKEND=aesara.

Every other module takes ``pt``, ``function``, ``shared`` and friends from here, so switching the backend
is one environment variable and no module imports pytensor or aesara itself.
"""

from __future__ import annotations

import os

import numpy as np

from symtrain.errors import ConfigError

NAME = os.environ.get("SYMTRAIN_BACKEND", "pytensor").strip().lower() or "pytensor"

if NAME == "pytensor":
    # The pip wheels link no BLAS for the C backend; an explicit empty value silences the import-time
    # warning (Numba, the default mode, does its own BLAS calls). A user's own setting wins (PyTensor
    # 3 reads only the ``blas__ldflags`` spelling; a dotted ``blas.ldflags`` key is silently ignored).
    _flags = os.environ.get("PYTENSOR_FLAGS", "")
    if "blas__ldflags" not in _flags:
        os.environ["PYTENSOR_FLAGS"] = ",".join(f for f in (_flags, "blas__ldflags=") if f)
    import pytensor as graph
    import pytensor.scalar as ps
    import pytensor.tensor as pt
    from pytensor.compile import UnusedInputError
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.gradient import DisconnectedInputError, DisconnectedType, verify_grad
    from pytensor.graph.basic import Apply, Constant
    from pytensor.graph.op import Op
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.traversal import ancestors
    from pytensor.graph.utils import MissingInputError
    from pytensor.ifelse import ifelse
    from pytensor.scan import scan
    from pytensor.tensor import special
    from pytensor.tensor.basic import ScalarFromTensor, TensorFromScalar
    from pytensor.tensor.elemwise import DimShuffle, Elemwise
    from pytensor.tensor.random.type import RandomGeneratorType
    from pytensor.tensor.random.utils import RandomStream
    from pytensor.tensor.sharedvar import TensorSharedVariable
    from pytensor.tensor.subtensor import Subtensor, get_idx_list
    from pytensor.tensor.variable import TensorVariable

    signal = pt.signal  # scipy-style convolve1d/convolve2d (PyTensor only)

    def shared_rng(seed: int):
        """A shared random Generator variable: draws go through ``rng_binomial`` and friends."""
        return pt.random.shared_rng(seed=seed)

    def rng_binomial(rng, n, p, size):
        """Draw from ``rng``; returns ``(next_rng, draw)`` so callers put ``{rng: next_rng}`` in updates."""
        return rng.binomial(n, p, size=size)
elif NAME == "aesara":
    # Same reason as above: without a setting, Aesara probes numpy.distutils for a BLAS at import time
    # (three UserWarnings) and then uses NumPy's C-API BLAS anyway.
    _flags = os.environ.get("AESARA_FLAGS", "")
    if "blas__ldflags" not in _flags and "blas.ldflags" not in _flags:
        os.environ["AESARA_FLAGS"] = ",".join(f for f in (_flags, "blas__ldflags=") if f)
    import aesara as graph
    import aesara.scalar as ps
    import aesara.tensor as pt
    from aesara.compile import UnusedInputError
    from aesara.compile.sharedvalue import SharedVariable
    from aesara.gradient import DisconnectedInputError, DisconnectedType, verify_grad
    from aesara.graph.basic import Apply, Constant, ancestors, clone_replace
    from aesara.graph.op import Op
    from aesara.graph.utils import MissingInputError
    from aesara.ifelse import ifelse
    from aesara.scan import scan
    from aesara.tensor import special
    from aesara.tensor.basic import ScalarFromTensor, TensorFromScalar
    from aesara.tensor.elemwise import DimShuffle, Elemwise
    from aesara.tensor.random.type import RandomGeneratorType
    from aesara.tensor.random.utils import RandomStream
    from aesara.tensor.sharedvar import TensorSharedVariable
    from aesara.tensor.subtensor import Subtensor, get_idx_list
    from aesara.tensor.var import TensorVariable

    signal = None  # Aesara 2.9 has no tensor.signal.convolve2d

    def shared_rng(seed: int):
        """A shared random Generator variable: draws go through ``rng_binomial`` and friends."""
        return graph.shared(np.random.default_rng(seed))

    def rng_binomial(rng, n, p, size):
        """Draw from ``rng``; returns ``(next_rng, draw)`` so callers put ``{rng: next_rng}`` in updates."""
        draw = pt.random.binomial(n, p, size=size, rng=rng)
        return draw.owner.outputs[0], draw
else:
    raise ConfigError(f"SYMTRAIN_BACKEND={NAME!r} is not supported: use 'pytensor' (default) or 'aesara'")

function = graph.function
shared = graph.shared
config = graph.config
grad = graph.grad
In = graph.In
Out = graph.Out
Mode = graph.compile.mode.Mode
get_mode = graph.compile.mode.get_mode
VERSION = graph.__version__
# Moved out of tensor.nnet in both libraries; symtrain.nnet re-exports these very objects so identity
# comparisons such as ``activation == T.nnet.sigmoid`` keep holding after migration.
sigmoid = pt.sigmoid
softplus = pt.softplus

upcast = ps.upcast

__all__ = [
    # the public face: what user code and symtrain's layers build graphs with
    "NAME", "VERSION", "graph", "pt", "ps", "special", "function", "shared", "config", "grad", "In", "Out",
    "Mode", "get_mode", "ancestors", "clone_replace", "SharedVariable", "TensorSharedVariable",
    "TensorVariable", "ifelse", "scan", "RandomStream", "RandomGeneratorType", "verify_grad", "sigmoid",
    "softplus", "signal", "shared_rng", "rng_binomial",
    # graph internals the legacy layer and the nnet Ops use (same names in both libraries)
    "Op", "Apply", "Constant", "Elemwise", "DimShuffle", "Subtensor", "get_idx_list", "ScalarFromTensor",
    "TensorFromScalar", "DisconnectedType", "upcast",
    # the graph library's errors symtrain translates into ConfigError
    "MissingInputError", "UnusedInputError", "DisconnectedInputError",
]
