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
from ..rules import diversefl
from .base import AttackView, ColludingAttack, RuleFacts
from .client import CLIENT_ATTACKS


def needs_server_samples(cfg: ExperimentConfig) -> bool:
    """Whether a rank-0 attack reads the server's guiding gradients (white box): rank 0 then builds the samples even
    for a rule that does not use them."""
    if cfg.attack.name in CLIENT_ATTACKS:
        return False
    return rules.get("attack", cfg.attack.name).needs_guiding and cfg.attack.knowledge == "white_box"


class Adversary:
    """The configured rank-0 attack, with what it knows of the rule and (white box) the server's guiding samples."""

    def __init__(self, cfg: ExperimentConfig, guiding: GuidingGradients | None) -> None:
        self.cfg = cfg
        cls = rules.get("attack", cfg.attack.name)
        self.attack: ColludingAttack = cls(attack_params(cfg.attack))
        rule_cls = rules.get("rule", cfg.aggregator.name)
        self.rule = rule_cls(step_params(cfg.aggregator, rule_cls), cfg.clients)
        self.white_box = guiding if needs_server_samples(cfg) else None
        self.client_test = self._client_test if rule_cls.implies_filter == "diversefl" else None

    def _client_test(self, z: torch.Tensor, guiding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        agg = self.cfg.aggregator
        return diversefl.client_test(self.rule, z, guiding, agg.eps1, agg.eps2)

    def _facts(self, n: int, f: int) -> RuleFacts:
        agg = self.cfg.aggregator
        return RuleFacts(agg.name, n, f, agg.eps1, agg.eps2, agg.beta, self.rule.params, self.client_test)

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
