"""ByzFL's data distributions (``byzfl.fed_framework.DataDistributor``) as partitions (registry kind ``partition``).

Each takes (labels, n, alpha, seed) like every partition; ``data.alpha`` is ByzFL's ``distribution_parameter``: γ for
``gamma_similarity_niid`` (the fraction of the data spread IID), α for ``dirichlet_niid``, ignored by
``extreme_niid``. ByzFL draws from Python's and NumPy's global generators; here every draw comes from
``mpifl.rng.numpy_rng(seed, Purpose.PARTITION)``, so the split is the same distribution, drawn reproducibly per seed,
and equal to ByzFL's index for index given the same draws (tests/test_byzfl_data_models.py).

Reference
    J. Stephan et al., ByzFL 0.0.11, https://github.com/LPD-EPFL/byzfl (``fed_framework/data_distributor.py``);
    the Dirichlet split: T.-M. H. Hsu, H. Qi, M. Brown, "Measuring the effects of non-identical data distribution for
    federated visual classification", arXiv:1909.06335, 2019.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import register
from ..rng import Purpose, numpy_rng
from .partition import shards


@register("partition", "extreme_niid")
def extreme_niid(labels: torch.Tensor, n: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Sort by (label, index) and cut n contiguous pieces of (nearly) equal size; ByzFL's ``extreme_niid``.
    Deterministic, and the same split as ``shards``."""
    return shards(labels, n)


@register("partition", "gamma_similarity_niid")
def gamma_similarity_niid(labels: torch.Tensor, n: int, alpha: float, seed: int) -> list[np.ndarray]:
    """ByzFL's ``gamma_similarity_niid`` with γ = ``alpha``: the first floor(γ N) points (dataset order) are shuffled
    and cut into n IID pieces, the rest sorted by (label, index) and cut into n pieces; client i gets the i-th of
    each."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"data.alpha={alpha} is γ of data.partition=gamma_similarity_niid: it must be in [0, 1].")
    y = labels.numpy()
    similar = int(len(y) * alpha)
    iid = np.array_split(numpy_rng(seed, Purpose.PARTITION).permutation(similar), n)
    rest = similar + np.argsort(y[similar:], kind="stable")
    niid = np.array_split(rest, n)
    return [np.concatenate([a, b]).astype(np.int64) for a, b in zip(iid, niid)]


@register("partition", "dirichlet_niid")
def dirichlet_niid(labels: torch.Tensor, n: int, alpha: float, seed: int) -> list[np.ndarray]:
    """ByzFL's ``dirichlet_niid``: one Dirichlet(α·1_n) draw of client proportions per class (all c draws first);
    class k's indices, in dataset order, are cut at floor(cumsum · count) and client j gets its piece of every class,
    class by class. Unlike mpifl's ``dirichlet``, indices are not shuffled within a class, as in ByzFL."""
    y = labels.numpy()
    classes = np.unique(y)
    proportions = numpy_rng(seed, Purpose.PARTITION).dirichlet(np.repeat(alpha, n), size=len(classes))
    cuts = np.cumsum(proportions, axis=1)[:, :-1]
    pieces = []
    for k, c in enumerate(classes):  # one split per class (C classes), never per point
        members = np.flatnonzero(y == c)
        pieces.append(np.split(members, (cuts[k] * len(members)).astype(int)))
    return [np.concatenate([pieces[k][j] for k in range(len(classes))]).astype(np.int64) for j in range(n)]
