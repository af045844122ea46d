"""How ``fit`` runs under MPI: pick the communicator, do rank-0-only work, take every rank down on a fault.

A fault on one rank (an exception, a second Ctrl-C) must not leave the others blocked in a collective:
``guarded`` logs the error naming the rank and calls ``MPI_Abort``, which ends every rank of the job
within a moment (mpiexec also ends the job when a rank is killed outright). Checkpoints are published
atomically by rank 0, so the last one stays intact and ``--resume`` continues from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from symtrain.distributed.comm import Comm, get_comm
from symtrain.distributed.launch import register_rank
from symtrain.errors import ConfigError

T = TypeVar("T")


def resolve_comm(distributed: Any, comm: Any) -> Comm | None:
    """The Comm to train over, or None for a plain one-process run (one rank runs exactly as without MPI)."""
    if not isinstance(distributed, bool):
        raise ConfigError(f"distributed must be True or False, got {distributed!r}")
    if not distributed and comm is None:
        return None
    c = get_comm(comm)
    register_rank(c.rank)
    if c.size == 1:
        return None
    if c.rank != 0:  # only rank 0 talks; the others still print errors
        logging.getLogger("symtrain").setLevel(logging.ERROR)
    return c


def on_root(comm: Comm, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; an error it raises is raised on every rank (so none waits for rank 0)."""
    result: Any = None
    error: BaseException | None = None
    if comm.rank == 0:
        try:
            result = fn()
        except Exception as exc:  # sent to every rank below
            error = exc
    error = comm.bcast(error)
    if error is not None:
        raise error
    return result


def guarded(comm: Comm, fn: Callable[[], T]) -> T:
    """``fn()``; on any exception on this rank, log it naming the rank and abort the whole MPI job."""
    try:
        return fn()
    except BaseException as exc:
        comm.abort(exc)


def abort_on_error(fn: Callable[[], T]) -> T:
    """In a rank of an MPI job, ``fn()``; any exception or exit on this rank ends every rank of the job
    with the error naming this rank (an error before ``fit``, e.g. in a script's ``build()`` on one rank
    only, would otherwise leave the other ranks waiting in their first collective forever)."""
    return guarded(get_comm(), fn)
