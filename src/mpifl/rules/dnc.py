"""Divide-and-Conquer (DnC): spectral outlier removal on random coordinate subsets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .columns import masked_mean
from ..errors import ConfigError
from ..rng import Purpose, generator
from .base import Decision, RoundView, Rule, TooFewUpdates, too_few, weights_of
from ..registry import register


@dataclass(frozen=True)
class DnCParams:
    f: int = 1  # the number of Byzantine rows to tolerate
    iterations: int = 1  # independent coordinate subsets; the good set is the intersection over them
    subsample: int = 10000  # coordinates per subset (all of them when d is smaller)
    c: float = 1.0  # filtering fraction: each iteration removes floor(c·f) rows

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ConfigError(f"aggregator.params.f={self.f} must be >= 0.")
        if self.iterations < 1:
            raise ConfigError(f"aggregator.params.iterations={self.iterations} must be >= 1.")
        if self.subsample < 1:
            raise ConfigError(f"aggregator.params.subsample={self.subsample} must be >= 1.")
        if not self.c >= 0:
            raise ConfigError(f"aggregator.params.c={self.c} must be >= 0.")

    @property
    def removed(self) -> int:
        return math.floor(self.c * self.f)


def outlier_scores(sample: torch.Tensor) -> torch.Tensor:
    """Squared projections of the centred rows [k, b] on their top right singular vector."""
    centred = sample - sample.mean(dim=0)
    top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    return (centred @ top).square()


@register("rule", "dnc")
class DivideAndConquer(Rule):
    """DnC [Shejwalkar, Houmansadr, "Manipulating the Byzantine: optimizing model poisoning attacks and defenses for
    federated learning", NDSS 2021].

    Each iteration samples ``subsample`` coordinates, centres the k usable rows on them, scores each row by its squared
    projection on the top right singular vector and drops the floor(c·f) highest; the good set is the intersection over
    iterations and the direction is its mean. Needs k > floor(c·f) (a ValueError otherwise, naming f, c and k).

    Choices where the paper leaves room: coordinates are drawn without replacement from
    ``generator(seed, Purpose.RULE, round)`` on the CPU, one draw per iteration in sequence, and all d coordinates are
    used (no draw) when ``subsample >= d``; the number removed is floor(c·f); equal scores are removed lower client
    index first. An empty intersection (possible only when iterations·floor(c·f) >= k) gives no step (direction
    None). ``weight`` is 1/|good| on the good set.
    """

    Params = DnCParams

    @classmethod
    def check_rows(cls, params: DnCParams, k: int, why: str) -> None:
        if k <= params.removed:
            raise too_few(f"dnc with aggregator.params.f={params.f}, c={params.c}",
                          f"more than floor(c·f) = {params.removed}", k, why)

    def aggregate(self, view: RoundView) -> Decision:
        device, (n, d) = view.z.device, view.z.shape
        usable = torch.nonzero(view.valid).squeeze(1)
        k, removed = usable.shape[0], self.params.removed
        if k == 0:
            return Decision(None, view.valid.clone(), torch.zeros(n, device=device))
        if k <= removed:
            raise TooFewUpdates(f"dnc: removing floor(c·f) = {removed} rows (aggregator.params.f={self.params.f}, "
                             f"c={self.params.c}) needs more than {removed} usable rows, got {k}; lower f or c.")
        good = torch.ones(k, dtype=torch.bool, device=device)
        draws = generator(view.seed, Purpose.RULE, view.round)
        for _ in range(self.params.iterations):
            if self.params.subsample >= d:
                sample = view.z[usable]
            else:  # the sampled columns of the usable rows only: no copy of the whole rows
                columns = torch.randperm(d, generator=draws)[:self.params.subsample].to(device)
                sample = torch.index_select(view.z, 1, columns)[usable]
            worst = torch.argsort(outlier_scores(sample), descending=True, stable=True)[:removed]
            good[worst] = False
        accepted = torch.zeros(n, dtype=torch.bool, device=device)
        accepted[usable[good]] = True
        direction = masked_mean(view.z, accepted)
        return Decision(direction, accepted, weights_of(accepted))
