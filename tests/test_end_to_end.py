"""The paper's MNIST experiment (Fig. 3 config) for a few dozen rounds on the real data."""

from pathlib import Path

import h5py
import pytest

from mpifl.config import load
from mpifl.train import run

from .conftest import REPO

pytestmark = pytest.mark.slow


def fig3(real_mnist: Path, *overrides: str):  # type: ignore[no-untyped-def]
    return load(REPO / "configs" / "fig3_mnist_mlp.yaml", ["rounds=30", f"data.root={real_mnist}", *overrides])


def test_diversefl_beats_median_under_sign_flip(real_mnist: Path, tmp_path: Path):
    diverse = run(fig3(real_mnist), tmp_path / "diversefl.h5", progress=None)
    median = run(fig3(real_mnist, "aggregator.name=median"), tmp_path / "median.h5", progress=None)
    assert diverse.final.accuracy > 0.80
    assert diverse.final.accuracy > median.final.accuracy + 0.15
    with h5py.File(diverse.path, "r") as f:
        byz, accepted = f["clients/byzantine"][:], f["clients/accepted"][:]
        assert not (accepted & byz).any()  # no sign-flipped update got through
        assert accepted[~byz].mean() > 0.95  # and nearly every honest one did
