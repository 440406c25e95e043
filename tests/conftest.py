"""Shared fixtures: small synthetic configs, and the real MNIST copy when this machine has one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.config import ExperimentConfig, from_tree
from mpifl.server import Server
from mpifl.train import RunResult, run

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def small_tree(**sections) -> dict:  # type: ignore[no-untyped-def]
    """A 4-client run on the synthetic dataset that takes well under a second per round."""
    tree = {
        "name": "test", "seed": 3, "clients": 4, "rounds": 6,
        "data": {"dataset": "synthetic", "synthetic_train": 400, "synthetic_test": 200, "scale": "standardize"},
        "model": {"name": "mlp", "hidden": 16},
        "train": {"batch_fraction": 0.2, "eval_every": 2, "lr": {"schedule": "constant", "base": 0.3}},
        "byzantine": {"model": "random", "k": 1},
        "attack": {"name": "sign_flip"},
        "aggregator": {"name": "diversefl"},
        "output": {"progress_every": 1000},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            tree.setdefault(key, {}).update(value)
        else:
            tree[key] = value
    if _uses_diversefl(tree["aggregator"]):  # 20 % samples: the 1 % default is one point of a 100-point client
        tree["aggregator"]["params"] = {"sample_fraction": 0.2, **tree["aggregator"].get("params", {})}
    return tree


def _uses_diversefl(agg: dict) -> bool:
    rule = registry.get("rule", agg["name"]) if agg["name"] in registry.names("rule") else None
    return (rule is not None and rule.needs.filter == "diversefl") or "diversefl" in agg.get("filters", []) \
        or bool(agg.get("record_similarity"))


def small_config(**sections) -> ExperimentConfig:  # type: ignore[no-untyped-def]
    """The small run's config, its names and parameters resolved (errors raise here, as ``mpifl train`` would)."""
    cfg = from_tree(small_tree(**sections))
    build.resolve(cfg)
    return cfg


def mnist_root() -> Path | None:
    """A data root holding MNIST's raw IDX files: $MPIFL_DATA_ROOT, else ../shared/data."""
    for root in (os.environ.get("MPIFL_DATA_ROOT"), SHARED_DATA):
        if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(root)
    return None


@pytest.fixture
def real_mnist() -> Path:
    root = mnist_root()
    if root is None:
        pytest.skip(f"real MNIST not found (looked in $MPIFL_DATA_ROOT and {SHARED_DATA})")
    return root


def server_with(cfg: ExperimentConfig, guiding: torch.Tensor,
                server_gradient=None) -> Server:  # type: ignore[no-untyped-def]
    """The server of ``cfg``'s pipeline, its DiverseFL filters (if any) judging against the fixed guiding matrix
    ``guiding`` [n, d] instead of samples."""
    pipe = build.pipeline(cfg)
    for f in pipe.all_filters:
        f.guiding = FixedGuiding(guiding)
    return Server(pipe, cfg.seed, server_gradient)


class FixedGuiding:
    """Stands in for :class:`mpifl.filters.diversefl.GuidingGradients`: the same guiding matrix [n, d] every round."""

    def __init__(self, g: torch.Tensor) -> None:
        self.g = g

    def compare(self, theta: torch.Tensor, z: torch.Tensor, rows: torch.Tensor | None = None,
                adjust=None, clients=None):  # type: ignore[no-untyped-def]
        g = self.g if clients is None else self.g[clients]
        dots, norms = (g * z).sum(dim=1), torch.linalg.vector_norm(g, dim=1)
        if adjust is not None:
            z[:] = adjust(torch.arange(len(z), device=z.device), z, g)
        return dots, norms, g.sum(dim=0)


def resumed_run_equals_whole(tree: Callable[..., dict], tmp_path: Path) -> RunResult:
    """Runs ``small_config(**tree())`` straight through, and again into another file stopped after round 3
    (``tree(rounds=3)``) and resumed; asserts θ, the accepted sets and the flags of every round and the test accuracy
    after round 3 (the short run evaluates at its last round) are the same bits. The straight run's result."""
    whole = run(small_config(**tree()), tmp_path / "whole.h5", progress=None)
    out = tmp_path / "resumed.h5"
    run(small_config(**tree(rounds=3)), out, progress=None)
    run(small_config(**tree()), out, progress=None, resume=True)
    with h5py.File(whole.path) as a, h5py.File(out) as b:
        for name in ("model/theta", "clients/accepted", "clients/flags"):
            assert np.array_equal(a[name][:], b[name][:], equal_nan=True), name
        assert np.array_equal(a["test_accuracy"][3:], b["test_accuracy"][3:], equal_nan=True)
    return whole
