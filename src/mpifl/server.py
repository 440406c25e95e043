"""Rank 0's part of a round: screen the untrusted updates, compare them with the guiding gradients, apply the rule.

Everything here stays on the device of the update matrix it is given (the rank's device, :mod:`mpifl.placement`);
only the round's record leaves it, as NumPy arrays, in :meth:`Screened.record_arrays`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import rules
from .config import ExperimentConfig, step_params
from .guiding import GuidingGradients
from .rules import diversefl
from .screening import EXCLUDED, INVALID, row_norms, screen


@dataclass(frozen=True)
class Screened:
    """The round's updates after screening, with DiverseFL's criteria where they are computed (all on z's device)."""

    clean: torch.Tensor  # [n, d], invalid rows zeroed (the receive buffer itself)
    flags: torch.Tensor  # [n] uint8, see mpifl.screening
    c1: torch.Tensor  # [n] int8, 0 where not computed
    c2: torch.Tensor  # [n] float, nan where not computed
    update_norm: torch.Tensor  # [n] float, ||z_j|| as received (nan/inf kept)
    guiding_norm: torch.Tensor  # [n] float, nan where not computed
    guiding_sum: torch.Tensor | None  # [d] sum of the computed guiding gradients (None: none computed)
    unverified: torch.Tensor | None = None  # [n, d] the rows' unverified parts, for rules that keep them

    @property
    def valid(self) -> torch.Tensor:
        """Rows a rule may see: they passed screening and their client took part in the round."""
        return (self.flags & EXCLUDED) == 0

    def record_arrays(self) -> dict[str, np.ndarray]:
        """The per-client arrays the HDF5 record keeps, moved off the device in one place."""
        return {"invalid": ((self.flags & INVALID) != 0).cpu().numpy(), "flags": self.flags.cpu().numpy(),
                "c1": self.c1.cpu().numpy(), "c2": self.c2.cpu().numpy(),
                "update_norm": self.update_norm.cpu().numpy(), "guiding_norm": self.guiding_norm.cpu().numpy()}


def filter_name(cfg: ExperimentConfig) -> str | None:
    """The filter in front of the rule: ``aggregator.filter``, or the one the rule implies (DiverseFL's own)."""
    return cfg.aggregator.filter or rules.get("rule", cfg.aggregator.name).implies_filter


def needs_guiding(cfg: ExperimentConfig) -> bool:
    """Whether rank 0 computes guiding gradients: for the DiverseFL filter, or to record C1, C2 for any rule."""
    return filter_name(cfg) == "diversefl" or cfg.aggregator.record_similarity


class Server:
    """Screening, the optional filter, pre-aggregators and the rule, as configured; the rule's state lives here."""

    def __init__(self, cfg: ExperimentConfig, guiding: GuidingGradients | None,
                 server_gradient: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.cfg, self.guiding, self.server_gradient = cfg, guiding, server_gradient
        agg = cfg.aggregator
        rule_cls = rules.get("rule", agg.name)
        self.rule = rule_cls(step_params(agg, rule_cls), cfg.clients)
        self.pre = [cls(step_params(agg, cls), cfg.clients) for cls in (rules.get("pre", p) for p in agg.pre)]
        self.filtering = filter_name(cfg) is not None
        self._unverified: torch.Tensor | None = None  # reused across rounds: [n, d] is large

    def examine(self, z: torch.Tensor, theta: torch.Tensor, sampled: torch.Tensor | None = None) -> Screened:
        """Validity checks for every rule; then, for DiverseFL (or ``record_similarity``), C1, C2 and their flags.

        ``z`` is screened in place (excluded rows zeroed); ``sampled`` ([n] bool, None: everyone) says which clients
        took part in the round: the others are excluded, and their guiding gradients are not computed.
        """
        agg = self.cfg.aggregator
        update_norm = row_norms(z)
        if sampled is not None:
            sampled = sampled.to(z.device)
        flags = screen(z, agg.max_norm, sampled)
        n = z.shape[0]
        c1 = torch.zeros(n, dtype=torch.int8, device=z.device)
        c2 = torch.full((n,), math.nan, device=z.device)
        guiding_norm = torch.full((n,), math.nan, device=z.device)
        guiding_sum = unverified = None
        if self.guiding is not None:
            adjust, unverified = self._adjustment(z)
            dots, guiding_norm, guiding_sum = self.guiding.compare(theta, z, sampled, adjust)
            c1, c2, bits = diversefl.criteria(dots, update_norm, guiding_norm, flags == 0, agg.eps1, agg.eps2)
            flags = flags | bits
        return Screened(z, flags, c1, c2, update_norm, guiding_norm, guiding_sum, unverified)

    def _adjustment(self, z: torch.Tensor) -> tuple[Callable | None, torch.Tensor | None]:
        """The rule's reshaping as ``GuidingGradients.compare``'s ``adjust`` hook, and the buffer it fills with the
        rows' unverified parts when the rule keeps them (zero for the clients whose rows are not computed)."""
        rule = self.rule
        if not rule.reshapes_updates:
            return None, None
        if not rule.keeps_unverified:
            return (lambda clients, rows, guiding: rule.reshape(rows, guiding)), None
        if self._unverified is None or self._unverified.shape != z.shape or self._unverified.device != z.device:
            self._unverified = torch.zeros_like(z)
        unverified = self._unverified.zero_()

        def adjust(clients: slice | torch.Tensor, rows: torch.Tensor, guiding: torch.Tensor) -> torch.Tensor:
            rebuilt, unverified[clients] = rule.split(rows, guiding)
            return rebuilt

        return adjust, unverified

    def decide(self, screened: Screened, theta: torch.Tensor, byzantine: torch.Tensor, round_: int) -> rules.Decision:
        """Filter, pre-aggregate, apply the rule. ``byzantine`` (the simulator's ground truth, any device) reaches
        only a rule that declares ``needs_truth`` (OracleSGD)."""
        z = screened.clean
        usable = screened.valid
        if self.filtering:
            usable = usable & diversefl.accepted_by(self.rule, screened.flags)
        try:
            return self._apply(z, usable, theta, byzantine, round_, screened)
        except rules.TooFewUpdates:  # e.g. Krum with k <= 2f + 2 usable updates this round: no step, nobody used
            nobody = torch.zeros_like(usable)
            return rules.Decision(None, nobody, torch.zeros(usable.shape, device=z.device))

    def _apply(self, z: torch.Tensor, usable: torch.Tensor, theta: torch.Tensor, byzantine: torch.Tensor,
               round_: int, screened: Screened) -> rules.Decision:
        truth = byzantine.to(z.device) if self.rule.needs_truth else None
        if not self.pre:
            return self.rule.aggregate(rules.RoundView(z, usable, theta, round_, self.cfg.seed, self.server_gradient,
                                                       truth, screened.guiding_sum, screened.unverified))
        rows = z[usable]
        for step in self.pre:
            rows = step.transform(rows, round_, self.cfg.seed)
        mixed = rules.RoundView(rows, torch.ones(len(rows), dtype=torch.bool, device=z.device), theta, round_,
                                self.cfg.seed, self.server_gradient, None)
        decision = self.rule.aggregate(mixed)
        # pre-aggregated rows mix clients: every usable client entered, with no weight of its own
        return rules.Decision(decision.direction, usable.clone(),
                              torch.full(usable.shape, float("nan"), device=z.device))
