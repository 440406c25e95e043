"""Rank 0's stand-in for the colluding Byzantine clients of a rank-0 attack (:class:`.base.ColludingAttack`).

It runs after the gather and before screening, so it sees exactly what the server received: the honest rows stay as
they are and the Byzantine rows, which hold each Byzantine client's honest gradient, are replaced by the attack's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..rng import Purpose, generator
from ..rules.base import RoundView, TooFewUpdates
from ..screening import EXCLUDED, screen
from .base import AttackView, RuleFacts

if TYPE_CHECKING:
    from ..build import Pipeline
    from ..filters.diversefl import GuidingGradients


class Adversary:
    """The pipeline's rank-0 attack, with what it knows of the rule (its Params and the filters' public per-client
    test) and, for a white-box attack, the server's guiding samples (``white_box``)."""

    def __init__(self, pipeline: Pipeline, name: str, seed: int, white_box: GuidingGradients | None) -> None:
        self.pipeline, self.attack, self.rule = pipeline, pipeline.attack, pipeline.rule
        self.name, self.seed = name, seed
        self.white_box = white_box
        tests = [t for t in (f.public_test() for f in pipeline.filters) if t is not None]
        self.client_test = tests[0] if tests else None

    def corrupt(self, z: torch.Tensor, theta: torch.Tensor, byzantine: torch.Tensor, sampled: torch.Tensor,
                round_: int, clients: torch.Tensor | None = None, flipped: torch.Tensor | None = None) -> None:
        """Replace, in place, the rows of the round's Byzantine clients that take part (``sampled``); ``clients``
        names each row's client where ``z`` holds a cross-device cohort (None: row j is client j). ``flipped``
        (rows as ``z``): the clients' flipped-label gradients, for an attack with ``needs_flipped``."""
        byzantine, sampled = byzantine.to(z.device), sampled.to(z.device)
        bad = (byzantine & sampled).nonzero().flatten()
        if len(bad) == 0:
            return
        taking_part = sampled & ~byzantine
        honest = z[taking_part]
        flipped_honest = flipped[taking_part] if flipped is not None else None
        own = z[bad].clone()
        guiding = None
        if self.attack.needs_guiding:
            whose = bad if clients is None else clients.to(bad.device)[bad]
            guiding = self.white_box.gradients(theta, whose) if self.white_box is not None else own
        facts = RuleFacts(self.name, len(honest) + len(bad), len(bad), self.rule.params, self.client_test,
                          simulated_server(self.pipeline, theta, round_, self.seed))
        view = AttackView(honest, own, guiding, theta, round_, generator(self.seed, Purpose.COLLUSION, round_), facts,
                          flipped_honest)
        z[bad] = self.attack.forge(view).to(z.dtype)


def simulated_server(pipeline: Pipeline, theta: torch.Tensor, round_: int,
                     seed: int) -> Callable[[torch.Tensor], torch.Tensor | None] | None:
    """The server's step on rows [k, d] of the attacker's choosing, for attacks that search over it (ByzFL's
    optimal IPM and ALIE): screening (non-finite rows, ``max_norm``), the pre-aggregators, then a copy of the rule
    (so a stateful rule's state, centered clipping's centre, stays as the real round will find it). The direction, or
    None where the rule would skip the step (too few rows). None for pipelines it cannot reproduce: a filter, or a
    rule that needs the ground truth, server data or rebuilt rows.

    The rows are screened in place, as the server screens its receive buffer: the caller hands over rows of its own
    (a copy per call cost as much as the pre-aggregation it fed)."""
    needs = pipeline.rule.needs
    if pipeline.filters or needs.truth or needs.server_data or needs.filter or needs.reshapes:
        return None

    def aggregate(rows: torch.Tensor) -> torch.Tensor | None:
        usable = (screen(rows, pipeline.max_norm) & EXCLUDED) == 0
        rule = copy.deepcopy(pipeline.rule)
        try:
            if not pipeline.pre:
                return rule.aggregate(RoundView(rows, usable, theta, round_, seed)).direction
            mixed = rows if bool(usable.all()) else rows[usable]
            for step in pipeline.pre:
                mixed = step.transform(mixed, round_, seed)
            ones = torch.ones(len(mixed), dtype=torch.bool, device=rows.device)
            return rule.aggregate(RoundView(mixed, ones, theta, round_, seed)).direction
        except TooFewUpdates:
            return None

    return aggregate
