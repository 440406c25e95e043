"""MoNNA and Meamed: average the k − f updates (MoNNA) or values per coordinate (Meamed) nearest a trusted point.

References
    MoNNA: S. Farhadkhani, R. Guerraoui, N. Gupta, L.-N. Hoang, R. Pinot, J. Stephan, "Robust collaborative learning
           with linear gradient overhead", ICML 2023, arXiv:2209.10931.
    Meamed: C. Xie, O. Koyejo, I. Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116, 2018 (mean around
           the median).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..registry import register
from .base import Decision, RoundView, Rule, too_few, undefined_weights
from .columns import by_columns, coordinate_median, masked_mean
from .subsets import SubsetParams, check_majority, empty, usable


@dataclass(frozen=True)
class MonnaParams:
    f: int = 1  # Byzantine updates tolerated: the k − f nearest are averaged; a round needs more than 2f
    idx: int = 0  # the trusted update: the idx-th usable row of the round (ByzFL's index into its vectors)

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ConfigError(f"aggregator.params.f={self.f} must be >= 0.")
        if self.idx < 0:
            raise ConfigError(f"aggregator.params.idx={self.idx} must be >= 0.")


@register("rule", "monna")
class Monna(Rule):
    """MoNNA (Farhadkhani et al., ICML 2023, arXiv:2209.10931): the mean of the k − f usable updates nearest (in
    Euclidean distance) to the trusted update, the ``idx``-th usable row, itself included; ByzFL 0.0.11's
    ``MoNNA(f, idx)``.

    MoNNA comes from peer-to-peer learning, where the trusted update is the node's own; on a server ByzFL takes the
    idx-th row it is given (its honest clients come first), here the idx-th usable row in client order. Ties go to the
    lower client index (ByzFL's ``topk`` leaves them unspecified).
    """

    Params = MonnaParams

    @classmethod
    def check_rows(cls, params: MonnaParams, k: int, why: str) -> None:
        check_majority("monna", params.f, k, why)
        if params.idx >= k:
            raise too_few(f"monna with aggregator.params.idx={params.idx}", f"more than idx = {params.idx}", k, why)

    def aggregate(self, view: RoundView) -> Decision:
        index = usable(view, "MoNNA", self.params.f)
        if index is None:
            return empty(view)
        k, idx = index.shape[0], self.params.idx
        if idx >= k:
            return empty(view)  # the trusted update is not among this round's usable rows: no step
        rows = view.z[index]
        distances = torch.linalg.vector_norm(rows - rows[idx], dim=1)
        nearest = torch.sort(distances, stable=True).indices[:k - self.params.f]
        accepted = torch.zeros_like(view.valid)
        accepted[index[nearest]] = True
        return Decision(masked_mean(view.z, accepted), accepted, accepted.to(torch.float32) / (k - self.params.f))


def mean_around_median(rows: torch.Tensor, f: int) -> torch.Tensor:
    """Per column of ``rows`` [k, w], the mean of the k − f values nearest the column's median (for even k the mean
    of the two middle values, as torch.quantile(0.5) in ByzFL); ties go to the lower row."""
    k = rows.shape[0]
    median = coordinate_median(rows)
    nearest = torch.sort((rows - median).abs(), dim=0, stable=True).indices[:k - f]
    return rows.gather(0, nearest).mean(dim=0)


@register("rule", "meamed")
class Meamed(Rule):
    """Meamed (Xie, Koyejo, Gupta, arXiv:1802.10116): per coordinate, the mean of the k − f usable values nearest
    the coordinate-wise median; ByzFL 0.0.11's ``Meamed(f)``. Every coordinate picks its own clients, so weights
    are NaN. Ties in the distance to the median go to the lower client index (ByzFL's ``topk`` leaves them
    unspecified)."""

    Params = SubsetParams

    @classmethod
    def check_rows(cls, params: SubsetParams, k: int, why: str) -> None:
        check_majority("meamed", params.f, k, why)

    def aggregate(self, view: RoundView) -> Decision:
        if usable(view, "Meamed", self.params.f) is None:
            return empty(view)
        direction = by_columns(view.z, view.valid, lambda rows, cols: mean_around_median(rows, self.params.f))
        return Decision(direction, view.valid.clone(), undefined_weights(len(view.valid), view.z.device))
