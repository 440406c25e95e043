"""Torch's CPU threads per rank: the node's cores shared among the ranks on it, unless the user chose.

torch starts one thread per core in every process, so P ranks on a node run P×cores threads on its cores and
oversubscribe it P-fold (rounds get slower, not faster, with more ranks). A single process keeps torch's own default,
so its results stay bit-identical to earlier releases.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Set by the user (or the batch system): mpifl leaves torch's threads alone.
USER_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: How many ranks share this node, from Open MPI, MPICH/Hydra and SLURM (which may write "4(x2)").
LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE")


def ranks_on_node(env: Mapping[str, str]) -> int:
    """The number of ranks on this node the launcher says, 1 without one."""
    for var in LOCAL_SIZE_VARS:
        digits = env.get(var, "").split("(")[0]
        if digits.isdigit() and int(digits) > 0:
            return int(digits)
    return 1


def choose(env: Mapping[str, str], cores: int) -> tuple[int | None, str]:
    """(threads to set or None to leave torch's default, why) for a node of ``cores`` cores usable by this rank."""
    for var in USER_VARS:
        if env.get(var):
            return None, f"{var}={env[var]} set"
    ranks = ranks_on_node(env)
    if ranks == 1:
        return None, "torch's default for one process per node"
    return max(1, cores // ranks), f"{cores} cores / {ranks} ranks on this node"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask when the launcher binds it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure() -> str:
    """Set torch's thread count for this rank (see :func:`choose`); returns the line `mpifl info` shows."""
    import torch

    threads, why = choose(os.environ, usable_cores())
    if threads is not None:
        torch.set_num_threads(threads)
    return f"torch threads: {torch.get_num_threads()} ({why})"
