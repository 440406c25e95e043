"""Torch threads per rank: cores shared among the ranks of a node unless the user chose (OMP_NUM_THREADS)."""

import os
import subprocess
import sys

import torch

from mpifl.threads import choose, configure

from .mpi_helpers import PYTHONPATH


def test_ranks_on_a_node_share_its_cores():
    assert choose({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, 16) == (4, "16 cores / 4 ranks on this node")
    assert choose({"SLURM_NTASKS_PER_NODE": "3(x2)"}, 16)[0] == 5
    assert choose({"MPI_LOCALNRANKS": "32"}, 16)[0] == 1  # oversubscribed: one each, never zero


def test_the_users_choice_and_a_single_process_keep_torchs_default():
    assert choose({"OMPI_COMM_WORLD_LOCAL_SIZE": "4", "OMP_NUM_THREADS": "2"}, 16) == (None, "OMP_NUM_THREADS=2 set")
    assert choose({}, 16) == (None, "torch's default for one process per node")


def test_configure_sets_torch_and_info_shows_it(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", str(10 * os.cpu_count()))
    try:
        assert configure().startswith("torch threads: 1 (")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    info = subprocess.run([sys.executable, "-m", "mpifl", "info"], capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1"})
    assert "torch threads: 1 (OMP_NUM_THREADS=1 set)" in info.stdout.splitlines(), info.stdout + info.stderr
