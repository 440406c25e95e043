"""Attacks built against DiverseFL's own test (the ``sleeper`` is a client-side attack, :mod:`.client`).

DiverseFL accepts z_j when C1 = sign(g~_j · z_j) > 0 and eps1 < C2 = ||z_j|| / ||g~_j|| < eps2. Neither check looks
at where the rest of z_j points. :class:`AdaptiveDiverseFL` keeps both checks satisfied against its estimate g of
g~_j (its own gradient, or the server's g~_j in the white box) and spends what is left against the honest mean m:

    u = g / ||g||,   v = −(m − (m·u) u) / ||m − (m·u) u||,   z = r ||g|| (c u + sqrt(1 − c²) v)

so cos(z, g) = c > 0 and ||z|| / ||g|| = r, while z · m = r ||g|| (c m·u − sqrt(1 − c²) ||m − (m·u) u||) is as negative
as a row with that cosine and length can be. With ``search`` the cosine and ratio are chosen each round, per client,
from a grid: the pair whose row, as the configured rule would use it (its public per-client test, e.g.
``diversefl_plus``'s cone and clipping), pushes the aggregate furthest against m, among the pairs that pass.

``target`` says what m is: ``honest_mean`` (default), the mean of the round's honest updates, or ``full_gradient``,
the mean of every participant's honest gradient (the honest updates and the attackers' own gradients: the step the
model would take without an attack); with ``search``, ``either`` tries both and scores every candidate against the
full gradient. ``edge`` adds the row at the rule's cone edge and clip length (cosine 1 / sqrt(1 + kappa²), ratio
``clip``, from the rule's public parameters) to the candidates (without ``search``: uses it instead of ``cosine`` and
``norm_ratio``).

Against a server that removes the dominant shared direction of what it cannot verify (``diversefl_plus``'s
``spectral`` step), ``decoys`` = G > 0 adds G random directions w_g (one set per round, shared by every attacker,
orthogonal to u and v) with weights that sum to zero across the attackers: row i's unverified part becomes
p_i v_i + sum_g a_ig w_g with sum_i a_ig = 0 and ||a_i|| about ``decoy_scale`` = D times the push p_i. The decoys
carry more of the rows' energy than the push, so the spectral step removes them first, and removing them takes
nothing off the mean (they cancel in it); the push p_i >= ||o_i|| / sqrt(1 + D²) survives. ``decoy_mode: groups``
is the first construction, kept to reproduce its results: attacker i takes (v + D w_(i mod G)) / sqrt(1 + D²), a
shared direction v + D w_g per group, so the top directions the step removes contain v, and the push with them.
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
    if params.decoy_mode not in ("zero_sum", "groups"):
        raise ConfigError(f"attack.params.decoy_mode={params.decoy_mode!r} is not one of zero_sum, groups.")
    if params.target not in TARGETS:
        raise ConfigError(f"attack.params.target={params.target!r} is not one of {', '.join(TARGETS)}.")
    if params.target == "either" and not params.search:
        raise ConfigError("attack.params.target=either chooses between the targets per row: it needs search: true.")


TARGETS = ("honest_mean", "full_gradient", "either")


@dataclass(frozen=True)
class Params:
    cosine: float = 0.05  # cos(z, g): just above DiverseFL's C1 boundary
    norm_ratio: float = 1.0  # ||z|| / ||g||: the middle of DiverseFL's band (eps1, eps2) = (0.5, 2)
    search: bool = False  # choose cosine and ratio per client and round against the rule's public test
    cosines: list[float] = field(default_factory=lambda: [0.05, 0.2, 0.45, 0.7, 0.9])  # the search grid
    ratios: list[float] = field(default_factory=lambda: [1.0, 1.5, 1.9])
    decoys: int = 0  # groups of attackers, each with its own random decoy direction (0: none)
    decoy_scale: float = 2.0  # a decoy's length relative to the push against the honest mean
    decoy_mode: str = "zero_sum"  # zero_sum: weights cancel across the attackers; groups: the first construction
    target: str = "honest_mean"  # what the rows push against: honest_mean, full_gradient, either (search only)
    edge: bool = False  # also try the row at the rule's cone edge and clip length (its public kappa and clip)

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
    """The first construction (``decoy_mode: groups``): each row's v turned towards its group's random decoy (row i is
    in group i mod ``groups``)."""
    u, v, length = basis
    b, d = u.shape
    w = torch.randn((groups, d), generator=generator).to(u.device)[torch.arange(b, device=u.device) % groups]
    w = w - (w * u).sum(dim=1, keepdim=True) * u - (w * v).sum(dim=1, keepdim=True) * v
    return u, _unit(v + scale * _unit(w)), length


def zero_sum_decoys(u: torch.Tensor, v: torch.Tensor, across: torch.Tensor, directions: int, scale: float,
                    generator: torch.Generator) -> torch.Tensor:
    """[b, d] unverified parts p_i v_i + a_i of length ``across`` [b, 1] whose decoys a_i sum to zero exactly.

    The decoys lie in random orthonormal directions shared by the rows and orthogonal to every row's u and v.
    ``directions`` = 1: the rows, by length, pair up, each pair with +t and -t along one direction, t = scale /
    sqrt(1 + scale²) of the pair's shorter ``across`` (an odd row out takes none). ``directions`` = G >= 2: row i's
    weights are the harmonics (cos, sin)(2 pi h i / b + phase_h), h = 1 .. m, m = min(G // 2, ceil(b / 2) - 1),
    scaled by 1 / sqrt(m) (m = 1: the corners of a regular polygon), so every row's decoy is scale / sqrt(1 + scale²)
    of the shortest ``across`` long, the 2m directions carry equal energy and each column sums to zero. p_i takes the
    rest of row i's length. Fewer than two rows cannot cancel: no decoy."""
    b, d = u.shape
    if b < 2 or directions == 0 or scale == 0:
        return across * v
    share = scale / math.sqrt(1 + scale * scale)
    k = 1 if directions == 1 else 2 * max(1, min(directions // 2, math.ceil(b / 2) - 1))
    w = torch.randn((k, d), generator=generator).to(u.device)
    span = torch.linalg.qr(torch.cat([u, v]).T.double()).Q  # [d, 2b]: every row's u and v
    w = torch.linalg.qr((w.double() - (w.double() @ span) @ span.T).T).Q.T.to(u.dtype)  # orthonormal, [k, d]
    if k == 1:
        weights = torch.zeros((b, 1), device=u.device)
        order = torch.argsort(across[:, 0])
        sign = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
        for first, second in zip(order[0:b - 1:2].tolist(), order[1:b:2].tolist()):
            t = share * float(across[first])
            weights[first, 0], weights[second, 0] = sign * t, -sign * t
    else:
        phase = 2 * math.pi * torch.rand((k // 2, 1), generator=generator).to(u.device)
        harmonic = torch.arange(1, k // 2 + 1, device=u.device)[:, None]
        angle = phase + 2 * math.pi * harmonic * torch.arange(b, device=u.device)[None, :] / b  # [m, b]
        weights = torch.cat([angle.cos(), angle.sin()]).T * math.sqrt(2.0 / k)  # [b, k]: row norms 1
        weights = share * float(across.min()) * (weights - weights.mean(dim=0, keepdim=True))  # b = 2: +x and -x
    decoy = weights @ w  # [b, d]
    push = (across.square() - decoy.square().sum(dim=1, keepdim=True)).clamp_min(0).sqrt()
    return push * v + decoy


def _rows(basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor], cosine: float, ratio: float) -> torch.Tensor:
    u, v, length = basis
    return ratio * length * (cosine * u + math.sqrt(max(0.0, 1.0 - cosine * cosine)) * v)


def add_zero_sum_decoys(rows: torch.Tensor, guiding: torch.Tensor, directions: int, scale: float,
                        generator: torch.Generator) -> torch.Tensor:
    """``rows`` with their parts orthogonal to ``guiding`` rebuilt as push + zero-sum decoys (:func:`zero_sum_decoys`):
    each row keeps its component along its guiding gradient, its length and so its cosine."""
    u = _unit(guiding)
    along = (rows * u).sum(dim=1, keepdim=True) * u
    across = rows - along
    norm = torch.linalg.vector_norm(across, dim=1, keepdim=True)
    return along + zero_sum_decoys(u, _unit(across), norm, directions, scale, generator)


def edge_pair(rule_params: object) -> tuple[float, float] | None:
    """(cosine, ratio) of the row at the edge of a rule's cone and at its clip length, from its public ``kappa`` and
    ``clip``; None for a rule without them."""
    kappa, clip = getattr(rule_params, "kappa", None), getattr(rule_params, "clip", None)
    if kappa is None or clip is None:
        return None
    return 1.0 / math.sqrt(1.0 + kappa * kappa) * (1 + 1e-6), float(clip)


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
        honest = view.honest.mean(dim=0) if len(view.honest) else torch.zeros_like(view.theta)
        full = torch.cat([view.honest, view.own]).mean(dim=0) if len(view.honest) + len(view.own) else honest
        targets = {"honest_mean": [honest], "full_gradient": [full], "either": [honest, full]}[p.target]
        score = honest if p.target == "honest_mean" else full  # what the search measures harm against
        test = view.rule.client_test
        bases = []
        for mean in targets:
            basis = _basis(view.guiding, mean)
            if p.decoys and p.decoy_mode == "groups":
                basis = _with_decoys(basis, p.decoys, p.decoy_scale, view.generator)
            bases.append(basis)
        edge = edge_pair(view.rule.params) if p.edge else None
        if not p.search or test is None:
            cosine, ratio = edge if edge is not None else (p.cosine, p.norm_ratio)
            best = _rows(bases[0], cosine, ratio)
            forged = torch.ones(len(best), dtype=torch.bool, device=best.device)
        else:
            pairs = [(c, r) for c in p.cosines for r in p.ratios] + ([edge] if edge is not None else [])
            best = view.own.clone()
            best_harm = torch.full((len(best),), math.inf, device=best.device)
            for basis in bases:
                for cosine, ratio in pairs:
                    rows = _rows(basis, cosine, ratio)
                    accepted, used = test(rows, view.guiding)
                    harm = torch.where(accepted, used @ score, torch.full_like(best_harm, math.inf))
                    better = harm < best_harm
                    best[better] = rows[better]
                    best_harm = torch.minimum(best_harm, harm)
            forged = best_harm < math.inf
        if p.decoys and p.decoy_mode == "zero_sum" and int(forged.sum()) >= 2:
            # after the search: the rule's per-client test sees only lengths and cosines, which the decoys keep
            best[forged] = add_zero_sum_decoys(best[forged], view.guiding[forged], p.decoys, p.decoy_scale,
                                               view.generator)
        return best
