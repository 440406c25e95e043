"""SignGuard: a norm filter and a sign-statistics clustering filter, then a norm-clipped mean."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .columns import coordinate_median
from ..errors import ConfigError
from ..rng import Purpose, generator
from .base import Decision, Rule, RoundView, weights_of
from ..registry import register

SHIFT_STEPS = 300  # mean-shift iterations per seed; flat-kernel shifts on k points settle in far fewer


@dataclass(frozen=True)
class SignGuardParams:
    lower: float = 0.1  # keep rows with lower <= ||x|| / median ||x|| ...
    upper: float = 3.0  # ... <= upper
    coordinates: float = 0.1  # fraction of the d coordinates sampled for the sign statistics

    def __post_init__(self) -> None:
        if not 0 <= self.lower <= self.upper:
            raise ConfigError(f"aggregator.params.lower={self.lower} and upper={self.upper} need 0 <= lower <= upper.")
        if not 0 < self.coordinates <= 1:
            raise ConfigError(f"aggregator.params.coordinates={self.coordinates} must be a fraction in (0, 1].")


def sign_features(rows: torch.Tensor) -> torch.Tensor:
    """[k, 3] float64: each row's fractions of positive, zero and negative entries."""
    signs = torch.sign(rows)
    return torch.stack([(signs > 0).sum(dim=1), (signs == 0).sum(dim=1), (signs < 0).sum(dim=1)],
                       dim=1).to(torch.float64) / rows.shape[1]


def largest_mean_shift_cluster(points: torch.Tensor) -> torch.Tensor:
    """[k] bool: the largest cluster of a flat-kernel mean shift on ``points`` [k, p].

    The bandwidth is the mean distance of a point to its ceil(k/2)-th nearest point (itself included), the rule of
    scikit-learn's ``estimate_bandwidth`` at quantile 0.5, so a cluster holding most points is found whatever the scale
    of the features. Every point seeds a shift; modes within one bandwidth of a denser mode are merged into it; each
    point joins its nearest mode. Ties: the denser mode, then the lower seed index. Like scikit-learn's MeanShift at
    this bandwidth it can split one honest blob, so some honest clients may be left out in rounds without an attack.
    """
    k = points.shape[0]
    distances = torch.cdist(points, points)
    bandwidth = torch.sort(distances, dim=1).values[:, math.ceil(k / 2) - 1].mean()
    modes = points.clone()
    for _ in range(SHIFT_STEPS):
        within = (torch.cdist(modes, points) <= bandwidth).to(points.dtype)
        count = within.sum(dim=1, keepdim=True)  # 0 only through rounding at a zero bandwidth: the mode stays
        shifted = torch.where(count > 0, within @ points / count.clamp(min=1), modes)
        if torch.equal(shifted, modes):
            break
        modes = shifted
    density = (torch.cdist(modes, points) <= bandwidth).sum(dim=1)
    close = (torch.cdist(modes, modes) <= bandwidth).tolist()
    kept: list[int] = []
    for seed in torch.argsort(density, descending=True, stable=True).tolist():
        if not any(close[seed][other] for other in kept):
            kept.append(seed)
    label = torch.argmin(torch.cdist(points, modes[kept]), dim=1)
    largest = int(torch.argmax(torch.bincount(label, minlength=len(kept))))
    return label == largest


@register("rule", "signguard")
class SignGuard(Rule):
    """SignGuard [Xu, Huang, Ji, Li, "Byzantine-robust federated learning through collaborative malicious gradient
    filtering", ICDCS 2022, arXiv:2109.05872].

    Two filters run side by side on the k usable rows: a norm filter keeps rows with
    lower ≤ ‖x‖ / median‖x‖ ≤ upper, and a sign filter clusters the rows' fractions of positive, zero and negative
    entries on a random subset of coordinates and keeps the largest cluster. The accepted rows (both filters) are each
    clipped to the median norm and averaged.

    Choices where the paper leaves room: the paper clusters with scikit-learn's MeanShift; here a deterministic
    flat-kernel mean shift in torch (:func:`largest_mean_shift_cluster`, bandwidth from the data, largest cluster,
    ties to the denser mode) so no host round trip or library is needed. The coordinate subset is max(1,
    floor(coordinates·d)) coordinates drawn without replacement from ``generator(seed, Purpose.RULE, round)`` (all d,
    no draw, when coordinates = 1). The median of an even number of norms is the mean of the two middle ones; the norm
    filter is tested as lower·M ≤ ‖x‖ ≤ upper·M, so a zero median M keeps only zero rows instead of dividing by zero.
    Accepting nobody gives no step (direction None). ``weight`` is 1/|accepted| on the accepted rows (their clipped
    updates are what is averaged).
    """

    Params = SignGuardParams

    def aggregate(self, view: RoundView) -> Decision:
        device, (n, d) = view.z.device, view.z.shape
        usable = torch.nonzero(view.valid).squeeze(1)
        if usable.shape[0] == 0:
            return Decision(None, view.valid.clone(), torch.zeros(n, device=device))
        norms = torch.linalg.vector_norm(view.z, dim=1)[usable]
        median = coordinate_median(norms.unsqueeze(1))[0]
        by_norm = (norms >= self.params.lower * median) & (norms <= self.params.upper * median)
        by_sign = largest_mean_shift_cluster(sign_features(self._sampled_coordinates(view)[usable]))
        good = by_norm & by_sign
        accepted = torch.zeros(n, dtype=torch.bool, device=device)
        accepted[usable[good]] = True
        if not bool(good.any()):
            return Decision(None, accepted, weights_of(accepted))
        scale = torch.zeros(n, dtype=view.z.dtype, device=device)  # the clipped mean as one Zᵀw: no rows copied
        scale[usable[good]] = torch.where(norms[good] > median, median / norms[good], 1.0) / int(good.sum())
        return Decision(torch.mv(view.z.T, scale), accepted, weights_of(accepted))

    def _sampled_coordinates(self, view: RoundView) -> torch.Tensor:
        """[n, c] the columns of Z whose signs are counted this round (all of Z when coordinates = 1)."""
        d = view.z.shape[1]
        if self.params.coordinates >= 1:
            return view.z
        count = max(1, math.floor(self.params.coordinates * d))
        draws = generator(view.seed, Purpose.RULE, view.round)
        return torch.index_select(view.z, 1, torch.randperm(d, generator=draws)[:count].to(view.z.device))
