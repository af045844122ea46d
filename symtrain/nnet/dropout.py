"""Dropout with an explicit random generator and inverted scaling (nothing to rescale at test time)."""

from __future__ import annotations

from symtrain.backend import RandomGeneratorType, RandomStream, pt, rng_binomial
from symtrain.errors import ConfigError

__all__ = ["dropout"]


def dropout(x, p: float, rng):
    """Zero each element of ``x`` with probability ``p`` and scale the survivors by ``1 / (1 - p)``.

    ``rng``: a shared generator from ``symtrain.backend.shared_rng(seed)`` (recommended) or a
    ``RandomStream``. Returns ``(y, updates)``: pass ``updates`` (``{rng: next_rng}``, empty for a
    RandomStream, which updates itself) to ``function`` or the step, or every step reuses the same mask.
    """
    if not isinstance(p, int | float) or not 0 <= p < 1:
        raise ConfigError(f"dropout: p must be a number in [0, 1), got {p!r}")
    x = pt.as_tensor_variable(x)
    if p == 0:
        return x, {}
    keep = 1.0 - p
    if isinstance(rng, RandomStream):
        mask, updates = rng.binomial(n=1, p=keep, size=x.shape), {}
    elif isinstance(getattr(rng, "type", None), RandomGeneratorType):
        next_rng, mask = rng_binomial(rng, 1, keep, x.shape)
        updates = {rng: next_rng}
    else:
        raise ConfigError(
            f"dropout: rng must be a shared generator (backend.shared_rng) or a RandomStream, got {rng!r}"
        )
    return x * pt.cast(mask, x.dtype) * pt.cast(1.0 / keep, x.dtype), updates
