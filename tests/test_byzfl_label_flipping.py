"""ByzFL's LabelFlipping as mpifl's ``mean_class_flip``: the Byzantine vector against ByzFL 0.0.11's own clients and
attack, the extra pass only where the attack asks for it, MPI ranks, resume and a translated JSON end to end."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from mpifl import build, registry, transport
from mpifl.attacks.adversary import Adversary
from mpifl.byzfl import translate
from mpifl.clients import ClientData, GradientClients
from mpifl.data.datasets import Scaling
from mpifl.errors import ConfigError
from mpifl.models import FlatModel
from mpifl.registry import NoParams
from mpifl.train import _setup, run

from .conftest import resumed_run_equals_whole, small_config, small_tree
from .mpi_helpers import mpirun, needs_mpirun, train_cmd


def flip_tree(**sections) -> dict:  # type: ignore[no-untyped-def]
    """5 clients, the last two Byzantine every round, ByzFL's DSGD momentum and weight decay, TrMean."""
    return small_tree(**{"clients": 5, "rounds": 6, "model": {"name": "softmax"},
                         "train": {"momentum": 0.9, "weight_decay": 0.01, "lr": {"schedule": "constant", "base": 0.3}},
                         "byzantine": {"model": "fixed", "clients": [3, 4]}, "attack": {"name": "mean_class_flip"},
                         "aggregator": {"name": "trmean", "params": {"beta": 0.2}},
                         "output": {"checkpoint_every": 3, "progress_every": 1000}, **sections})


def test_vector_is_byzfls_label_flipping_on_the_same_model_and_batches():
    """ByzFL's honest clients (fc_mnist, NLLLoss, momentum) and its LabelFlipping attack against mpifl's clients on the
    same parameters and batches: the honest rows are ByzFL's momentum vectors, each Byzantine row ByzFL's vector."""
    from byzfl import ByzantineClient
    from byzfl.fed_framework import Client
    from torch.utils.data import DataLoader, TensorDataset

    cfg = small_config(clients=4, byzantine={"model": "fixed", "clients": [3]}, attack={"name": "mean_class_flip"},
                       aggregator={"name": "mean"}, train={"momentum": 0.9})
    flat = FlatModel(registry.get("model", "fc_mnist")((1, 28, 28), 10, hidden=200))
    g = torch.Generator().manual_seed(0)
    data = [ClientData(j, torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8, generator=g),
                       torch.randint(0, 10, (20,), generator=g), 6) for j in range(4)]
    scaling = Scaling("unit", torch.zeros(1), torch.ones(1))
    attack = registry.get("attack", "mean_class_flip")(NoParams())
    clients = GradientClients(cfg, flat, data, 10, flat.flatten(), 6, scaling, attack, None)
    theta, r, byzantine = flat.flatten(), 2, torch.tensor([False, False, False, True])
    z = clients.messages(theta, r, byzantine, 0.1).clone()
    momentum, flipped = [], []
    for c in data[:3]:
        x, y = clients._batch(c, r)
        client = Client({"model_name": "fc_mnist", "device": "cpu", "optimizer_name": "SGD", "learning_rate": 0.1,
                         "loss_name": "NLLLoss", "weight_decay": 1e-4, "milestones": [], "learning_rate_decay": 1.0,
                         "LabelFlipping": True, "momentum": 0.9, "nb_labels": 10, "store_per_client_metrics": False,
                         "training_dataloader": DataLoader(TensorDataset(scaling(x), y), batch_size=len(y))})
        torch.nn.utils.vector_to_parameters(theta, client.model.parameters())
        client.compute_gradients()
        flipped.append(client.get_flat_flipped_gradients().clone())
        momentum.append(client.get_flat_gradients_with_momentum().clone())
    torch.testing.assert_close(z[:3], torch.stack(momentum), rtol=1e-4, atol=1e-6)
    expected = ByzantineClient({"name": "LabelFlipping", "f": 1, "parameters": {}}).apply_attack(flipped)
    Adversary(build.pipeline(cfg), "mean", cfg.seed, None).corrupt(z, theta, byzantine, torch.ones(4, dtype=torch.bool),
                                                                   r, None, clients.flipped)
    torch.testing.assert_close(z[3], expected[0], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(z[3], z[:3].mean(dim=0), atol=1e-4)  # not the honest (momentum) mean


def test_only_this_attack_asks_for_the_flipped_pass():
    flip = registry.get("attack", "mean_class_flip")
    assert flip.on_rank0 and flip.needs_flipped
    s = _setup(small_config(), transport.create(), Path("unused.h5"), False)
    assert s.clients.flipped is None  # every other run: no second pass, no second gather


def test_flipped_rows_are_the_honest_clients_and_zero_for_byzantine_ones():
    cfg = small_config(**flip_tree())
    s = _setup(cfg, transport.create(), Path("unused.h5"), False)
    byzantine = torch.tensor([False, False, False, True, True])
    s.clients.messages(s.theta, 1, byzantine, 0.3)
    assert s.clients.flipped is not None and s.clients.flipped.shape == (5, s.flat.dim)
    assert torch.all(s.clients.flipped[3:] == 0) and torch.all(s.clients.flipped[:3].abs().sum(dim=1) > 0)


def test_refused_with_model_copy_clients():
    with pytest.raises(ConfigError, match="mean_class_flip needs clients that upload gradients"):
        small_config(attack={"name": "mean_class_flip"}, aggregator={"name": "rsa"})


def test_stopped_and_resumed_run_is_bit_identical(tmp_path: Path):
    whole = resumed_run_equals_whole(flip_tree, tmp_path)
    plain = run(small_config(**flip_tree(attack={"name": "mean_sign_flip"})), tmp_path / "other.h5", progress=None)
    assert not torch.equal(plain.theta, whole.theta)


@pytest.mark.mpi
@needs_mpirun
@pytest.mark.parametrize("train", [{}, {"momentum": 0.0, "clients_per_round": 4}], ids=["all", "cohort"])
def test_mpi_ranks_equal_one_process(tmp_path: Path, train: dict):
    """Every client taking part every round or a sampled cohort (ranks compute its even share): the same accepted sets
    and θ to float32 round-off (a rank's torch may use other threads than the single process, as in test_momentum)."""
    tree = flip_tree()
    tree["train"].update(train)
    single = run(small_config(**tree), tmp_path / "single.h5", progress=None)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(tree))
    done = mpirun(train_cmd(3, tmp_path / "cfg.yaml", tmp_path / "mpi.h5"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(single.path) as a, h5py.File(tmp_path / "mpi.h5") as b:
        assert np.array_equal(a["clients/accepted"][:], b["clients/accepted"][:])
        np.testing.assert_allclose(b["model/theta"][:], a["model/theta"][:], rtol=1e-5, atol=1e-6)


def test_translated_json_with_label_flipping_runs_end_to_end(tmp_path: Path):
    from .test_byzfl import SMALL

    data = copy.deepcopy(SMALL)
    data["attack"], data["aggregator"], data["benchmark_config"]["f"] = [{"name": "LabelFlipping"}], \
        [{"name": "TrMean"}], [2]
    data["benchmark_config"]["nb_training_seeds"] = 1
    (point, *_) = translate.points(data, out_dir=tmp_path, overrides=(
        "data.dataset=synthetic", "model.name=mlp", "model.hidden=8"))
    assert point.config.attack.name == "mean_class_flip" and point.config.byzantine.clients == [4, 5]
    run(point.config, point.out, progress=None)
    with h5py.File(point.out) as f:
        assert f["clients/accepted"].shape[1] == 6 and np.isfinite(f["test_accuracy"][-1])
