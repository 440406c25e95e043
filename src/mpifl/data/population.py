"""A federation: n clients and their local data, wherever that data lives.

Set-up and the workers ask a population for what they need and nothing more: how many points each client holds (an
[n] array, the population's only O(n) state), one client's data when a round hands that client to a worker, the
sample a client shares with DiverseFL's server, and the test set. A dataset cut into clients by a partition is one
population (:class:`Partitioned`: index lists into a memory-mapped training set); LEAF's Synthetic(α, β) is another
(:class:`LeafSynthetic`: each client generated from (seed, client) when it is asked for, so a million clients cost no
storage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ExperimentConfig
from ..errors import ConfigError
from ..registry import choose, register
from ..rng import Purpose, generator, numpy_rng
from .datasets import Dataset
from .partition import partition


class Population:
    """The interface; ``x`` is stored data (uint8 images or float32 features, scaled where a batch is drawn)."""

    n: int
    num_classes: int
    input_shape: tuple[int, ...]

    def sizes(self) -> np.ndarray:
        """[n] int64: the points each client holds."""
        raise NotImplementedError

    def client(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client j's local data (x, y)."""
        raise NotImplementedError

    def sample(self, j: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``size`` points client j shares before training (DiverseFL's M_j^0): its own seeded draw from its
        data, so the server holds exactly what the client would send."""
        x, y = self.client(j)
        pick = torch.randperm(len(y), generator=generator(seed, Purpose.SAMPLE, 0, j))[:size]
        return x[pick], y[pick]

    def classes(self, j: int) -> set[int]:
        """The classes client j holds (the Markov Byzantine schedule's eligibility)."""
        return set(torch.unique(self.client(j)[1]).tolist())

    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the stored values in [0, 1], for ``data.scale: standardize``."""
        raise NotImplementedError


class Partitioned(Population):
    """A dataset cut into clients by index lists (the paper's sorted shards, Dirichlet, IID, …)."""

    def __init__(self, ds: Dataset, parts: list[np.ndarray]) -> None:
        self.ds, self.parts = ds, parts
        self.n, self.num_classes, self.input_shape = len(parts), ds.num_classes, ds.input_shape

    def sizes(self) -> np.ndarray:
        return np.array([len(p) for p in self.parts], dtype=np.int64)

    def client(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(self.parts[j])
        return self.ds.train_x[idx], self.ds.train_y[idx]

    def sample(self, j: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Population.sample`, indexing the dataset once (rows of the memory map, no copy of the shard)."""
        p = self.parts[j]
        pick = torch.randperm(len(p), generator=generator(seed, Purpose.SAMPLE, 0, j))[:size]
        idx = torch.from_numpy(p)[pick]
        return self.ds.train_x[idx], self.ds.train_y[idx]

    def classes(self, j: int) -> set[int]:
        return set(np.unique(self.ds.train_y.numpy()[self.parts[j]]).tolist())

    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ds.test_x, self.ds.test_y

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ds.channel_stats()


@dataclass(frozen=True)
class LeafParams:
    alpha: float = 1.0  # how much clients' models differ (the u_k ~ N(0, alpha) of each client's W_k, b_k)
    beta: float = 1.0  # how much clients' inputs differ (the B_k ~ N(0, beta) of each client's input mean)
    max_points: int = 10_000  # cap on LEAF's lognormal(4, 2) + 50 points per client (its tail reaches 10^6)
    test_clients: int = 100  # the test set: 50 fresh points from each of the first test_clients clients

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0:
            raise ConfigError(f"data.params.alpha={self.alpha} and beta={self.beta} must be >= 0.")
        if self.max_points < 50:
            raise ConfigError(f"data.params.max_points={self.max_points} must be >= 50 (LEAF's smallest client).")
        if self.test_clients < 1:
            raise ConfigError(f"data.params.test_clients={self.test_clients} must be >= 1.")


@register("dataset", "leaf_synthetic")
class LeafSynthetic(Population):
    """LEAF's Synthetic(α, β) (Caldas et al. 2018, arXiv:1812.01097; generated as in FedProx, Li et al. 2020,
    arXiv:1812.06127): client k has a softmax model W_k ∈ R^{60×10}, b_k ~ N(u_k, 1) with u_k ~ N(0, α²), inputs
    x ~ N(v_k, Σ) with v_k ~ N(B_k, 1), B_k ~ N(0, β²), Σ = diag(j^{-1.2}), labels argmax(x W_k + b_k), and
    lognormal(4, 2) + 50 points. Client k is generated from (seed, k) when asked for: nothing is stored, so the
    population can have a million clients. Inputs are float32 features (``data.scale: raw``)."""

    Params = LeafParams
    population = True  # a registered population, not a dataset to partition
    DIM, CLASSES = 60, 10

    def __init__(self, params: LeafParams, n: int, seed: int) -> None:
        self.params, self.n, self.seed = params, n, seed
        self.num_classes, self.input_shape = self.CLASSES, (self.DIM,)
        self._std = np.arange(1, self.DIM + 1, dtype=np.float64) ** -0.6  # sqrt of Σ's diagonal
        self._sizes: np.ndarray | None = None

    def sizes(self) -> np.ndarray:
        """Every client's size in one vectorised draw (the one O(n) array), the same on every rank."""
        if self._sizes is None:
            draw = numpy_rng(self.seed, Purpose.PARTITION).lognormal(4.0, 2.0, self.n)
            self._sizes = np.minimum(draw.astype(np.int64) + 50, self.params.max_points)
        return self._sizes

    def _model(self, j: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray]:
        rng = numpy_rng(self.seed, Purpose.PARTITION, 1, j)
        u, b_mean = rng.normal(0.0, self.params.alpha), rng.normal(0.0, self.params.beta)  # scales, as FedProx draws
        v = rng.normal(b_mean, 1.0, self.DIM)
        w, b = rng.normal(u, 1.0, (self.DIM, self.CLASSES)), rng.normal(u, 1.0, self.CLASSES)
        return rng, v, w, b

    def _points(self, rng: np.random.Generator, v: np.ndarray, w: np.ndarray, b: np.ndarray,
                count: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = v + rng.standard_normal((count, self.DIM)) * self._std
        y = np.argmax(x @ w + b, axis=1)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))

    def client(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng, v, w, b = self._model(j)
        return self._points(rng, v, w, b, int(self.sizes()[j]))

    def sample(self, j: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client j's first ``size`` points: part of its data (the same rows :meth:`client` starts with) and, the
        points being i.i.d. given the client, as random a sample as any, without generating the rest."""
        rng, v, w, b = self._model(j)
        return self._points(rng, v, w, b, min(size, int(self.sizes()[j])))

    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for j in range(min(self.params.test_clients, self.n)):
            _, v, w, b = self._model(j)
            parts.append(self._points(numpy_rng(self.seed, Purpose.PARTITION, 2, j), v, w, b, 50))
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1), torch.ones(1)


def load(cfg: ExperimentConfig, params: object) -> Population:
    """The population ``cfg`` describes: a registered population (``params`` its ``data.params``), or a dataset cut
    into ``cfg.clients`` clients by ``data.partition`` (see :func:`shares` for ``data.split_among``)."""
    chosen = choose("data.dataset", "dataset", cfg.data.dataset)
    if getattr(chosen, "population", False):
        if cfg.data.split_among != "all":
            raise ConfigError(f"data.split_among={cfg.data.split_among} cuts a dataset among clients; "
                              f"data.dataset={cfg.data.dataset} generates each client's data itself.")
        return chosen(params, cfg.clients, cfg.seed)
    ds = chosen(cfg.data.dataset, cfg.data.root, cfg.data.download, (cfg.data.synthetic_train,
                                                                    cfg.data.synthetic_test))
    return Partitioned(ds, shares(cfg, ds.train_y))


def shares(cfg: ExperimentConfig, labels: torch.Tensor) -> list[np.ndarray]:
    """Every client's indices. ``data.split_among: all`` cuts the set into ``cfg.clients`` pieces. ``honest`` is
    ByzFL's set-up: the partition cuts it among the h honest clients only (each holds 1/h of it, in the cut ByzFL
    makes), and the k-th Byzantine client (in id order) holds a copy of the (k mod h)-th honest client's piece. ByzFL's
    Byzantine clients hold no data; a copy gives mpifl's data-using Byzantine clients (client-side attacks, DiverseFL's
    shared sample) data from the honest distribution without taking any from the honest clients."""
    kind, alpha = cfg.data.partition, cfg.data.alpha
    seed = cfg.seed if cfg.data.seed is None else cfg.data.seed
    if cfg.data.split_among == "all":
        return partition(kind, labels, cfg.clients, alpha, seed)
    byzantine = sorted(cfg.byzantine.clients)
    honest = sorted(set(range(cfg.clients)) - set(byzantine))
    pieces = partition(kind, labels, len(honest), alpha, seed)
    owner = dict(zip(honest, pieces))
    owner.update({j: pieces[k % len(honest)] for k, j in enumerate(byzantine)})
    return [owner[j] for j in range(cfg.clients)]
