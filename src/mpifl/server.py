"""Rank 0's part of a round: screen the untrusted updates, run the filters, pre-aggregate, apply the rule.

Everything here stays on the device of the update matrix it is given (the rank's device, :mod:`mpifl.placement`);
only the round's record leaves it, as NumPy arrays, in :meth:`Screened.record_arrays`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .build import Pipeline
from .filters import FilterView
from .rules import Decision, RoundView, TooFewUpdates
from .screening import EXCLUDED, FILTERED, INVALID, row_norms, screen


@dataclass(frozen=True)
class Screened:
    """The round's updates after screening and the filters, with what the filters measured (all on z's device)."""

    clean: torch.Tensor  # [n, d], invalid rows zeroed (the receive buffer itself; rows a filter rebuilt replaced)
    flags: torch.Tensor  # [n] uint8, see mpifl.screening
    usable: torch.Tensor  # [n] bool: rows that passed screening and every filter
    update_norm: torch.Tensor  # [n] float, ||z_j|| as received (nan/inf kept)
    measured: dict[str, torch.Tensor] = field(default_factory=dict)  # the filters' per-client records (c1, c2, ...)
    guiding_sum: torch.Tensor | None = None  # [d] sum of the computed guiding gradients (None: none computed)
    unverified: torch.Tensor | None = None  # [n, d] the rows' unverified parts, for rules that keep them

    @property
    def c1(self) -> torch.Tensor:
        """[n] int8 C1, 0 where not computed."""
        return self.measured.get("c1", torch.zeros(len(self.flags), dtype=torch.int8, device=self.flags.device))

    @property
    def c2(self) -> torch.Tensor:
        """[n] C2, NaN where not computed."""
        return self.measured.get("c2", torch.full((len(self.flags),), math.nan, device=self.flags.device))

    @property
    def guiding_norm(self) -> torch.Tensor:
        """[n] ||g~_j||, NaN where not computed."""
        return self.measured.get("guiding_norm", torch.full((len(self.flags),), math.nan, device=self.flags.device))

    def record_arrays(self) -> dict[str, np.ndarray]:
        """The per-client arrays the HDF5 record keeps, moved off the device in one place."""
        return {"invalid": ((self.flags & INVALID) != 0).cpu().numpy(), "flags": self.flags.cpu().numpy(),
                "c1": self.c1.cpu().numpy(), "c2": self.c2.cpu().numpy(),
                "update_norm": self.update_norm.cpu().numpy(), "guiding_norm": self.guiding_norm.cpu().numpy()}


class Server:
    """Runs a built :class:`~mpifl.build.Pipeline` on each round's update matrix; the rule's state lives in it."""

    def __init__(self, pipeline: Pipeline, seed: int,
                 server_gradient: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.pipeline, self.seed, self.server_gradient = pipeline, seed, server_gradient
        self.rule = pipeline.rule

    def examine(self, z: torch.Tensor, theta: torch.Tensor, sampled: torch.Tensor | None = None,
                round_: int = 0, clients: torch.Tensor | None = None) -> Screened:
        """Validity checks for every rule, then the filters in order, each on the rows the ones before it accepted;
        filters that only record (``record_similarity``) see every valid row and accept all.

        ``z`` is screened in place (excluded rows zeroed); ``sampled`` ([n] bool, None: everyone) says which clients
        took part in the round: the others are excluded, and their guiding gradients are not computed. ``clients``
        ([k] ids) names the client of each row when ``z`` holds a cross-device cohort.
        """
        update_norm = row_norms(z)
        if sampled is not None:
            sampled = sampled.to(z.device)
        flags = screen(z, self.pipeline.max_norm, sampled)
        usable = (flags & EXCLUDED) == 0
        measured: dict[str, torch.Tensor] = {}
        guiding_sum = unverified = None
        for observer in self.pipeline.observers:
            verdict = observer.judge(FilterView(z, usable, update_norm, sampled, theta, round_, self.seed, clients))
            flags = flags | verdict.flags if verdict.flags is not None else flags
            measured.update(verdict.record)
        for f in self.pipeline.filters:
            verdict = f.judge(FilterView(z, usable, update_norm, sampled, theta, round_, self.seed, clients))
            accepted = usable & verdict.accepted
            bits = verdict.flags if verdict.flags is not None else (usable & ~accepted).to(torch.uint8) * FILTERED
            flags, usable = flags | bits, accepted
            measured.update(verdict.record)
            guiding_sum = verdict.guiding_sum if verdict.guiding_sum is not None else guiding_sum
            unverified = verdict.unverified if verdict.unverified is not None else unverified
        return Screened(z, flags, usable, update_norm, measured, guiding_sum, unverified)

    def decide(self, screened: Screened, theta: torch.Tensor, byzantine: torch.Tensor, round_: int) -> Decision:
        """Pre-aggregate and apply the rule to the usable rows. ``byzantine`` (the simulator's ground truth, any
        device) reaches only a rule whose needs say ``truth`` (OracleSGD)."""
        usable = screened.usable
        try:
            return self._apply(screened.clean, usable, theta, byzantine, round_, screened)
        except TooFewUpdates:  # e.g. Krum with k <= 2f + 2 usable updates this round: no step, nobody used
            nobody = torch.zeros_like(usable)
            return Decision(None, nobody, torch.zeros(usable.shape, device=usable.device))

    def _apply(self, z: torch.Tensor, usable: torch.Tensor, theta: torch.Tensor, byzantine: torch.Tensor,
               round_: int, screened: Screened) -> Decision:
        truth = byzantine.to(z.device) if self.rule.needs.truth else None
        if not self.pipeline.pre:
            return self.rule.aggregate(RoundView(z, usable, theta, round_, self.seed, self.server_gradient, truth,
                                                 screened.guiding_sum, screened.unverified,
                                                 screened.measured.get("guiding_norm"), screened.update_norm))
        rows = z[usable]
        for step in self.pipeline.pre:
            rows = step.transform(rows, round_, self.seed)
        mixed = RoundView(rows, torch.ones(len(rows), dtype=torch.bool, device=z.device), theta, round_, self.seed,
                          self.server_gradient, None)
        decision = self.rule.aggregate(mixed)
        # pre-aggregated rows mix clients: every usable client entered, with no weight of its own
        return Decision(decision.direction, usable.clone(), torch.full(usable.shape, float("nan"), device=z.device))
