"""Small helpers shared by conv and pool: static sizes when known, symbolic ones otherwise."""

from __future__ import annotations

from symtrain.backend import SharedVariable, pt
from symtrain.errors import ConfigError
from symtrain.validate import is_int


def static_dims(var) -> tuple[int | None, ...]:
    """The static shape of ``var`` (None where unknown); a shared variable's current value fills gaps."""
    shape = tuple(getattr(var.type, "shape", None) or (None,) * var.ndim)
    if isinstance(var, SharedVariable) and any(s is None for s in shape):
        value_shape = var.get_value(borrow=True).shape
        shape = tuple(s if s is not None else int(v) for s, v in zip(shape, value_shape))
    return tuple(None if s is None else int(s) for s in shape)


def dim(var, axis: int):
    """``var.shape[axis]`` as a Python int when static, else the symbolic scalar."""
    known = static_dims(var)[axis]
    return known if known is not None else var.shape[axis]


def int_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """Accept an int or a pair of ints (Theano accepted both) and check the lower bound."""
    pair = tuple(value) if isinstance(value, tuple | list) else (value, value)
    if len(pair) != 2 or not all(is_int(v) for v in pair):
        raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def pad_to(x, top: int, left: int, rows, cols, fill):
    """``x`` placed at (top, left) of a (..., rows, cols) array filled with ``fill`` (last two axes)."""
    lead = [x.shape[i] for i in range(x.ndim - 2)]
    canvas = pt.alloc(pt.cast(fill, x.dtype), *lead, rows, cols)
    region = (slice(None),) * (x.ndim - 2) + (slice(top, top + x.shape[-2]), slice(left, left + x.shape[-1]))
    return pt.set_subtensor(canvas[region], x)
