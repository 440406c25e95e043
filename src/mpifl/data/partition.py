"""How the training set is split across n clients (index lists into the training set, client order).

The paper's non-IID split sorts by class and cuts n contiguous shards, so each client sees one or two classes. The
backdoor experiment needs every client to hold at least two classes; Dirichlet(alpha) and IID are the usual
alternatives in the robust-FL literature.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import choose, register
from ..rng import Purpose, numpy_rng


def _sorted_by_class(labels: torch.Tensor) -> np.ndarray:
    return np.argsort(labels.numpy(), kind="stable")


def shards(labels: torch.Tensor, n: int) -> list[np.ndarray]:
    """Sort by class, cut into n contiguous shards of (nearly) equal size (Sec. IV-A)."""
    return [s.copy() for s in np.array_split(_sorted_by_class(labels), n)]


def two_class(labels: torch.Tensor, n: int) -> list[np.ndarray]:
    """Sort by class, cut 2n shards; client i gets shards i and n+i, one from each half of the sorted order.

    A class spans at most one half of the data, so the two shards cannot come from one class (checked anyway).
    """
    pieces = np.array_split(_sorted_by_class(labels), 2 * n)
    parts = [np.concatenate([pieces[i], pieces[n + i]]) for i in range(n)]
    y = labels.numpy()
    for i, p in enumerate(parts):
        if len(np.unique(y[p])) < 2:
            raise ConfigError(f"data.partition=two_class gave client {i} a single class; the dataset is too skewed.")
    return parts


def dirichlet(labels: torch.Tensor, n: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Per class, split its indices across clients in proportions drawn from Dirichlet(alpha * 1_n)."""
    rng = numpy_rng(seed, Purpose.PARTITION)
    y = labels.numpy()
    buckets: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * len(idx)).astype(int)
        for client, part in enumerate(np.split(idx, cuts)):
            buckets[client].append(part)
    return [np.sort(np.concatenate(b)) for b in buckets]


def iid(labels: torch.Tensor, n: int, seed: int) -> list[np.ndarray]:
    perm = numpy_rng(seed, Purpose.PARTITION).permutation(len(labels))
    return [np.sort(p) for p in np.array_split(perm, n)]


register("partition", "shards")(lambda labels, n, alpha, seed: shards(labels, n))
register("partition", "two_class")(lambda labels, n, alpha, seed: two_class(labels, n))
register("partition", "dirichlet")(dirichlet)
register("partition", "iid")(lambda labels, n, alpha, seed: iid(labels, n, seed))


def partition(kind: str, labels: torch.Tensor, n: int, alpha: float, seed: int) -> list[np.ndarray]:
    """The registered partition ``kind`` (``data.partition``): every client's indices as an int64 array. A partition
    takes (labels, n, alpha, seed) and may ignore what it does not use."""
    if n > len(labels):
        raise ConfigError(f"clients={n} exceeds the {len(labels)} training points.")
    return choose("data.partition", "partition", kind)(labels, n, alpha, seed)


def batch_sizes(sizes: np.ndarray, absolute: int | None, fraction: float | None) -> np.ndarray:
    """[n] :func:`fraction_size` of every client at once (a million clients in one vectorised pass)."""
    if absolute is not None:
        return np.full(len(sizes), absolute, dtype=np.int64)
    assert fraction is not None
    return np.maximum(1, np.round(fraction * sizes)).astype(np.int64)


def fraction_size(total: int, absolute: int | None, fraction: float | None) -> int:
    """An absolute count, or a fraction of ``total`` rounded (at least one point)."""
    if absolute is not None:
        return absolute
    assert fraction is not None
    return max(1, int(round(fraction * total)))
