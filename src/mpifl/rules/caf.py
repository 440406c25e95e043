"""CAF: down-weight the updates that spread the weighted covariance most, until the weights sum to k − 2f.

Reference
    Y. Allouah, R. Guerraoui, J. Stephan, "Towards trustworthy federated learning with untrusted participants",
    ICML 2025 (the covariance-bound agnostic filter; the reference ByzFL 0.0.11's ``CAF`` cites).
"""

from __future__ import annotations

import math

import torch

from ..registry import register
from ..rng import Purpose, generator
from .base import Decision, RoundView, Rule
from .subsets import SubsetParams, check_majority, empty, usable


def caf_weights(rows: torch.Tensor, f: int, draws: torch.Generator) -> torch.Tensor:
    """The weights c [k] (of ByzFL's best iteration) whose weighted mean c·rows / Σc is CAF's output.

    From c = 1, while Σc > k − 2f: μ = weighted mean; one power-iteration step from a random unit vector v (drawn on
    the CPU, ``randn(d)``) gives the top eigenvector u and eigenvalue λ = ‖w‖ of the weighted covariance,
    w = Σ c_i (x_i − μ)⟨x_i − μ, v⟩ / Σc; τ_i = ⟨x_i − μ, u⟩², c ← c (1 − τ / max τ). The output is the μ of the
    iteration with the smallest λ. A step whose covariance vanishes along v (all weighted rows equal) ends the search,
    where ByzFL divides by zero.
    """
    k, d = rows.shape
    c = torch.ones(k, dtype=rows.dtype, device=rows.device)
    best, best_eigenvalue = c, math.inf
    while float(c.sum()) > k - 2 * f:
        total = c.sum()
        mu = (c @ rows) / total
        diffs = rows - mu  # explicit, as ByzFL: X v − μ·v cancels when a row is far (×100) from the others
        v = torch.randn(d, generator=draws)
        v = (v / torch.linalg.vector_norm(v)).to(rows.device)
        w = torch.sum(c[:, None] * diffs * (diffs @ v)[:, None], dim=0) / total  # ByzFL's order of operations:
        #  the reweighting amplifies rounding (a matrix-vector product instead moved the output by ~1e-4 at f = 5)
        norm = torch.linalg.vector_norm(w)
        if not bool(norm > 0):
            break
        eigenvalue = float(norm.double())
        if eigenvalue < best_eigenvalue:
            best, best_eigenvalue = c, eigenvalue
        tau = (diffs @ (w / norm)) ** 2
        tau_max = tau.max()
        if not bool(tau_max > 0):
            break
        c = c * (1 - tau / tau_max)
    return best


@register("rule", "caf")
class Caf(Rule):
    """CAF (Allouah, Guerraoui, Stephan, ICML 2025): the weighted mean of the usable updates after
    iteratively down-weighting those along the covariance's top eigenvector; ByzFL 0.0.11's ``CAF(f)``.

    weight_j = c_j / Σc, client j's exact share of the direction; accepted = c_j > 0. ByzFL returns None for f = 0
    (no iteration runs) and for identical rows (0/0); both give the plain mean here. The random vectors come from
    ``mpifl.rng.generator(seed, Purpose.RULE, round)``, one ``randn(d)`` per iteration as ByzFL draws from torch's
    global generator.
    """

    Params = SubsetParams

    @classmethod
    def check_rows(cls, params: SubsetParams, k: int, why: str) -> None:
        check_majority("caf", params.f, k, why)

    def aggregate(self, view: RoundView) -> Decision:
        index = usable(view, "CAF", self.params.f)
        if index is None:
            return empty(view)
        rows = view.z if index.shape[0] == view.z.shape[0] else view.z[index]
        c = caf_weights(rows, self.params.f, generator(view.seed, Purpose.RULE, view.round))
        share = c / c.sum()
        weight = torch.zeros(view.valid.shape, device=view.z.device)
        weight[index] = share.to(torch.float32)
        return Decision(share @ rows, weight > 0, weight)
