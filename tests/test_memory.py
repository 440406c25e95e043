"""Memory follows ownership (issue: `mpirun -n 21` must fit a laptop): each rank's peak is recorded and bounded."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from .conftest import REPO
from .mpi_helpers import mpirun, needs_mpirun, train_cmd
from .test_datasets import write_fake_mnist

MB = 2**20


@pytest.mark.mpi
@needs_mpirun
def test_fig3_ranks_stay_under_a_memory_bound_v0_1_exceeded(tmp_path: Path):
    """v0.1 peaked at 1.30-1.43 GB on every rank of this run (each held the whole dataset, a float64 copy of it for
    the channel statistics, float shards, and torch.func's import of torch._dynamo); now a client rank holds its
    clients' uint8 shards. The bound is generous: torch's CUDA build alone is about 510 MB resident."""
    write_fake_mnist(tmp_path / "data", 60000, 10000)  # MNIST's sizes: memory behaves as with the real files
    out = tmp_path / "run.h5"
    done = mpirun(train_cmd(5, REPO / "configs" / "fig3_mnist_mlp.yaml", out, "--rounds", "3", "--set",
                            "train.eval_every=3", "--data-root", str(tmp_path / "data")), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(out) as f:
        peaks = f["ranks/peak_rss"][:] / MB
        assert f["ranks/peak_gpu"][:].max() == 0  # no GPU here
    assert peaks.shape == (3, 5) and (peaks > 100).all()  # every rank reported, every round
    assert (np.diff(peaks, axis=0) >= 0).all()  # a peak never decreases
    assert peaks[-1].max() < 1000, peaks[-1]
