"""Which rank hosts which clients, and which device a rank computes on.

With P ranks and n clients: P = 1 runs everything in one process; otherwise rank 0 is the server and ranks 1..P−1
host contiguous blocks of clients (n = P−1 is the paper's one client per rank; n > P−1 packs several per rank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class Placement:
    rank: int
    size: int
    local_rank: int
    device: torch.device
    clients: range  # the clients this rank hosts, in client order

    @property
    def is_server(self) -> bool:
        return self.rank == 0


def block(n: int, workers: int, index: int) -> range:
    """Clients of worker ``index`` of ``workers`` when n clients are dealt in contiguous, near-equal blocks."""
    base, extra = divmod(n, workers)
    start = index * base + min(index, extra)
    return range(start, start + base + (1 if index < extra else 0))


def client_blocks(n: int, size: int) -> list[range]:
    """The hosted clients of every rank 0..size−1 (rank 0 hosts none when there are client ranks)."""
    if size == 1:
        return [range(n)]
    if n < size - 1:
        raise ConfigError(
            f"clients={n} is fewer than the {size - 1} client ranks of this {size}-rank job; "
            f"run with mpirun -n {n + 1} or fewer, or raise clients."
        )
    return [range(0)] + [block(n, size - 1, i) for i in range(size - 1)]


def gpu_slot(local_rank: int, n_gpus: int) -> int:
    """The visible GPU a rank binds to: node-local ranks go round the node's visible GPUs."""
    return local_rank % n_gpus


def choose_device(preference: str, local_rank: int) -> torch.device:
    """``cuda:(local_rank mod n_gpus)`` when GPUs are visible (under ``--gpus-per-task=1`` that is cuda:0), else CPU."""
    gpus = torch.cuda.device_count() if preference != "cpu" else 0
    if preference == "cuda" and gpus == 0:
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu.")
    if gpus == 0:
        return torch.device("cpu")
    return torch.device(f"cuda:{gpu_slot(local_rank, gpus)}")


def pin_kernels(device: torch.device, deterministic: bool) -> None:
    """Make a GPU compute the same numbers for the same shapes: no cuDNN autotuning (which picks convolution
    algorithms by timing, differently per run) and deterministic algorithms only. Nothing to do on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


def resolve(rank: int, size: int, local_rank: int, n_clients: int, device_preference: str,
            deterministic: bool = True) -> Placement:
    """This rank's clients and device, the one place that decides where its tensors live."""
    device = choose_device(device_preference, local_rank)
    pin_kernels(device, deterministic)
    return Placement(rank, size, local_rank, device, client_blocks(n_clients, size)[rank])


def gpu_binding(local_rank: int) -> str:
    """Which GPU this rank binds to, from what the scheduler exposed (``CUDA_VISIBLE_DEVICES``), for `mpifl info`.

    Reported even where torch cannot open the devices, so the binding can be checked on any node.
    """
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v]
    count = torch.cuda.device_count() or len(visible)
    if count == 0:
        return "none (no GPU visible)"
    slot = gpu_slot(local_rank, count)
    physical = visible[slot] if slot < len(visible) else str(slot)
    return f"cuda:{slot} = GPU {physical} (CUDA_VISIBLE_DEVICES={','.join(visible) or 'unset'})"
