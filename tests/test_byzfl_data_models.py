"""ByzFL's data distributions and models in mpifl, against byzfl.fed_framework 0.0.11: partitions index for index
given the same draws and statistically over seeds; models parameter for parameter, output for output and, through
mpifl's per-client gradient code, gradient for gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from byzfl.fed_framework import data_distributor as dd
from byzfl.fed_framework import models as byz_models
from torch.utils.data import DataLoader

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.config import ConfigError, ExperimentConfig, from_tree
from mpifl.data.partition import partition, shards
from mpifl.data.population import load, shares
from mpifl.models.gradients import batched_grads
from mpifl.models.networks import FlatModel, initialize
from mpifl.rng import Purpose, numpy_rng

from .conftest import small_tree

C, N_POINTS, CLIENTS = 10, 1200, 7


class Labels(torch.utils.data.Dataset):
    """A dataset of labels only, with the ``targets`` attribute ByzFL's distributor reads."""

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> int:
        return int(self.targets[i])


def labels(seed: int = 0, n: int = N_POINTS) -> torch.Tensor:
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed))


def byzfl_split(name: str, y: torch.Tensor, parameter: float | None) -> list[np.ndarray]:
    params = {"data_distribution_name": name, "nb_honest": CLIENTS, "data_loader": DataLoader(Labels(y)),
              "batch_size": 5}
    if parameter is not None:
        params["distribution_parameter"] = parameter
    return [np.asarray(loader.dataset.indices, dtype=np.int64) for loader in dd.DataDistributor(params).split_data()]


def ours(name: str, y: torch.Tensor, alpha: float, seed: int) -> list[np.ndarray]:
    return partition(name, y, CLIENTS, alpha, seed)


def counts(parts: list[np.ndarray], y: torch.Tensor) -> np.ndarray:
    """[clients, classes] class histogram of each client."""
    return np.stack([np.bincount(y.numpy()[p], minlength=C) for p in parts])


def test_extreme_niid_is_byzfl_and_shards():
    y = labels()
    split = ours("extreme_niid", y, 0.5, 1)
    for a, b, c in zip(split, byzfl_split("extreme_niid", y, None), shards(y, CLIENTS)):
        assert np.array_equal(a, b) and np.array_equal(a, c)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_gamma_similarity_is_byzfl_given_the_same_shuffle(gamma: float, monkeypatch):
    y = labels(1)
    seed = 4
    permutation = numpy_rng(seed, Purpose.PARTITION).permutation(int(N_POINTS * gamma))
    monkeypatch.setattr(dd.random, "shuffle", lambda idx: idx.__setitem__(slice(None), [idx[i] for i in permutation]))
    for a, b in zip(ours("gamma_similarity_niid", y, gamma, seed), byzfl_split("gamma_similarity_niid", y, gamma)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 10.0])
def test_dirichlet_niid_is_byzfl_given_the_same_draw(alpha: float, monkeypatch):
    y = labels(2)
    seed = 6
    draw = numpy_rng(seed, Purpose.PARTITION).dirichlet(np.repeat(alpha, CLIENTS), size=C)
    monkeypatch.setattr(dd.np.random, "dirichlet", lambda *args, **kwargs: draw)
    for a, b in zip(ours("dirichlet_niid", y, alpha, seed), byzfl_split("dirichlet_niid", y, alpha)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("name,alpha,tolerance", [("dirichlet_niid", 0.3, 0.05), ("dirichlet_niid", 3.0, 0.03),
                                                   ("gamma_similarity_niid", 0.5, 0.01)])
def test_class_histograms_match_byzfl_over_seeds(name: str, alpha: float, tolerance: float):
    """Mean over 40 seeds and the classes of each class's client shares sorted in decreasing order (the shape of the
    skew, whichever client gets it; ~3.5 standard errors of the difference): the same within ``tolerance``; every
    point is placed exactly once."""
    y = labels(3)

    def profile(parts: list[np.ndarray]) -> np.ndarray:
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(N_POINTS))
        share = counts(parts, y) / np.bincount(y.numpy(), minlength=C)
        return -np.sort(-share, axis=0).mean(axis=1)

    mine = np.mean([profile(ours(name, y, alpha, s)) for s in range(40)], axis=0)
    theirs = []
    for s in range(40):
        np.random.seed(s)
        dd.random.seed(s)
        theirs.append(profile(byzfl_split(name, y, alpha)))
    assert np.abs(mine - np.mean(theirs, axis=0)).max() < tolerance


def honest_split_config(byzantine: list[int], clients: int = CLIENTS + 2, seed: int = 4) -> ExperimentConfig:
    return from_tree(small_tree(seed=seed, clients=clients, byzantine={"model": "fixed", "clients": byzantine},
                                data={"partition": "gamma_similarity_niid", "alpha": 0.3, "split_among": "honest"}))


def test_split_among_honest_is_byzfls_split_and_byzantine_clients_copy_honest_pieces(monkeypatch):
    """ByzFL's distributor over its CLIENTS honest clients, index for index given the same shuffle, lands on the
    honest ids in order; the Byzantine ids (here 2 and 8 of 9) hold copies of the first honest pieces."""
    y = labels(1)
    cfg = honest_split_config([8, 2])
    permutation = numpy_rng(cfg.seed, Purpose.PARTITION).permutation(int(N_POINTS * 0.3))
    monkeypatch.setattr(dd.random, "shuffle", lambda idx: idx.__setitem__(slice(None), [idx[i] for i in permutation]))
    theirs = byzfl_split("gamma_similarity_niid", y, 0.3)
    mine = shares(cfg, y)
    assert len(mine) == CLIENTS + 2
    honest = [0, 1, 3, 4, 5, 6, 7]
    for j, expected in zip(honest, theirs):
        assert np.array_equal(mine[j], expected)
    assert np.array_equal(mine[2], theirs[0]) and np.array_equal(mine[8], theirs[1])
    assert len(np.unique(np.concatenate([mine[j] for j in honest]))) == N_POINTS  # all data, each point once


def test_data_seed_draws_the_partition_instead_of_the_runs_seed():
    y = labels(2)
    cfg = from_tree(small_tree(seed=1, clients=CLIENTS,
                               data={"partition": "gamma_similarity_niid", "alpha": 0.3, "seed": 4}))
    for a, b in zip(shares(cfg, y), ours("gamma_similarity_niid", y, 0.3, 4)):
        assert np.array_equal(a, b)


def test_model_seed_draws_the_initial_model_instead_of_the_runs_seed(tmp_path):
    """Two runs with different seeds and one model.seed start from the same θ (one step of lr 1e-30 leaves it)."""
    import h5py

    from mpifl.train import run

    thetas = []
    for seed in (1, 2):
        cfg = from_tree(small_tree(seed=seed, rounds=1, model={"init": "torch", "seed": 7},
                                   train={"lr": {"schedule": "constant", "base": 1e-30}}))
        run(cfg, tmp_path / f"s{seed}.h5", progress=None)
        with h5py.File(tmp_path / f"s{seed}.h5") as f:
            thetas.append(f["model/theta"][:])
    assert np.array_equal(thetas[0], thetas[1]) and np.abs(thetas[0]).max() > 0


def test_split_among_honest_without_byzantine_clients_is_the_plain_partition():
    y = labels(2)
    cfg = honest_split_config([], clients=CLIENTS)
    for a, b in zip(shares(cfg, y), ours("gamma_similarity_niid", y, 0.3, cfg.seed)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("change,message", [
    ({"byzantine": {"model": "random", "k": 1}}, "data.split_among=honest needs byzantine.model=fixed"),
    ({"byzantine": {"model": "fixed", "clients": [0, 1, 2, 3]}}, "no honest client of the 4 is left"),
    ({"data": {"split_among": "byzantine"}}, "data.split_among='byzantine' is not one of all, honest"),
])
def test_split_among_honest_refuses_what_it_cannot_honour(change: dict, message: str):
    tree = small_tree(data={"split_among": "honest"}, byzantine={"model": "fixed", "clients": [3]})
    for key, value in change.items():
        tree[key].update(value)
    with pytest.raises(ConfigError, match=message):
        from_tree(tree)


def test_split_among_honest_refuses_a_generated_population():
    cfg = from_tree(small_tree(data={"dataset": "leaf_synthetic", "split_among": "honest", "scale": "raw"},
                               byzantine={"model": "fixed", "clients": [3]}))
    with pytest.raises(ConfigError, match="data.dataset=leaf_synthetic generates each client's data itself"):
        load(cfg, build.resolve(cfg).data)


def test_gamma_must_be_a_fraction():
    with pytest.raises(ConfigError, match="data.alpha=1.5 is γ"):
        ours("gamma_similarity_niid", labels(), 1.5, 0)


# ------------------------------------------------------------------ models

MODELS = [("fc_mnist", byz_models.fc_mnist, (1, 28, 28)), ("logreg_mnist", byz_models.logreg_mnist, (1, 28, 28)),
          ("cnn_mnist", byz_models.cnn_mnist, (1, 28, 28)), ("cnn_cifar", byz_models.cnn_cifar, (3, 32, 32)),
          ("resnet18", byz_models.ResNet18, (3, 32, 32))]


def pair(name: str, byzfl_cls, shape):  # type: ignore[no-untyped-def]
    """(ours, ByzFL's) with ByzFL's parameters copied into ours in order."""
    torch.manual_seed(0)
    theirs = byzfl_cls()
    mine = registry.get("model", name)(shape, 10, hidden=200)
    flat = torch.cat([p.detach().flatten() for p in theirs.parameters()])
    torch.nn.utils.vector_to_parameters(flat, mine.parameters())
    return mine, theirs


@pytest.mark.parametrize("name,byzfl_cls,shape", MODELS, ids=[m[0] for m in MODELS])
def test_parameters_and_outputs_are_byzfls(name: str, byzfl_cls, shape):
    mine, theirs = pair(name, byzfl_cls, shape)
    assert [p.shape for p in mine.parameters()] == [p.shape for p in theirs.parameters()]
    assert FlatModel(mine).dim == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    out, expected = mine(x), theirs.train()(x)  # ByzFL's clients compute gradients in train mode
    assert out.shape == (4, 10)
    if name == "fc_mnist":  # logits here, log-probabilities there: the same cross-entropy
        out = F.log_softmax(out, dim=1)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,byzfl_cls,shape", MODELS, ids=[m[0] for m in MODELS])
def test_torch_init_is_byzfls_init_draw_for_draw(name: str, byzfl_cls, shape):
    """``model.init: torch`` from a generator seeded s gives ByzFL's model built after ``torch.manual_seed(s)``."""
    torch.manual_seed(11)
    theirs = byzfl_cls()
    mine = registry.get("model", name)(shape, 10, hidden=200)
    initialize(mine, "torch", torch.Generator().manual_seed(11))
    for (key, a), b in zip(mine.named_parameters(), theirs.parameters()):
        assert torch.equal(a, b), key


def test_torch_init_statistics_are_pytorchs_default():
    """fc_mnist: every weight and bias uniform in ±1/√fan_in (784 then 100 inputs): std bound/√3, range filled;
    Glorot's first-layer bound √(6/884) is 2.3 times larger."""
    model = registry.get("model", "fc_mnist")((1, 28, 28), 10, hidden=200)
    initialize(model, "torch", torch.Generator().manual_seed(0))
    for p, fan_in in zip(model.parameters(), (784, 784, 100, 100)):
        bound = 1 / np.sqrt(fan_in)
        assert p.abs().max() <= bound
        if p.numel() > 1000:
            assert p.abs().max() > 0.99 * bound
            assert abs(p.std().item() - bound / np.sqrt(3)) < 0.02 * bound
    glorot = registry.get("model", "fc_mnist")((1, 28, 28), 10, hidden=200)
    initialize(glorot, "glorot", torch.Generator().manual_seed(0))
    first = next(glorot.parameters())
    assert abs(first.abs().max().item() - np.sqrt(6 / 884)) < 1e-3


def test_models_refuse_other_input_shapes():
    with pytest.raises(ConfigError, match="model.name=resnet18 is ByzFL's network for 3x32x32 inputs"):
        registry.get("model", "resnet18")((1, 28, 28), 10, hidden=200)


@pytest.mark.parametrize("name,byzfl_cls,shape", MODELS[2:], ids=[m[0] for m in MODELS[2:]])
def test_per_client_gradients_are_byzfls_train_mode_gradients(name: str, byzfl_cls, shape):
    """mpifl's vmapped per-client gradients (BatchNorm on each client's own batch) against ByzFL's model trained one
    client at a time (NLLLoss on cnn_mnist's log-probabilities, cross-entropy on the others' logits)."""
    mine, theirs = pair(name, byzfl_cls, shape)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 3, *shape, generator=g), torch.randint(0, 10, (2, 3), generator=g)
    w = torch.full((2, 3), 1 / 3)
    flat = FlatModel(mine)
    grads = batched_grads(flat, flat.flatten(), x, y, w, chunk=2)
    theirs.train()
    for j in range(2):
        theirs.zero_grad()
        F.cross_entropy(theirs(x[j]), y[j]).backward()
        expected = torch.cat([p.grad.flatten() for p in theirs.parameters()])
        torch.testing.assert_close(grads[j], expected, rtol=1e-4, atol=1e-5)
