"""Krum and Multi-Krum: keep the updates whose nearest neighbours are closest, average the kept ones.

Reference
    P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer, "Machine learning with adversaries: Byzantine tolerant
    gradient descent", NeurIPS 2017, arXiv:1703.02757 (preprint title "Byzantine-tolerant machine learning").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .columns import gram64, masked_mean
from ..errors import ConfigError
from .base import Decision, RoundView, Rule, TooFewUpdates, too_few
from ..registry import register


def squared_distances(z: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """[k, k] float64 squared Euclidean distances between the rows of ``z`` selected by ``rows`` (None: all),
    diagonal exactly 0.

    Gram trick ||a||² + ||b||² − 2⟨a, b⟩ in float64 (:func:`mpifl.rules.columns.gram64`): in float32 the cancellation
    error (~1e-7 ||a||²) swamps the small distances between similar honest updates when a far (×100) row is present,
    and reorders the scores.
    """
    gram = gram64(z, rows)
    norms = gram.diagonal()
    dist = (norms[:, None] + norms[None, :] - 2 * gram).clamp_min_(0)
    return dist.fill_diagonal_(0)


def krum_scores(z: torch.Tensor, f: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Score of each row of ``z`` selected by ``rows`` (None: all) [k] (float64): the sum of its squared distances to
    its k − f − 2 nearest other selected rows."""
    k = z.shape[0] if rows is None else int(rows.sum())
    if k <= 2 * f + 2:
        raise TooFewUpdates(f"Krum needs more than 2f + 2 usable updates: aggregator.params.f={f} allows at least "
                         f"{2 * f + 3}, this round has {k}; lower f.")
    dist = squared_distances(z, rows).fill_diagonal_(float("inf"))  # a row is not its own neighbour
    return torch.sort(dist, dim=1).values[:, :k - f - 2].sum(dim=1)


def select(view: RoundView, f: int, m: int | None) -> Decision:
    """The mean of the m usable rows with the lowest Krum scores (ties: the lower client index), as a Decision over
    all n clients: accepted = the selected, weight = 1/m each."""
    n, device = view.valid.shape[0], view.z.device
    index = torch.nonzero(view.valid).squeeze(1)
    k = index.shape[0]
    if k == 0:
        return Decision(None, view.valid.clone(), torch.zeros(n, device=device))
    scores = krum_scores(view.z, f, view.valid)
    m = k - f if m is None else m
    if m > k:
        raise TooFewUpdates(f"Multi-Krum selects aggregator.params.m={m} updates, but this round has only {k}.")
    chosen = torch.sort(scores, stable=True).indices[:m]
    accepted = torch.zeros(n, dtype=torch.bool, device=device)
    accepted[index[chosen]] = True
    return Decision(masked_mean(view.z, accepted), accepted, accepted.to(torch.float32) / m)


def _check_f(f: int) -> None:
    if f < 0:
        raise ConfigError(f"aggregator.params.f={f} must be >= 0: it is the number of Byzantine updates tolerated.")


@dataclass(frozen=True)
class KrumParams:
    f: int = 1  # Byzantine updates tolerated; a round needs more than 2f + 2 usable updates

    def __post_init__(self) -> None:
        _check_f(self.f)


@register("rule", "krum")
class Krum(Rule):
    """Krum (Blanchard et al., NeurIPS 2017, arXiv:1703.02757): the one update whose squared distances to its
    k − f − 2 nearest other updates sum lowest.

    The neighbour count is the paper's k − f − 2. ByzFL 0.0.11 (``byzfl.Krum``) uses k − f − 1 (its N_i are the k − f
    nearest rows including the row itself), so ours with f equals ByzFL's with f + 1. A round with k ≤ 2f + 2 usable
    updates, where the paper's guarantee does not hold, raises ValueError naming f (ByzFL raises only for 2f ≥ k).
    """

    Params = KrumParams

    @classmethod
    def check_rows(cls, params: KrumParams, k: int, why: str) -> None:
        if k <= 2 * params.f + 2:
            raise too_few(f"krum with aggregator.params.f={params.f}", f"more than 2f + 2 = {2 * params.f + 2}", k, why)

    def aggregate(self, view: RoundView) -> Decision:
        return select(view, self.params.f, 1)


@dataclass(frozen=True)
class MultiKrumParams:
    f: int = 1  # Byzantine updates tolerated; a round needs more than 2f + 2 usable updates
    m: int | None = None  # updates averaged; None: k − f of the round's k usable updates

    def __post_init__(self) -> None:
        _check_f(self.f)
        if self.m is not None and self.m < 1:
            raise ConfigError(f"aggregator.params.m={self.m} must be >= 1 (or null for k − f).")


@register("rule", "multi_krum")
class MultiKrum(Rule):
    """Multi-Krum (Blanchard et al., NeurIPS 2017, arXiv:1703.02757): the mean of the m updates with the
    lowest Krum scores, m = k − f by default as in ByzFL.

    Scores use the paper's k − f − 2 neighbours where ByzFL 0.0.11 uses k − f − 1 (see :class:`Krum`), and ties in
    the score go to the lower client index (ByzFL's ``topk`` leaves them unspecified).
    """

    Params = MultiKrumParams

    @classmethod
    def check_rows(cls, params: MultiKrumParams, k: int, why: str) -> None:
        if k <= 2 * params.f + 2:
            raise too_few(f"multi_krum with aggregator.params.f={params.f}", f"more than 2f + 2 = {2 * params.f + 2}",
                          k, why)
        if params.m is not None and params.m > k:
            raise too_few(f"multi_krum with aggregator.params.m={params.m}", f"at least m = {params.m}", k, why)

    def aggregate(self, view: RoundView) -> Decision:
        return select(view, self.params.f, self.params.m)
