"""ByzFL's fixed-vector colluding attacks: one row, the same for every Byzantine client, computed without a search.

References
    Sign flipping of the honest mean: Z. Allen-Zhu, F. Ebrahimianghazani, J. Li, D. Alistarh, "Byzantine-Resilient
    Non-Convex Stochastic Gradient Descent", ICLR 2021, arXiv:2012.14368 (the reference ByzFL's ``SignFlipping``
    cites). Inf and Gaussian: ByzFL 0.0.11's ``Inf`` and ``Gaussian`` (crash-like and random faults). Mean of the
    flipped-label gradients: ByzFL 0.0.11's ``LabelFlipping`` as its DSGD benchmark runs it (``benchmark/train.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import AttackView, ColludingAttack, require
from .field import _all_send


@register("attack", "mean_sign_flip")
class MeanSignFlip(ColludingAttack):
    """Every Byzantine client sends −mean(honest); ByzFL 0.0.11's ``SignFlipping``. Unlike the client-side
    ``sign_flip`` (each Byzantine client negates its own gradient), the row is the negated mean of the round's honest
    updates, the same for every Byzantine client."""

    def forge(self, view: AttackView) -> torch.Tensor:
        return _all_send(-view.honest.mean(dim=0), view)


@register("attack", "mean_class_flip")
class MeanClassFlip(ColludingAttack):
    """Every Byzantine client sends the mean of the honest clients' gradients on their round's mini-batches with
    flipped labels (c → C − 1 − c), without momentum; ByzFL 0.0.11's ``LabelFlipping`` in its DSGD benchmark (each
    honest client also differentiates its batch with flipped labels, and the f Byzantine vectors are that mean).
    Unlike the client-side ``class_flip`` (each Byzantine client trains on its own data with flipped labels), the
    flipped gradients are the honest clients', computed on their ranks (``needs_flipped``)."""

    needs_flipped = True  # refused with model-copy clients (RSA) where the plan is built (mpifl.build.resolve)

    def forge(self, view: AttackView) -> torch.Tensor:
        assert view.flipped is not None
        return _all_send(view.flipped.mean(dim=0), view)


@register("attack", "inf")
class Inf(ColludingAttack):
    """Every Byzantine client sends +inf in every coordinate; ByzFL 0.0.11's ``Inf``. mpifl's screening flags and
    drops such rows before any rule (ByzFL hands them to the aggregator: its Average then returns inf)."""

    def forge(self, view: AttackView) -> torch.Tensor:
        return torch.full_like(view.own, float("inf"))


@dataclass(frozen=True)
class GaussianVectorParams:
    mu: float = 0.0  # mean of every coordinate
    sigma: float = 1.0  # standard deviation of every coordinate

    def __post_init__(self) -> None:
        require(self.sigma >= 0, f"attack.params.sigma={self.sigma} must be >= 0.")


@register("attack", "gaussian_vectors")
class GaussianVector(ColludingAttack):
    """Every Byzantine client sends the same N(mu, sigma²) vector, drawn once per round; ByzFL 0.0.11's
    ``Gaussian(mu, sigma)`` (its Byzantine client repeats the one draw f times). ``random`` draws each Byzantine row
    on its own instead. The draw is ``randn(d)`` from the round's CPU generator (ByzFL: torch's global one), scaled
    and shifted as ByzFL does, ``randn · sigma + mu``."""

    Params = GaussianVectorParams

    def forge(self, view: AttackView) -> torch.Tensor:
        draw = torch.randn(view.own.shape[1], generator=view.generator)
        return _all_send(draw * self.params.sigma + self.params.mu, view)
