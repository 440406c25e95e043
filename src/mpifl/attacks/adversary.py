"""Rank 0's stand-in for the colluding Byzantine clients of a rank-0 attack (:mod:`.base`).

It runs after the gather and before screening, so it sees exactly what the server received: the honest rows stay as
they are and the Byzantine rows, which hold each Byzantine client's honest gradient, are replaced by the attack's.
"""

from __future__ import annotations

import torch

from .. import rules
from ..config import ExperimentConfig, attack_params, step_params
from ..guiding import GuidingGradients
from ..rng import Purpose, generator
from .base import AttackView, ColludingAttack, RuleFacts


class Adversary:
    """The configured rank-0 attack, with what it knows of the rule and (white box) the server's guiding samples."""

    def __init__(self, cfg: ExperimentConfig, guiding: GuidingGradients | None) -> None:
        self.cfg = cfg
        cls = rules.get("attack", cfg.attack.name)
        self.attack: ColludingAttack = cls(attack_params(cfg.attack))
        rule_cls = rules.get("rule", cfg.aggregator.name)
        self.rule = rule_cls(step_params(cfg.aggregator, rule_cls), cfg.clients)
        self.white_box = guiding if cls.needs_guiding and cfg.attack.knowledge == "white_box" else None

    def _facts(self, n: int, f: int) -> RuleFacts:
        agg = self.cfg.aggregator

        def client_test(z: torch.Tensor, guiding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.rule.client_test(z, guiding, agg.eps1, agg.eps2)

        tested = type(self.rule).client_test is not rules.Rule.client_test
        return RuleFacts(agg.name, n, f, agg.eps1, agg.eps2, agg.beta, self.rule.params,
                         client_test if tested else None)

    def corrupt(self, z: torch.Tensor, theta: torch.Tensor, byzantine: torch.Tensor, sampled: torch.Tensor,
                round_: int) -> None:
        """Replace, in place, the rows of the round's Byzantine clients that take part (``sampled``)."""
        byzantine, sampled = byzantine.to(z.device), sampled.to(z.device)
        bad = (byzantine & sampled).nonzero().flatten()
        if len(bad) == 0:
            return
        honest = z[sampled & ~byzantine]
        own = z[bad].clone()
        guiding = None
        if type(self.attack).needs_guiding:
            guiding = self.white_box.gradients(theta, bad) if self.white_box is not None else own
        view = AttackView(honest, own, guiding, theta, round_,
                          generator(self.cfg.seed, Purpose.COLLUSION, round_), self._facts(len(honest) + len(bad),
                                                                                         len(bad)))
        z[bad] = self.attack.forge(view).to(z.dtype)
