"""How theta goes out and updates come back: in-process, or over MPI with raw buffers.

This is the one module that speaks MPI. Client→server traffic uses upper-case mpi4py calls on float32/uint8 numpy
buffers only, never pickle, so a Byzantine client can send wrong numbers but never code. Torch tensors are shared
with numpy zero-copy on the host; device tensors are passed to a CUDA-aware MPI as they are and otherwise staged
through pinned host memory (`mpifl info` says which applies; PyPI's Open MPI wheel is not CUDA-aware).
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np
import torch

_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS")
_MESSAGE_BYTES = 1024


class LocalTransport:
    """One process: rank 0 hosts the server and every client; collectives are identities."""

    rank, size, local_rank = 0, 1, 0

    def configure(self, blocks: list[range], dim: int, device: torch.device, planes: int = 1) -> None:
        """Nothing to preallocate in one process."""

    def broadcast(self, theta: torch.Tensor) -> torch.Tensor:
        return theta

    def gather(self, block: torch.Tensor, plane: int = 0) -> torch.Tensor:
        return block

    def gather_stats(self, stats: np.ndarray) -> np.ndarray:
        return stats.reshape(1, -1)

    def scatter(self, full: torch.Tensor | None, block: torch.Tensor) -> torch.Tensor:
        assert full is not None
        return full.to(block.device, copy=True)

    def share_int(self, value: int) -> int:
        return value

    def highest(self, value: int) -> int:
        return value

    def agree(self, error: str | None) -> str | None:
        return error

    def fail(self, exc: BaseException) -> None:
        """A failure in one process needs no coordination: the caller re-raises it."""


def cuda_aware() -> bool:
    """Whether the MPI library can read CUDA device buffers (Open MPI's MPIX_Query_cuda_support via mpi4py)."""
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    return bool(query()) if query is not None else False


class MpiTransport:
    """Rank 0 serves; Bcast of theta, Gatherv of each rank's [k_local, d] block into [n, d] in client order."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank = node.Get_rank()
        node.Free()

    def configure(self, blocks: list[range], dim: int, device: torch.device, planes: int = 1) -> None:
        """Allocate the round's buffers once and fix the Gatherv layout (rank r sends len(blocks[r]) rows of d floats).

        The wire buffers live on the device when MPI reads it directly (CPU, or GPU with CUDA-aware MPI); otherwise
        they are pinned host memory (fast DMA staging) with device twins, also allocated once. θ and rank 0's [n, d]
        matrix are handed out as these buffers, not copies, so nothing model-sized is allocated per round. ``planes``
        is how many such matrices a round gathers (2 under an attack that reads the honest clients' flipped-label
        gradients, :attr:`mpifl.attacks.Attack.needs_flipped`), each into its own receive buffer.
        """
        on_gpu = device.type == "cuda"
        self.direct = not on_gpu or cuda_aware()
        where = device if self.direct else torch.device("cpu")

        def alloc(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=torch.float32, device=where, pin_memory=not self.direct)

        def twin(wire: torch.Tensor) -> torch.Tensor:
            return wire if self.direct else torch.empty(wire.shape, dtype=wire.dtype, device=device)

        self.counts = np.array([len(b) * dim for b in blocks], dtype=np.int64)
        self.displs = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.theta = alloc(dim)
        self.theta_dev = twin(self.theta)
        self.send = alloc(len(blocks[self.rank]), dim)
        wires = [alloc(sum(len(b) for b in blocks), dim) for _ in range(planes)] if self.rank == 0 else []
        self.planes = [(wire, twin(wire)) for wire in wires]
        self.recv = self.planes[0][0] if self.planes else None  # the updates' wire buffer, which scatter reuses

    def _wire(self, t: torch.Tensor):  # type: ignore[no-untyped-def]
        """What mpi4py is handed: the device tensor itself (CUDA-aware) or a zero-copy numpy view."""
        return [t if self.direct and t.device.type == "cuda" else t.numpy(), self.MPI.FLOAT]

    def broadcast(self, theta: torch.Tensor) -> torch.Tensor:
        """θ on every rank, as this rank's θ buffer (overwritten by the next broadcast)."""
        if self.rank == 0:
            self.theta.copy_(theta)
        self.comm.Bcast(self._wire(self.theta), root=0)
        if self.theta_dev is not self.theta:
            self.theta_dev.copy_(self.theta)
        return self.theta_dev

    def gather(self, block: torch.Tensor, plane: int = 0) -> torch.Tensor | None:
        """Rank 0: the [n, d] matrix in client order, as the receive buffer of ``plane`` (overwritten next round);
        else None."""
        self.send.copy_(block)
        if self.rank == 0:
            recv, recv_dev = self.planes[plane]
            buf, mpi_type = self._wire(recv)
            self.comm.Gatherv(self._wire(self.send), [buf, (self.counts, self.displs), mpi_type], root=0)
            if recv_dev is not recv:
                recv_dev.copy_(recv)
            return recv_dev
        self.comm.Gatherv(self._wire(self.send), None, root=0)
        return None

    def gather_stats(self, stats: np.ndarray) -> np.ndarray | None:
        """Every rank's float64 statistics of the round (compute time, peak memory) as [P, k] at rank 0 (raw buffers,
        not pickled objects)."""
        send = np.ascontiguousarray(stats, dtype=np.float64)
        recv = np.empty((self.size, send.size), dtype=np.float64) if self.rank == 0 else None
        self.comm.Gather([send, self.MPI.DOUBLE], [recv, self.MPI.DOUBLE] if recv is not None else None, root=0)
        return recv

    def scatter(self, full: torch.Tensor | None, block: torch.Tensor) -> torch.Tensor:
        """Server → clients: rank 0's [n, d] matrix back into each rank's [k_local, d] block (Scatterv, the layout of
        :meth:`gather`); ``block`` gives the shape and device of the result."""
        if self.rank == 0:
            assert full is not None and self.recv is not None
            self.recv.copy_(full)
            buf, mpi_type = self._wire(self.recv)
            self.comm.Scatterv([buf, (self.counts, self.displs), mpi_type], self._wire(self.send), root=0)
        else:
            self.comm.Scatterv(None, self._wire(self.send), root=0)
        return self.send.to(block.device, copy=True)

    def share_int(self, value: int) -> int:
        """Rank 0's integer on every rank."""
        buf = np.array([value], dtype=np.int64)
        self.comm.Bcast([buf, self.MPI.INT64_T], root=0)
        return int(buf[0])

    def highest(self, value: int) -> int:
        """The largest ``value`` of any rank, on every rank (a signal may reach only some ranks, an error only one)."""
        send = np.array([value], dtype=np.int32)
        recv = np.zeros(1, dtype=np.int32)
        self.comm.Allreduce([send, self.MPI.INT], [recv, self.MPI.INT], op=self.MPI.MAX)
        return int(recv[0])

    def agree(self, error: str | None) -> str | None:
        """Collectively decide whether set-up failed anywhere; every rank gets the first rank's message.

        Messages travel as fixed-size UTF-8 byte buffers (Allgather), so no rank ever unpickles another's data.
        """
        send = np.zeros(_MESSAGE_BYTES, dtype=np.uint8)
        if error:
            raw = f"rank {self.rank}: {error}".encode()[:_MESSAGE_BYTES]
            send[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        recv = np.empty((self.size, _MESSAGE_BYTES), dtype=np.uint8)
        self.comm.Allgather([send, self.MPI.BYTE], [recv, self.MPI.BYTE])
        for row in recv:
            if row.any():
                return bytes(row).rstrip(b"\0").decode(errors="replace")
        return None

    def fail(self, exc: BaseException) -> None:
        """This rank failed mid-run: say why, then abort the whole job, so no rank waits forever in a collective."""
        print(f"[mpifl] rank {self.rank} failed in the round loop ({exc}); aborting every rank:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        self.comm.Abort(1)


Transport = LocalTransport | MpiTransport


def launched_by_mpi() -> bool:
    """True under mpirun/mpiexec/srun; a plain `mpifl train` then never initialises MPI."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def create() -> Transport:
    if launched_by_mpi():
        transport = MpiTransport()
        if transport.size > 1:
            return transport
    return LocalTransport()
