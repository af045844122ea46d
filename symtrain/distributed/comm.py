"""The communicator: a thin layer over an mpi4py communicator with the few collectives training uses.

Per-step traffic goes through ``allreduce_sum`` on contiguous numpy buffers, in place (no pickling);
objects are broadcast only at start-up and on resume. ``abort`` logs which rank failed, then takes the
whole job down (``MPI_Abort``), so no rank waits forever in a collective for a peer that is gone.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn

import numpy as np

from symtrain.errors import ConfigError, SymtrainError

log = logging.getLogger("symtrain.distributed")

FAREWELL = 1e6  # a rank's stop slot when it has left the training loop (a step's slot sums 0/1 flags)


class RanksDivergedError(SymtrainError):
    """The ranks no longer agree: their state differs, or some left the training loop before the others."""


INSTALL_HINT = "install it with `pip install symtrain[mpi]` (mpi4py and the MPICH wheel)"


def mpi() -> Any:
    """The ``mpi4py.MPI`` module (ConfigError with the install command when mpi4py is missing)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ConfigError(f"distributed training needs mpi4py, which is not importable ({exc}); "
                          f"{INSTALL_HINT}") from None
    return MPI


class Comm:
    """Rank, size and the collectives of data-parallel training over one MPI communicator."""

    def __init__(self, comm: Any):
        for attr in ("Get_rank", "Get_size", "Allreduce", "bcast", "Abort"):
            if not hasattr(comm, attr):
                raise ConfigError(f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD), got "
                                  f"{type(comm).__name__} without {attr}")
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())
        self.allreduce_seconds = 0.0
        self.allreduce_calls = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        """Sum the contiguous array ``buf`` over all ranks, in place; returns ``buf``."""
        import time

        t0 = time.perf_counter()
        self.comm.Allreduce(mpi().IN_PLACE, buf, op=mpi().SUM)
        self.allreduce_seconds += time.perf_counter() - t0
        self.allreduce_calls += 1
        return buf

    def allgather_float(self, value: float) -> np.ndarray:
        """Every rank's ``value`` as a float64 vector indexed by rank (one small Allgather)."""
        out = np.zeros(self.size, dtype=np.float64)
        self.comm.Allgather(np.asarray([value], dtype=np.float64), out)
        return out

    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order (pickled: start-up checks only, never per step)."""
        return list(self.comm.allgather(obj))

    def bcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled: start-up and resume only, never per step)."""
        return self.comm.bcast(obj, root=0)

    def bcast_array(self, arr: np.ndarray) -> None:
        """Overwrite the contiguous ``arr`` on every rank with rank 0's values, in place."""
        self.comm.Bcast(arr, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, error: BaseException | str, code: int = 1) -> NoReturn:
        """Log ``error`` naming this rank, flush, then end every rank of the job (never returns)."""
        what = error
        if isinstance(error, BaseException):
            what = f"{type(error).__name__}: {error}"
            log.debug("rank %d traceback", self.rank, exc_info=error)
        message = f"rank {self.rank} of {self.size} (pid {os.getpid()}) failed: {what}"
        print(f"symtrain: {message}; stopping all ranks", file=sys.stderr, flush=True)
        sys.stdout.flush()
        self.comm.Abort(code)  # MPICH returns once the process manager has the request; it kills the job
        os._exit(code)


def get_comm(comm: Any = None) -> Comm:
    """``comm`` wrapped (an mpi4py communicator or a Comm), or ``MPI.COMM_WORLD`` when None."""
    if isinstance(comm, Comm):
        return comm
    if comm is None:
        comm = mpi().COMM_WORLD
    return Comm(comm)


def world_size() -> int:
    """Ranks of the MPI job this process belongs to, judged from the launcher's environment (1 outside).

    Used to decide whether to import mpi4py at all: a plain ``python script.py`` never initialises MPI.
    """
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 1


def world_rank() -> int:
    """This process's rank in the MPI job, from the launcher's environment (0 outside MPI)."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 0
