"""What a colluding (omniscient) attack sees and returns: the interface of every attack that acts on rank 0.

The simulation's fault model for these attacks (Baruch et al. 2019; Fang et al. 2020; Shejwalkar & Houmansadr 2021):
the Byzantine clients of a round collude and know the round's honest updates, θ and the rule's public parameters.
In mpifl they act on rank 0, right after the gather and before screening: every client (Byzantine ones included)
computes its honest gradient, then the attack replaces the Byzantine rows. Nothing travels as Python objects; the
attack's random draws come from ``Purpose.ATTACK`` generators keyed by seed and round, so one process and ``mpirun``
give the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..rules.base import NoParams

#: Knowledge levels (``attack.knowledge``): what the attacker uses for the guiding gradient g~_j of a Byzantine
#: client j. ``realistic``: its own honest gradient on its own data (it does not know which points it handed the
#: server); ``white_box``: the server's exact g~_j (it knows its shared sample and the server's θ).
KNOWLEDGE = ("realistic", "white_box")


@dataclass(frozen=True)
class RuleFacts:
    """The rule's public parameters, as an attacker tuned against it knows them."""

    name: str  # the configured aggregator.name
    n: int  # clients taking part in the round
    f: int  # Byzantine clients among them
    eps1: float  # DiverseFL's band eps1 < C2 < eps2
    eps2: float
    beta: float  # TrMean's trimmed fraction
    params: object  # the rule's Params instance (aggregator.params)
    #: The per-client test of a rule behind DiverseFL's filter (:func:`mpifl.rules.diversefl.client_test`):
    #: (z [b, d], guiding [b, d]) -> (accepted [b] bool, the rows the rule would use [b, d]). None for other rules.
    client_test: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None


@dataclass(frozen=True)
class AttackView:
    """Round r as the colluding Byzantine clients see it; every tensor on rank 0's device, float32."""

    honest: torch.Tensor  # [h, d] the honest updates of the round (clients that take part and are not Byzantine)
    own: torch.Tensor  # [b, d] each Byzantine client's honest gradient on its own mini-batch
    guiding: torch.Tensor | None  # [b, d] the attacker's g~_j (see KNOWLEDGE); only for attacks with needs_guiding
    theta: torch.Tensor  # [d]
    round: int
    generator: torch.Generator  # CPU generator of the round's attack draws (draw on the CPU, then move)
    rule: RuleFacts


class ColludingAttack:
    """Base of every rank-0 attack: ``forge(view) -> [b, d]``, the rows the Byzantine clients upload.

    ``Params`` is the dataclass of ``attack.params``; ``needs_guiding`` asks rank 0 to compute the attacker's estimate
    of its guiding gradients (``AttackView.guiding``).
    """

    Params: ClassVar[type] = NoParams
    needs_guiding: ClassVar[bool] = False

    def __init__(self, params: object) -> None:
        self.params = params

    def forge(self, view: AttackView) -> torch.Tensor:
        raise NotImplementedError
