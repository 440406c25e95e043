"""`mpifl info`: what this rank runs with, so a cluster user can see binding and MPI before a long job."""

from __future__ import annotations

import platform

import torch

from . import __version__, threads, transport
from .placement import choose_device, gpu_binding


def _mpi_lines() -> tuple[list[str], int, int, int]:
    if not transport.launched_by_mpi():
        return ["mpi: not launched by mpirun/srun (single process)"], 0, 1, 0
    from mpi4py import MPI

    tp = transport.MpiTransport()
    cuda_aware = "yes" if transport.cuda_aware() else "no"
    vendor, version = MPI.get_vendor()
    lines = [f"mpi: {vendor} {'.'.join(map(str, version))}; MPI {MPI.Get_version()[0]}.{MPI.Get_version()[1]}; "
             f"CUDA-aware: {cuda_aware}"]
    return lines, tp.rank, tp.size, tp.local_rank


def describe() -> str:
    mpi, rank, size, local = _mpi_lines()
    device = choose_device("auto", local)
    lines = [
        f"mpifl {__version__}, python {platform.python_version()}, torch {torch.__version__}",
        *mpi,
        f"rank {rank}/{size} local_rank {local} host {platform.node()} device {device} gpu binding "
        f"{gpu_binding(local)}; torch sees {torch.cuda.device_count()} CUDA devices",
        threads.configure(),
    ]
    return "\n".join(lines)
