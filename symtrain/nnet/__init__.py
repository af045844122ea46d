"""The neural-network layer PyTensor removed from ``tensor.nnet`` / ``tensor.signal``, with Theano's
signatures and defaults: activations, softmax, crossentropies, conv2d, pooling, batch norm, dropout.

``symtrain migrate`` rewrites ``T.nnet.*`` and ``downsample``/``pool`` calls to these names.
"""

from __future__ import annotations

from symtrain import backend as _backend
from symtrain.nnet.activations import (
    elu,
    hard_sigmoid,
    log_softmax,
    relu,
    round,
    sigmoid,
    softmax,
    softplus,
    ultra_fast_sigmoid,
)
from symtrain.nnet.conv import conv2d, conv_output_shape
from symtrain.nnet.dropout import dropout
from symtrain.nnet.losses import binary_crossentropy, categorical_crossentropy
from symtrain.nnet.normalization import (
    batch_normalization,
    batch_normalization_test,
    batch_normalization_train,
)
from symtrain.nnet.pool import max_pool_2d, pool_2d, pool_output_shape

if _backend.NAME == "pytensor":
    try:  # registers the Ops' Numba kernels with PyTensor's dispatcher; without numba, perform runs
        import symtrain.nnet.numba_kernels  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a PyTensor dependency
        pass

__all__ = [
    "sigmoid",
    "softplus",
    "ultra_fast_sigmoid",
    "hard_sigmoid",
    "relu",
    "elu",
    "softmax",
    "log_softmax",
    "round",
    "categorical_crossentropy",
    "binary_crossentropy",
    "conv2d",
    "conv_output_shape",
    "pool_2d",
    "max_pool_2d",
    "pool_output_shape",
    "batch_normalization",
    "batch_normalization_train",
    "batch_normalization_test",
    "dropout",
]
