"""The paper's experiments end to end: Fig. 3 on real MNIST, and the CIFAR VGG pipeline on synthetic CIFAR files."""

from pathlib import Path

import h5py
import pytest

from mpifl.config import load
from mpifl.train import run

from .conftest import REPO
from .test_datasets import write_fake_cifar

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


def test_fig4_vgg_pipeline_on_synthetic_cifar_files(tmp_path: Path):
    """VGG11-GN under vmap over clients, guiding gradients and screening, on CIFAR-format files (no real CIFAR here)."""
    write_fake_cifar(tmp_path, "cifar10", n=40)
    cfg = load(REPO / "configs" / "fig4_cifar10_vgg.yaml",
               ["rounds=2", "clients=4", "byzantine.k=1", f"data.root={tmp_path}", "aggregator.params.sample_fraction=0.1"])
    result = run(cfg, tmp_path / "vgg.h5", progress=None)
    assert result.theta.shape == (9756426,) and result.theta.isfinite().all()
    with h5py.File(result.path, "r") as f:
        byz, accepted = f["clients/byzantine"][:], f["clients/accepted"][:]
        assert f["lr"][:].tolist() == pytest.approx([0.05005, 0.0501])  # the warm-up from 0.05
        assert not (accepted & byz).any()  # the sign-flipped update is rejected by direction
        assert (f["clients/c1"][:][byz] == -1).all()
