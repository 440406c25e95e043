"""Client momentum (train.momentum, ByzFL's DSGD): the update by hand, checkpoint/resume and MPI ranks."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mpifl import build, transport
from mpifl.config import from_tree
from mpifl.errors import ConfigError
from mpifl.train import _setup, run

from .conftest import resumed_run_equals_whole, small_config, small_tree
from .mpi_helpers import mpirun, needs_mpirun, train_cmd


def momentum_tree(**sections) -> dict:  # type: ignore[no-untyped-def]
    """4 clients, client 3 Byzantine every round under a client-side attack that tampers with its own vector."""
    return small_tree(**{"rounds": 6, "model": {"name": "softmax"},
                         "train": {"momentum": 0.9, "weight_decay": 0.01, "lr": {"schedule": "constant", "base": 0.3}},
                         "byzantine": {"model": "fixed", "clients": [3]}, "attack": {"name": "sign_flip"},
                         "aggregator": {"name": "trmean", "params": {"beta": 0.25}},
                         "output": {"checkpoint_every": 3, "progress_every": 1000}, **sections})


def test_two_rounds_by_hand(tmp_path: Path):
    """m_j^1 = (1 − β) g_j(θ0), θ1 = θ0 − μ(mean_j m_j^1 + λθ0); m_j^2 = β m_j^1 + (1 − β) g_j(θ1), θ2 likewise."""
    tree = small_tree(rounds=2, model={"name": "softmax"}, byzantine={"model": "none"}, attack={"name": "none"},
                      aggregator={"name": "mean"},
                      train={"batch_fraction": 1.0, "momentum": 0.8, "weight_decay": 0.01,
                             "lr": {"schedule": "constant", "base": 0.5}})
    cfg = from_tree(tree)
    build.resolve(cfg)
    result = run(cfg, tmp_path / "run.h5", progress=None)
    s = _setup(cfg, transport.create(), tmp_path / "other.h5", False)

    def grad(theta: torch.Tensor, j: int) -> torch.Tensor:
        c = s.clients.clients[j]
        t = theta.clone().requires_grad_(True)
        F.cross_entropy(s.flat.forward(t, s.scaling(c.x)), c.y).backward()
        return t.grad.detach()

    beta, lr, lam = 0.8, 0.5, 0.01
    theta0 = s.theta.clone()
    m1 = [(1 - beta) * grad(theta0, j) for j in range(4)]
    theta1 = theta0 - lr * (torch.stack(m1).mean(0) + lam * theta0)
    m2 = [beta * m1[j] + (1 - beta) * grad(theta1, j) for j in range(4)]
    theta2 = theta1 - lr * (torch.stack(m2).mean(0) + lam * theta1)
    torch.testing.assert_close(result.theta, theta2, rtol=1e-5, atol=1e-6)
    plain = from_tree({**tree, "train": {**tree["train"], "momentum": 0.0}})
    assert not torch.allclose(run(plain, tmp_path / "plain.h5", progress=None).theta, theta2, atol=1e-4)


def test_stopped_and_resumed_run_is_bit_identical(tmp_path: Path):
    resumed_run_equals_whole(momentum_tree, tmp_path)


def test_checkpoint_carries_every_clients_momentum(tmp_path: Path):
    from mpifl import checkpoint

    out = tmp_path / "run.h5"
    run(small_config(**momentum_tree(rounds=3)), out, progress=None)
    ckpt = checkpoint.load(checkpoint.path_for(out))
    assert ckpt.client_models is not None and ckpt.client_models.shape[0] == 4
    assert np.abs(ckpt.client_models).sum() > 0


@pytest.mark.parametrize("bad, message", [
    ({"train": {"momentum": 0.9, "clients_per_round": 2}}, "train.momentum=0.9 keeps per-client state"),
    ({"train": {"momentum": 0.5}, "aggregator": {"name": "rsa"}}, "train.momentum needs clients that upload"),
])
def test_momentum_is_refused_where_per_client_state_cannot_be_kept(bad: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        small_config(**bad)


def test_momentum_out_of_range_is_refused():
    with pytest.raises(ConfigError, match=r"train.momentum=1.0 must be in \[0, 1\)"):
        from_tree(small_tree(train={"momentum": 1.0}))


@pytest.mark.mpi
@needs_mpirun
@pytest.mark.parametrize("ranks", [3, 5])
def test_mpi_ranks_equal_one_process(tmp_path: Path, ranks: int):
    tree = momentum_tree()
    single = run(small_config(**tree), tmp_path / "single.h5", progress=None)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(tree))
    done = mpirun(train_cmd(ranks, tmp_path / "cfg.yaml", tmp_path / "mpi.h5"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(single.path) as a, h5py.File(tmp_path / "mpi.h5") as b:
        assert np.array_equal(a["clients/accepted"][:], b["clients/accepted"][:])
        np.testing.assert_allclose(b["model/theta"][:], a["model/theta"][:], rtol=1e-5, atol=1e-6)
