"""Pre-aggregators: maps from the usable rows [k, d] to new rows that the rule then aggregates.

References
    NNM: Y. Allouah, S. Farhadkhani, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan, "Fixing by mixing: a recipe for
         optimal Byzantine ML under heterogeneity", AISTATS 2023, arXiv:2302.01772.
    Bucketing: S. P. Karimireddy, L. He, M. Jaggi, "Byzantine-robust learning on heterogeneous datasets via
         bucketing", ICLR 2022, arXiv:2006.09365.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..rng import Purpose, generator
from .base import PreAggregator, TooFewUpdates, too_few
from .krum import squared_distances
from ..registry import register


@dataclass(frozen=True)
class NnmParams:
    f: int = 1  # Byzantine rows tolerated: each row is mixed with its k − f nearest

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ConfigError(f"aggregator.params.f={self.f} must be >= 0.")


@register("pre", "nnm")
class NearestNeighborMixing(PreAggregator):
    """Nearest neighbour mixing (Allouah et al., AISTATS 2023, arXiv:2302.01772): row i becomes the mean of its
    k − f nearest rows in Euclidean distance, itself included, as in ByzFL 0.0.11's ``NNM(f)``.

    Distances are float64 (see :func:`mpifl.rules.krum.squared_distances`) and ties go to the lower row index (ByzFL's
    ``topk`` leaves them unspecified). f ≥ k raises ValueError naming f, as ByzFL does.
    """

    Params = NnmParams

    @classmethod
    def check_rows(cls, params: NnmParams, k: int, why: str) -> None:
        if params.f >= k:
            raise too_few(f"nnm with aggregator.params.f={params.f}", f"more than f = {params.f}", k, why)

    def transform(self, rows: torch.Tensor, round_: int, seed: int) -> torch.Tensor:
        k, f = rows.shape[0], self.params.f
        if k == 0:
            return rows
        if f >= k:
            raise TooFewUpdates(f"NNM mixes each update with its k − f nearest: aggregator.params.f={f} needs more than "
                             f"{f} usable updates, this round has {k}.")
        nearest = torch.sort(squared_distances(rows), dim=1, stable=True).indices[:, :k - f]
        mixing = torch.zeros((k, k), dtype=rows.dtype, device=rows.device)
        mixing.scatter_(1, nearest, 1.0 / (k - f))
        return mixing @ rows


@dataclass(frozen=True)
class BucketingParams:
    s: int = 2  # rows per bucket

    def __post_init__(self) -> None:
        if self.s < 1:
            raise ConfigError(f"aggregator.params.s={self.s} must be >= 1.")


@register("pre", "bucketing")
class Bucketing(PreAggregator):
    """Bucketing (Karimireddy, He, Jaggi, ICLR 2022, arXiv:2006.09365): shuffle the k rows, cut them into buckets of s
    consecutive rows and replace each bucket by its mean; ceil(k / s) rows come out, the last bucket holding the
    k mod s leftover rows when s does not divide k, as in ByzFL 0.0.11's ``Bucketing(s)``.

    The permutation is ``torch.randperm(k)`` on the CPU generator ``mpifl.rng.generator(seed, Purpose.RULE, round)``
    (ByzFL draws it from torch's global generator), so a run's buckets depend only on its seed and the round. The
    bucket means are one product M·rows with M_bj = 1/|bucket b| for the rows j in bucket b: the same values as
    ByzFL's mean of shuffled rows to float rounding.
    """

    Params = BucketingParams

    @classmethod
    def rows_out(cls, params: BucketingParams, k: int) -> int:
        return -(-k // params.s)

    def transform(self, rows: torch.Tensor, round_: int, seed: int) -> torch.Tensor:
        k = rows.shape[0]
        s = self.params.s
        permutation = torch.randperm(k, generator=generator(seed, Purpose.RULE, round_)).to(rows.device)
        bucket = torch.arange(k, device=rows.device) // s  # shuffled position p falls in bucket p // s
        sizes = torch.bincount(bucket, minlength=-(-k // s)).to(rows.dtype)
        mixing = torch.zeros((len(sizes), k), dtype=rows.dtype, device=rows.device)
        mixing[bucket, permutation] = 1.0 / sizes[bucket]
        return mixing @ rows  # one pass over the rows: a shuffled copy of them took 3x as long
