"""Populations: a partitioned dataset and LEAF's generated Synthetic(α, β), whose clients exist only when asked for."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mpifl.build import resolve
from mpifl.config import ConfigError, from_tree
from mpifl.data.population import LeafParams, LeafSynthetic
from mpifl.train import run

from .conftest import small_tree
from .mpi_helpers import mpirun, needs_mpirun, train_cmd, write_config


def leaf_tree(clients: int, cohort: int | None, rounds: int = 3, rule: str = "diversefl") -> dict:
    return small_tree(clients=clients, rounds=rounds, data={"dataset": "leaf_synthetic", "scale": "raw"},
                      model={"name": "softmax"}, train={"batch_size": 10, "batch_fraction": None,
                                                        "clients_per_round": cohort},
                      byzantine={"model": "random", "k": clients // 10},
                      aggregator={"name": rule, "params": {"sample_size": 5, "sample_fraction": None}
                                  if rule == "diversefl" else {}})


def test_a_leaf_client_is_the_same_whenever_it_is_asked_for():
    population = LeafSynthetic(LeafParams(), 1_000_000, seed=4)
    sizes = population.sizes()
    assert sizes.shape == (1_000_000,) and sizes.min() >= 50 and sizes.max() <= 10_000
    x, y = population.client(123_456)
    again_x, again_y = population.client(123_456)
    assert torch.equal(x, again_x) and torch.equal(y, again_y)
    assert x.shape == (sizes[123_456], 60) and x.dtype == torch.float32 and 0 <= int(y.min()) <= int(y.max()) < 10
    sample_x, sample_y = population.sample(123_456, 5, seed=4)
    assert torch.equal(sample_x, x[:5]) and torch.equal(sample_y, y[:5])  # the sample is part of its data
    other_x, _ = population.client(123_457)
    assert not torch.equal(x[:50], other_x[:50])


def test_leaf_clients_differ_as_alpha_and_beta_say():
    def spread(alpha: float, beta: float) -> float:
        population = LeafSynthetic(LeafParams(alpha=alpha, beta=beta), 200, seed=0)
        means = torch.stack([population.client(j)[0].mean(dim=0) for j in range(200)])
        return float(means.std(dim=0).mean())

    assert spread(0.0, 0.0) < 1.2 < spread(1.0, 2.0)  # v_k ~ N(B_k, 1), B_k ~ N(0, beta²): wider with beta


def test_leaf_needs_raw_features_and_takes_its_params():
    tree = leaf_tree(100, 10)
    tree["data"]["scale"] = "standardize"
    with pytest.raises(ConfigError, match="data.dataset=leaf_synthetic holds float features, not images: set "
                                          "data.scale=raw."):
        resolve(from_tree(tree))
    tree = leaf_tree(100, 10)
    tree["data"]["params"] = {"alpha": 0.5, "betta": 1.0}
    with pytest.raises(ConfigError, match="unknown key data.params.betta. Did you mean data.params.beta?"):
        resolve(from_tree(tree))
    with pytest.raises(ConfigError, match="unknown key data.params.alpha. It takes no parameters."):
        resolve(from_tree(small_tree(data={"params": {"alpha": 1.0}})))


def test_a_cohort_from_a_million_clients_trains_and_records_only_the_cohort(tmp_path: Path):
    result = run(from_tree(leaf_tree(1_000_000, 20)), tmp_path / "run.h5", progress=None)
    with h5py.File(tmp_path / "run.h5") as f:
        ids = f["clients/id"][:]
        assert ids.shape == (3, 20) and ids.max() < 1_000_000 and len(np.unique(ids)) > 20
        assert f["clients/byzantine"].shape == (3, 20) and not np.isnan(f["clients/c2"][:]).any()
        assert f.attrs["clients"] == 1_000_000 and f.attrs["cohort"] == 20
    assert torch.isfinite(result.theta).all()


@pytest.mark.mpi
@needs_mpirun
def test_a_generated_cohort_under_mpi_equals_one_process(tmp_path: Path):
    tree = leaf_tree(100_000, 8, rounds=3)
    single = run(from_tree(tree), tmp_path / "single.h5", progress=None)
    done = mpirun(train_cmd(5, write_config(tmp_path, tree), tmp_path / "mpi.h5"))  # 2 clients on each of 4 ranks
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(tmp_path / "single.h5") as a, h5py.File(tmp_path / "mpi.h5") as b:
        for name in ("clients/id", "clients/byzantine", "clients/accepted", "clients/flags"):
            assert np.array_equal(a[name][:], b[name][:]), name
        np.testing.assert_allclose(b["model/theta"][:], single.theta.numpy(), rtol=1e-5, atol=1e-6)
