"""Optimizers as update builders (Lasagne style) and learning-rate schedules held in shared variables."""

from symtrain.optim.clip import clip_by_global_norm, get_or_compute_grads, global_norm
from symtrain.optim.schedules import (
    Schedule,
    constant,
    cosine,
    exponential,
    linear_warmup,
    step_decay,
)
from symtrain.optim.updates import (
    UpdateRule,
    adadelta,
    adagrad,
    adam,
    adamw,
    counter,
    momentum,
    nesterov_momentum,
    rmsprop,
    sgd,
    slot,
)

__all__ = [
    "sgd", "momentum", "nesterov_momentum", "adagrad", "rmsprop", "adadelta", "adam", "adamw",
    "UpdateRule", "slot", "counter", "clip_by_global_norm", "global_norm", "get_or_compute_grads",
    "Schedule", "constant", "step_decay", "exponential", "cosine", "linear_warmup",
]
