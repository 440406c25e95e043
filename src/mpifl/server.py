"""Rank 0's part of a round: screen the untrusted updates, compare them with the guiding gradients, apply the rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import aggregators
from .config import ExperimentConfig
from .guiding import GuidingGradients
from .screening import INVALID, screen


@dataclass(frozen=True)
class Screened:
    """The round's updates after screening, with DiverseFL's criteria where they are computed."""

    clean: torch.Tensor  # [n, d], invalid rows zeroed
    flags: torch.Tensor  # [n] uint8, see mpifl.screening
    c1: torch.Tensor  # [n] int8, 0 where not computed
    c2: torch.Tensor  # [n] float, nan where not computed
    guiding_norm: torch.Tensor  # [n] float, nan where not computed

    @property
    def valid(self) -> torch.Tensor:
        return (self.flags & INVALID) == 0


class Server:
    def __init__(self, cfg: ExperimentConfig, guiding: GuidingGradients | None) -> None:
        self.cfg, self.guiding = cfg, guiding

    def examine(self, z: torch.Tensor, theta: torch.Tensor) -> Screened:
        """Validity checks for every rule; then, for DiverseFL (or ``record_similarity``), C1, C2 and their flags."""
        agg = self.cfg.aggregator
        flags, clean = screen(z, agg.max_norm)
        n = z.shape[0]
        c1 = torch.zeros(n, dtype=torch.int8)
        c2 = torch.full((n,), math.nan)
        guiding_norm = torch.full((n,), math.nan)
        if self.guiding is not None:
            g_tilde = self.guiding.compute(theta)
            valid = (flags == 0).to(z.device)
            c1, c2 = aggregators.similarity(clean, g_tilde)
            c1 = torch.where(valid, c1, torch.zeros_like(c1))
            c2 = torch.where(valid, c2, torch.full_like(c2, math.nan))
            guiding_norm = torch.linalg.vector_norm(g_tilde, dim=1)
            criteria = aggregators.diversefl_flags(c1, c2, guiding_norm, agg.eps1, agg.eps2)
            flags = flags | torch.where(valid, criteria, torch.zeros_like(criteria)).cpu()
        return Screened(clean, flags.cpu(), c1.cpu(), c2.cpu(), guiding_norm.cpu())

    def decide(self, screened: Screened, theta: torch.Tensor, byzantine: torch.Tensor) -> aggregators.Decision:
        accepted_by_filter = screened.flags == 0 if self.cfg.aggregator.name == "diversefl" else None
        return aggregators.aggregate(self.cfg.aggregator, screened.clean, theta, ~byzantine, screened.valid,
                                     accepted_by_filter)
