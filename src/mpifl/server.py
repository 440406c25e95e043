"""Rank 0's part of a round: screen the untrusted updates, compare them with the guiding gradients, apply the rule.

Everything here stays on the device of the update matrix it is given (the rank's device, :mod:`mpifl.placement`);
only the round's record leaves it, as NumPy arrays, in :meth:`Screened.record_arrays`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import aggregators
from .config import ExperimentConfig
from .guiding import GuidingGradients
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

    @property
    def valid(self) -> torch.Tensor:
        """Rows a rule may see: they passed screening and their client took part in the round."""
        return (self.flags & EXCLUDED) == 0

    def record_arrays(self) -> dict[str, np.ndarray]:
        """The per-client arrays the HDF5 record keeps, moved off the device in one place."""
        return {"invalid": ((self.flags & INVALID) != 0).cpu().numpy(), "flags": self.flags.cpu().numpy(),
                "c1": self.c1.cpu().numpy(), "c2": self.c2.cpu().numpy(),
                "update_norm": self.update_norm.cpu().numpy(), "guiding_norm": self.guiding_norm.cpu().numpy()}


class Server:
    def __init__(self, cfg: ExperimentConfig, guiding: GuidingGradients | None) -> None:
        self.cfg, self.guiding = cfg, guiding

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
        if self.guiding is not None:
            dots, guiding_norm = self.guiding.compare(theta, z, sampled)
            valid = flags == 0
            c1, c2 = aggregators.similarity(dots, update_norm, guiding_norm)
            c1 = torch.where(valid, c1, torch.zeros_like(c1))
            c2 = torch.where(valid, c2, torch.full_like(c2, math.nan))
            criteria = aggregators.diversefl_flags(c1, c2, guiding_norm, agg.eps1, agg.eps2)
            flags = flags | torch.where(valid, criteria, torch.zeros_like(criteria))
        return Screened(z, flags, c1, c2, update_norm, guiding_norm)

    def decide(self, screened: Screened, theta: torch.Tensor, byzantine: torch.Tensor) -> aggregators.Decision:
        """The rule's decision; ``byzantine`` (the simulator's ground truth, any device) reaches OracleSGD only."""
        accepted_by_filter = screened.flags == 0 if self.cfg.aggregator.name == "diversefl" else None
        honest = ~byzantine.to(screened.clean.device)
        return aggregators.aggregate(self.cfg.aggregator, screened.clean, theta, honest, screened.valid,
                                     accepted_by_filter)
