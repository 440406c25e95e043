"""The paper's baselines on the interface: Mean, OracleSGD, Median, Noisy Median, TrMean, RSA (DiverseFL:
:mod:`.diversefl`).

Their arithmetic lives in :mod:`mpifl.rules.columns` (coordinate-wise, in column bands), the median's and trimmed
mean's fast, bit-identical kernels in :mod:`.coordinatewise`; parameters live in ``aggregator.params``
(``beta``, ``sigma``, ``delta``), one ``Params`` object that both sides of a rule read (RSA's and Noisy Median's
clients included).

References
    [9]  D. Yin, Y. Chen, K. Ramchandran, P. Bartlett, "Byzantine-robust distributed learning: towards optimal
         statistical rates", ICML 2018, arXiv:1803.01498 (Median, TrMean).
    [11] X. Chen, T. Chen, H. Sun, Z. S. Wu, M. Hong, "Distributed training with heterogeneous data: bridging median-
         and mean-based algorithms", NeurIPS 2020, arXiv:1906.01736 (Noisy Median).
    [12] L. Li, W. Xu, T. Chen, G. B. Giannakis, Q. Ling, "RSA: Byzantine-robust stochastic aggregation methods for
         distributed learning from heterogeneous datasets", AAAI 2019, arXiv:1811.03761.
    DiverseFL: S. Prakash, A. S. Avestimehr, "Mitigating Byzantine attacks in federated learning", arXiv:2010.07541.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .columns import by_columns, masked_mean, rsa_direction
from . import coordinatewise
from ..errors import ConfigError
from .base import Decision, Needs, RoundView, Rule, undefined_weights, weights_of
from ..registry import register


def _empty(view: RoundView) -> Decision:
    return Decision(None, view.valid.clone(), torch.zeros(view.valid.shape, device=view.z.device))


@register("rule", "mean")
class Mean(Rule):
    """The plain average of every usable update (no defence; the reference for what an attack does)."""

    def aggregate(self, view: RoundView) -> Decision:
        direction = masked_mean(view.z, view.valid)
        return Decision(direction, view.valid.clone(), weights_of(view.valid))


@register("rule", "oracle")
class OracleSGD(Rule):
    """The average of the honest updates: the only rule that is told who is Byzantine (an upper bound, not a
    defence)."""

    needs = Needs(truth=True)

    def aggregate(self, view: RoundView) -> Decision:
        assert view.byzantine is not None
        accepted = view.valid & ~view.byzantine
        return Decision(masked_mean(view.z, accepted), accepted, weights_of(accepted))


@register("rule", "median")
class Median(Rule):
    """Coordinate-wise median [9]; for an even count the mean of the two middle values (docs/paper-notes.md)."""

    def aggregate(self, view: RoundView) -> Decision:
        if not bool(view.valid.any()):
            return _empty(view)
        direction = coordinatewise.median(view.z, view.valid)
        return Decision(direction, view.valid.clone(), undefined_weights(len(view.valid), view.z.device))


@dataclass(frozen=True)
class NoisyParams:
    sigma: float = 0.01  # std of the noise honest clients add

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise ConfigError(f"aggregator.params.sigma={self.sigma} must be >= 0.")


@register("rule", "noisy_median")
class NoisyMedian(Median):
    """Noisy Median [11]: honest clients add N(0, sigma²) noise before upload (``aggregator.params.sigma``, read by
    :class:`mpifl.clients.NoisyClients`), the server takes the coordinate-wise median."""

    Params = NoisyParams
    needs = Needs(clients="noisy")


@dataclass(frozen=True)
class TrimParams:
    beta: float = 0.1  # trim floor(beta k) values from each end of every coordinate

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 0.5:
            raise ConfigError(f"aggregator.params.beta={self.beta} must be in [0, 0.5): TrMean trims beta*k from each "
                              "end.")


@register("rule", "trmean")
class TrimmedMean(Rule):
    """Coordinate-wise trimmed mean [9] over the k usable rows, dropping floor(beta k) from each end."""

    Params = TrimParams

    def aggregate(self, view: RoundView) -> Decision:
        if not bool(view.valid.any()):
            return _empty(view)
        direction = coordinatewise.trimmed_mean(view.z, view.valid, self.params.beta)
        return Decision(direction, view.valid.clone(), undefined_weights(len(view.valid), view.z.device))


@dataclass(frozen=True)
class RsaParams:
    delta: float = 0.2635  # the l1 penalty of eqs. 6-7, on the server and in every client's update

    def __post_init__(self) -> None:
        if self.delta < 0:
            raise ConfigError(f"aggregator.params.delta={self.delta} must be >= 0.")


@register("rule", "rsa")
class Rsa(Rule):
    """RSA [12]: clients keep model copies and upload them; the server steps along delta sum_j sign(θ − θ_j) (eq. 7)."""

    Params = RsaParams
    needs = Needs(clients="model_copies")

    def aggregate(self, view: RoundView) -> Decision:
        if not bool(view.valid.any()):
            return _empty(view)
        delta, theta = self.params.delta, view.theta
        direction = by_columns(view.z, view.valid, lambda rows, cols: rsa_direction(theta[cols], rows, delta))
        return Decision(direction, view.valid.clone(), undefined_weights(len(view.valid), view.z.device))
