"""Data-parallel training over MPI (mpi4py): sharded plans, a synchronous Allreduce step, a trainer.

Run ``symtrain train SCRIPT ... --ranks N``, or ``mpiexec -n N python script.py`` with
``st.fit(..., distributed=True)``. See docs/distributed.md. mpi4py is imported only when used.
"""

from __future__ import annotations

from symtrain.lazy import lazy_exports

_LAZY = {
    "Comm": "symtrain.distributed.comm",
    "get_comm": "symtrain.distributed.comm",
    "ShardSpec": "symtrain.distributed.shard",
    "shard_stream": "symtrain.distributed.shard",
    "shard_load": "symtrain.distributed.shard",
    "DistributedStep": "symtrain.distributed.step",
    "DistributedTrainer": "symtrain.distributed.trainer",
    "RanksDivergedError": "symtrain.distributed.comm",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = list(_LAZY)
