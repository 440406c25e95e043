"""ByzFL's optimised IPM and ALIE: the attack factor τ found by a line search over the server's response.

Instead of a fixed factor, the colluding clients try factors τ, simulate the server's step on the honest rows plus f
copies of the forged row (:attr:`.base.RuleFacts.aggregate`: screening, pre-aggregators, rule), and keep the τ whose
aggregate lies farthest from the honest mean. The search is ByzFL 0.0.11's: an expansion phase from ``start`` that
doubles the step while the distance grows, then a contraction phase that multiplies the step by ``ratio`` after every
try, ``evals`` evaluations in all.

References
    C. Xie, O. Koyejo, I. Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation",
    UAI 2019, arXiv:1903.03936; M. Baruch, G. Baruch, Y. Goldberg, "A Little Is Enough: Circumventing Defenses for
    Distributed Learning", NeurIPS 2019, arXiv:1902.06156; the optimised variants: Y. Allouah, S. Farhadkhani,
    R. Guerraoui, N. Gupta, R. Pinot, J. Stephan, "Fixing by Mixing: A Recipe for Optimal Byzantine ML under
    Heterogeneity", AISTATS 2023, arXiv:2302.01772 (the reference ByzFL cites).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import ExperimentConfig
from ..registry import get, register
from .base import AttackView, ColludingAttack, require
from .field import _all_send, _std


@dataclass(frozen=True)
class SearchParams:
    evals: int = 20  # evaluations of the server's response in all
    start: float = 0.0  # the first factor tried
    delta: float = 10.0  # the first step of the expansion phase
    ratio: float = 0.8  # the step shrinks by this after a failed expansion and after every contraction try

    def __post_init__(self) -> None:
        require(self.evals >= 1, f"attack.params.evals={self.evals} must be >= 1.")
        require(self.delta != 0, "attack.params.delta must be non-zero.")
        require(0.5 < self.ratio < 1, f"attack.params.ratio={self.ratio} must be in (0.5, 1).")


def line_search(distance: Callable[[float], float], p: SearchParams) -> float:
    """ByzFL's expansion-then-contraction search for the τ that maximises ``distance`` with ``p.evals`` calls."""
    best_x, best_y = p.start, distance(p.start)
    delta, remaining = p.delta, p.evals - 1
    while remaining > 0:  # expansion: double the step while the distance grows
        x = best_x + delta
        y = distance(x)
        remaining -= 1
        if y > best_y:
            best_x, best_y = x, y
            delta *= 2
        else:
            delta *= p.ratio
            break
    while remaining > 0:  # contraction: try best + step, shrinking the step after every try
        x = best_x + delta
        y = distance(x)
        remaining -= 1
        if y > best_y:
            best_x, best_y = x, y
        delta *= p.ratio
    return best_x


class _Optimal(ColludingAttack):
    """Every Byzantine client sends ``row(τ)`` with the τ of :func:`line_search`; the rows the simulated server
    sees are the honest ones first, then the b forged copies (ByzFL's order). A τ at which the server would skip the
    step counts as distance 0.

    The forged row is ``origin + τ · direction`` (``τ · direction`` without an origin): both are computed once per
    round (:meth:`line`), not once per try: the coordinate-wise std of ALIE's direction took longer than the
    simulated server step it was made for."""

    Params = SearchParams

    @classmethod
    def check(cls, params: object, cfg: ExperimentConfig) -> None:
        needs = get("rule", cfg.aggregator.name).needs
        require(not (cfg.aggregator.filters or needs.truth or needs.server_data or needs.filter or needs.reshapes),
                f"attack.name={cls.registered_name} simulates the server's step, which it cannot for "  # type: ignore[attr-defined]
                f"aggregator.name={cfg.aggregator.name} with filters {list(cfg.aggregator.filters)}: choose a rule "
                "without a filter, ground truth or server data.")

    def line(self, honest: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(origin or None, direction) of the forged rows."""
        raise NotImplementedError

    @staticmethod
    def row(origin: torch.Tensor | None, direction: torch.Tensor, tau: float) -> torch.Tensor:
        """The forged row at factor τ; for IPM τ · (−mean) has the bits of the former −τ · mean."""
        return tau * direction if origin is None else origin + tau * direction

    def forge(self, view: AttackView) -> torch.Tensor:
        aggregate = view.rule.aggregate
        if aggregate is None:
            raise ValueError(f"{self.registered_name} needs the server's aggregation (RuleFacts.aggregate).")  # type: ignore[attr-defined]
        honest, b = view.honest, view.own.shape[0]
        mean = honest.mean(dim=0)
        origin, direction = self.line(honest, mean)

        def distance(tau: float) -> float:
            forged = self.row(origin, direction, tau).expand(b, -1)
            aggregated = aggregate(torch.cat([honest, forged]))
            return 0.0 if aggregated is None else float(torch.linalg.vector_norm(aggregated - mean))

        return _all_send(self.row(origin, direction, line_search(distance, self.params)), view)


@register("attack", "optimal_ipm")
class OptimalIpm(_Optimal):
    """Optimised Inner Product Manipulation: −τ·mean(honest) with τ found by the line search; ByzFL 0.0.11's
    ``Optimal_InnerProductManipulation(agg, pre_agg_list, f, evals, start, delta, ratio)``, whose agg, pre-aggregators
    and f are the run's own here."""

    def line(self, honest: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        return None, -mean


@register("attack", "optimal_alie")
class OptimalAlie(_Optimal):
    """Optimised A Little Is Enough: mean(honest) + τ·std(honest) (unbiased, coordinate-wise) with τ found by the
    line search; ByzFL 0.0.11's ``Optimal_ALittleIsEnough(agg, pre_agg_list, f, evals, start, delta, ratio)``."""

    def line(self, honest: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        return mean, _std(honest)
