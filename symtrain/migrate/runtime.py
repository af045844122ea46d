"""Runtime pieces that migrated scripts call where PyTensor removed an API with no one-line replacement.

- ``RandomStreams`` / ``MRG_RandomStreams``: Theano's random streams with their old method signatures
  (``binomial(size, n, p, ndim, dtype)``, ``uniform(size, low, high, ndim, dtype)``,
  ``normal(size, avg, std, ndim, dtype)``), positional calls included, on PyTensor's ``RandomStream``.
- ``In`` / ``Param`` / ``function``: inputs with default values (PyTensor rejects ``In(x, value=v)``).
- ``dump`` / ``load``: ``theano.misc.pkl_utils`` zip files (a pickle plus one ``.npy`` per array).
"""

from __future__ import annotations

import io
import math
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from symtrain.backend import In as _BackendIn
from symtrain.backend import RandomStream, config, pt
from symtrain.backend import function as _backend_function


class RandomStreams:
    """Theano's ``shared_randomstreams.RandomStreams`` and ``rng_mrg.MRG_RandomStreams``, old signatures.

    Both Theano classes took ``size`` first and spelled the parameters ``n, p`` / ``low, high`` /
    ``avg, std``; PyTensor takes the distribution parameters first and ``size=`` last, so a positional
    call like ``rng.uniform((2, 3), -1, 1)`` silently means something else there. Random updates are the
    shared RNG's default updates, collected by ``function`` (and by ``scan``) as in Theano.
    """

    def __init__(self, seed: int | None = None, use_cuda: Any = None):
        with warnings.catch_warnings():
            # RandomStream is deprecated in PyTensor 3 (FutureWarning); it is what this shim is for
            warnings.simplefilter("ignore", FutureWarning)
            self._stream = RandomStream(None if seed is None else int(seed))

    def seed(self, seed: int | None = None) -> None:
        """Reseed every random variable created so far (Theano's ``seed``)."""
        self._stream.seed(None if seed is None else int(seed))

    def updates(self) -> list:
        """The (shared rng, next rng) pairs, for code that passes them to ``function`` explicitly."""
        return self._stream.updates()

    def binomial(self, size=None, n=1, p=0.5, ndim=None, dtype="int64", nstreams=None, prob=None):
        """``n`` trials with success probability ``p``; ``dtype`` is applied by a cast, as Theano did."""
        if prob is not None:
            p = prob
        out = self._stream.binomial(n, p, size=_size(size))
        return out if dtype is None or out.dtype == dtype else out.astype(dtype)

    def uniform(self, size=None, low=0.0, high=1.0, ndim=None, dtype=None, nstreams=None):
        """Uniform on ``[low, high)``; ``dtype`` defaults to ``floatX`` as in Theano."""
        return self._stream.uniform(low, high, size=_size(size), dtype=dtype or config.floatX)

    def normal(self, size=None, avg=0.0, std=1.0, ndim=None, dtype=None, nstreams=None, truncate=False):
        """Gaussian with mean ``avg`` and standard deviation ``std``; ``dtype`` defaults to ``floatX``."""
        dtype = dtype or config.floatX
        if truncate:
            # MRG's truncate=True: within two standard deviations, by inverting the CDF of a uniform draw
            # restricted to [Phi(-2), Phi(2)]
            low = 0.5 * (1.0 + math.erf(-2.0 / math.sqrt(2.0)))
            u = self._stream.uniform(low, 1.0 - low, size=_size(size), dtype=dtype)
            return (avg + std * math.sqrt(2.0) * pt.erfinv(2.0 * u - 1.0)).astype(dtype)
        return self._stream.normal(avg, std, size=_size(size), dtype=dtype)

    def multinomial(self, size=None, n=1, pvals=None, ndim=None, dtype="int64", nstreams=None):
        """One multinomial draw per row of ``pvals`` (MRG's one-hot samples when ``n=1``)."""
        out = self._stream.multinomial(n, pvals, size=_size(size))
        return out if dtype is None or out.dtype == dtype else out.astype(dtype)

    def random_integers(self, size=None, low=0, high=1, ndim=None, dtype="int64"):
        """Integers in ``[low, high]`` (inclusive, as Theano's ``random_integers``)."""
        return self._stream.integers(low, high + 1, size=_size(size), dtype=dtype)

    def permutation(self, size=None, n=1, ndim=None, dtype="int64"):
        """A random permutation of ``range(n)``."""
        return self._stream.permutation(n).astype(dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class MRG_RandomStreams(RandomStreams):  # noqa: N801 - Theano's name
    """Theano's ``rng_mrg.MRG_RandomStreams``: unseeded (or ``seed=None``, which Theano refused), Theano's
    default seed 12345, so runs repeat."""

    def __init__(self, seed: int | None = 12345, use_cuda: Any = None):
        super().__init__(12345 if seed is None else seed, use_cuda)


def _size(size):
    if size is None or isinstance(size, int | np.integer) or hasattr(size, "type"):
        return size
    return tuple(size)


class In:
    """An input with a default value (Theano's ``In(variable, name=None, value=None, ...)``)."""

    def __init__(
        self,
        variable,
        name=None,
        value=None,
        update=None,
        mutable=None,
        strict=False,
        allow_downcast=None,
        autoname=True,
        implicit=None,
        borrow=None,
        shared=False,
    ):
        self.variable = variable
        self.name = name if name is not None else getattr(variable, "name", None)
        self.value = value
        self.has_default = value is not None
        self.options = {
            "mutable": mutable,
            "strict": strict,
            "allow_downcast": allow_downcast,
            "borrow": borrow,
        }


def Param(
    variable,
    default=None,
    name=None,
    mutable=False,
    strict=False,
    allow_downcast=None,  # noqa: N802
    implicit=None,
    borrow=None,
) -> In:
    """Theano's ``Param(variable, default=...)``: the older spelling of ``In(variable, value=...)``."""
    return In(
        variable,
        name=name,
        value=default,
        mutable=mutable,
        strict=strict,
        allow_downcast=allow_downcast,
        borrow=borrow,
    )


class FunctionWithDefaults:
    """A compiled function whose missing arguments take the defaults given with ``In``/``Param``."""

    def __init__(self, fn, names: Sequence[str | None], defaults: Sequence[Any], has_default: Sequence[bool]):
        self.fn = fn
        self.names = list(names)
        self.defaults = list(defaults)
        self.has_default = list(has_default)

    def __call__(self, *args, **kwargs):
        if len(args) > len(self.names):
            raise TypeError(f"function takes at most {len(self.names)} arguments, got {len(args)}")
        values = list(args)
        for i in range(len(args), len(self.names)):
            name = self.names[i]
            if name is not None and name in kwargs:
                values.append(kwargs.pop(name))
            elif self.has_default[i]:
                values.append(self.defaults[i])
            else:
                raise TypeError(f"missing a value for input {i} ({name or 'unnamed'})")
        if kwargs:
            raise TypeError(f"unknown input name(s): {', '.join(sorted(kwargs))}")
        return self.fn(*values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fn, name)


def function(inputs: Sequence[Any], outputs: Any = None, *args: Any, **kwargs: Any) -> Any:
    """``pytensor.function`` that also accepts ``In(x, value=v)`` / ``Param(x, default=v)`` inputs."""
    inputs = list(inputs)
    plain, names, defaults, has_default = [], [], [], []
    for item in inputs:
        if isinstance(item, In):
            options = {k: v for k, v in item.options.items() if v is not None}
            plain.append(_BackendIn(item.variable, name=item.name, **options))
            names.append(item.name)
            defaults.append(item.value)
            has_default.append(item.has_default)
        else:
            plain.append(item)
            names.append(getattr(getattr(item, "variable", item), "name", None))
            defaults.append(None)
            has_default.append(False)
    fn = _backend_function(plain, outputs, *args, **kwargs)
    if not any(has_default):
        return fn
    return FunctionWithDefaults(fn, names, defaults, has_default)


def batch_chunks(batch: Callable[[int], Any], n_batches: int | None = None) -> Callable[[], Iterator[Any]]:
    """A per-batch function (``lambda batch_num: ...``) as what ``symtrain.shared`` streams: a callable that
    returns an iterator over ``batch(0), batch(1), ...``, ending at ``n_batches``, at a ``None`` or empty
    batch, or when ``batch`` raises ``IndexError``/``StopIteration``. The batches, in order, are the rows."""

    def chunks() -> Iterator[Any]:
        k = 0
        while n_batches is None or k < n_batches:
            try:
                out = batch(k)
            except (IndexError, StopIteration):
                return
            if out is None or len(out) == 0:
                return
            yield out
            k += 1

    return chunks


def dump(obj: Any, file_handler, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    """Write ``obj`` the way ``theano.misc.pkl_utils.dump`` did: a zip of a pickle and one .npy per array."""
    arrays: dict[int, str] = {}
    with zipfile.ZipFile(file_handler, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:

        class _Pickler(pickle.Pickler):
            def persistent_id(self, value):
                if type(value) is np.ndarray:
                    key = id(value)
                    if key not in arrays:
                        arrays[key] = name = f"array_{len(arrays)}"
                        buf = io.BytesIO()
                        np.lib.format.write_array(buf, value)
                        zf.writestr(name, buf.getvalue())
                    return arrays[key]
                return None

        buf = io.BytesIO()
        _Pickler(buf, protocol).dump(obj)
        zf.writestr("pkl", buf.getvalue())


def load(f) -> Any:
    """Read a ``theano.misc.pkl_utils.dump`` zip (Python 2 ones too: strings are read as latin1)."""
    with zipfile.ZipFile(f, "r") as zf:
        loaded: dict[str, np.ndarray] = {}

        class _Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                if isinstance(pid, bytes):
                    pid = pid.decode("latin1")
                name = pid.split(".", 1)[1] if pid.startswith("cuda_ndarray.") else pid
                if name not in loaded:  # one array shared by several references stays one object
                    with zf.open(name) as member:
                        loaded[name] = np.lib.format.read_array(io.BytesIO(member.read()), allow_pickle=False)
                return loaded[name]

        with zf.open("pkl") as member:
            return _Unpickler(io.BytesIO(member.read()), encoding="latin1").load()


__all__ = [
    "RandomStreams",
    "MRG_RandomStreams",
    "In",
    "Param",
    "function",
    "FunctionWithDefaults",
    "batch_chunks",
    "dump",
    "load",
]
