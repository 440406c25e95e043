"""Attacks built against DiverseFL's own test (the ``sleeper`` is a client-side attack, :mod:`.client`).

DiverseFL accepts z_j when C1 = sign(g~_j · z_j) > 0 and eps1 < C2 = ||z_j|| / ||g~_j|| < eps2. Neither check looks
at where the rest of z_j points. :class:`AdaptiveDiverseFL` keeps both checks satisfied against its estimate g of
g~_j (its own gradient, or the server's g~_j in the white box) and spends what is left against the honest mean m:

    u = g / ||g||,   v = −(m − (m·u) u) / ||m − (m·u) u||,   z = r ||g|| (c u + sqrt(1 − c²) v)

so cos(z, g) = c > 0 and ||z|| / ||g|| = r, while z · m = r ||g|| (c m·u − sqrt(1 − c²) ||m − (m·u) u||) is as negative
as a row with that cosine and length can be. With ``search`` the cosine and ratio are chosen each round, per client,
from a grid: the pair whose row, as the configured rule would use it (its public per-client test, e.g.
``diversefl_plus``'s cone and clipping), pushes the aggregate furthest against m, among the pairs that pass.

Against a server that removes the dominant shared direction of what it cannot verify (``diversefl_plus``'s
``spectral`` step), ``decoys`` = G > 0 splits the attackers into G groups, each adding a random direction w_g
(orthogonal to u and v, one per group and round) ``decoy_scale`` = D times as long as v to its own: v becomes
(v + D w_g) / sqrt(1 + D²). Each group's shared decoy then carries more energy than the common push against m, which
survives the removal of the top directions, at the price of a push 1 / sqrt(1 + D²) as strong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from ..registry import register
from .base import AttackView, ColludingAttack


def _check(params: Params) -> None:
    if not 0.0 < params.cosine <= 1.0:
        raise ConfigError(f"attack.params.cosine={params.cosine} must be in (0, 1]: DiverseFL needs C1 = 1.")
    if not params.norm_ratio > 0:
        raise ConfigError(f"attack.params.norm_ratio={params.norm_ratio} must be > 0.")
    if any(not 0.0 < c <= 1.0 for c in params.cosines) or any(not r > 0 for r in params.ratios):
        raise ConfigError("attack.params.cosines must lie in (0, 1] and attack.params.ratios be > 0.")
    if params.decoys < 0 or not params.decoy_scale >= 0:
        raise ConfigError(f"attack.params.decoys={params.decoys} and decoy_scale={params.decoy_scale} must be >= 0.")


@dataclass(frozen=True)
class Params:
    cosine: float = 0.05  # cos(z, g): just above DiverseFL's C1 boundary
    norm_ratio: float = 1.0  # ||z|| / ||g||: the middle of DiverseFL's band (eps1, eps2) = (0.5, 2)
    search: bool = False  # choose cosine and ratio per client and round against the rule's public test
    cosines: list[float] = field(default_factory=lambda: [0.05, 0.2, 0.45, 0.7, 0.9])  # the search grid
    ratios: list[float] = field(default_factory=lambda: [1.0, 1.5, 1.9])
    decoys: int = 0  # groups of attackers, each with its own random decoy direction (0: none)
    decoy_scale: float = 2.0  # a decoy's length relative to the push against the honest mean

    def __post_init__(self) -> None:
        _check(self)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-30)


def _basis(guiding: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, v, ||g||) per row: the guiding direction and the unit direction orthogonal to it most against ``mean``."""
    u = _unit(guiding)
    v = -_unit(mean - (u @ mean)[:, None] * u)
    return u, v, torch.linalg.vector_norm(guiding, dim=1, keepdim=True)


def _with_decoys(basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor], groups: int, scale: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The basis with each row's v turned towards its group's random decoy (row i is in group i mod ``groups``)."""
    u, v, length = basis
    b, d = u.shape
    w = torch.randn((groups, d), generator=generator).to(u.device)[torch.arange(b, device=u.device) % groups]
    w = w - (w * u).sum(dim=1, keepdim=True) * u - (w * v).sum(dim=1, keepdim=True) * v
    return u, _unit(v + scale * _unit(w)), length


def _rows(basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor], cosine: float, ratio: float) -> torch.Tensor:
    u, v, length = basis
    return ratio * length * (cosine * u + math.sqrt(max(0.0, 1.0 - cosine * cosine)) * v)


def construct(guiding: torch.Tensor, mean: torch.Tensor, cosine: float, ratio: float) -> torch.Tensor:
    """Rows [b, d] with cos(z_j, g_j) = ``cosine``, ||z_j|| = ``ratio`` ||g_j|| and the rest against ``mean``."""
    return _rows(_basis(guiding, mean), cosine, ratio)


@register("attack", "diversefl_adaptive")
class AdaptiveDiverseFL(ColludingAttack):
    """Rows that pass DiverseFL's C1 and C2 checks and point, beyond that, against the honest mean (module text).

    Without ``search``: the fixed construction with ``cosine`` and ``norm_ratio``. With ``search``: per client and
    round the grid pair whose row, as the rule's public test reshapes and accepts it, has the most negative inner
    product with the honest mean; a client with no passing pair sends its honest gradient. ``search`` needs a rule
    with a per-client test (``diversefl``, ``diversefl_plus``): against other rules it keeps the fixed construction.
    """

    Params = Params
    needs_guiding = True

    def forge(self, view: AttackView) -> torch.Tensor:
        assert view.guiding is not None
        p = self.params
        mean = view.honest.mean(dim=0) if len(view.honest) else torch.zeros_like(view.theta)
        test = view.rule.client_test
        basis = _basis(view.guiding, mean)
        if p.decoys:
            basis = _with_decoys(basis, p.decoys, p.decoy_scale, view.generator)
        if not p.search or test is None:
            return _rows(basis, p.cosine, p.norm_ratio)
        best = view.own.clone()
        best_harm = torch.full((len(best),), math.inf, device=best.device)
        for cosine in p.cosines:
            for ratio in p.ratios:
                rows = _rows(basis, cosine, ratio)
                accepted, used = test(rows, view.guiding)
                harm = torch.where(accepted, used @ mean, torch.full_like(best_harm, math.inf))
                better = harm < best_harm
                best[better] = rows[better]
                best_harm = torch.minimum(best_harm, harm)
        return best
