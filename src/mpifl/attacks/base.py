"""The one interface of every attack, whether it acts where the client runs or on rank 0 after the gather.

A client-side attack sees only the attacking client's own data and message (the paper's fault model): it may poison
the labels it trains on, the labels of the sample it hands DiverseFL before training, and the message it uploads.
A rank-0 attack (``on_rank0``) models colluding omniscient clients (Baruch et al. 2019; Fang et al. 2020; Shejwalkar &
Houmansadr 2021): they know the round's honest updates, θ and the rule's public parameters. In mpifl it acts on rank
0, right after the gather and before screening: every client (Byzantine ones included) computes its honest gradient,
then the attack replaces the Byzantine rows (:meth:`Attack.forge`). Nothing travels as Python objects; random draws
come from ``Purpose.ATTACK``/``Purpose.COLLUSION`` generators keyed by seed, round (and client), so one process and
``mpirun`` give the same run. Attacks register by name (kind ``attack``); a plug-in attack is one file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..config import ExperimentConfig
from ..errors import ConfigError
from ..registry import NoParams


@dataclass(frozen=True)
class RuleFacts:
    """The rule's public parameters, as an attacker tuned against it knows them."""

    name: str  # the configured aggregator.name
    n: int  # clients taking part in the round
    f: int  # Byzantine clients among them
    params: object  # the rule's Params instance (aggregator.params)
    #: The per-client test of a rule behind DiverseFL's filter (:func:`mpifl.filters.diversefl.client_test`):
    #: (z [b, d], guiding [b, d]) -> (accepted [b] bool, the rows the rule would use [b, d]). None for other rules.
    client_test: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None
    #: The server's aggregation of a round's rows as the attacker can simulate it (:func:`.adversary.simulated_server`):
    #: rows [k, d] (screened in place) -> the direction [d] that screening, the pre-aggregators and the rule (a copy,
    #: its state untouched) would take, or None where the rule would skip the step. None for rules the simulation
    #: cannot reproduce (those behind a filter or needing the ground truth or server data); attacks that search over
    #: the server's response (``optimal_ipm``, ``optimal_alie``) need it.
    aggregate: Callable[[torch.Tensor], torch.Tensor | None] | None = None


@dataclass(frozen=True)
class AttackView:
    """Round r as the colluding Byzantine clients see it; every tensor on rank 0's device, float32."""

    honest: torch.Tensor  # [h, d] the honest updates of the round (clients that take part and are not Byzantine)
    own: torch.Tensor  # [b, d] each Byzantine client's honest gradient on its own mini-batch
    guiding: torch.Tensor | None  # [b, d] the attacker's g~_j (see config.KNOWLEDGE); for attacks with needs_guiding
    theta: torch.Tensor  # [d]
    round: int
    generator: torch.Generator  # CPU generator of the round's attack draws (draw on the CPU, then move)
    rule: RuleFacts
    #: [h, d] the honest clients' gradients on their round's mini-batch with flipped labels (c → C − 1 − c), no
    #: momentum, rows in the order of ``honest``; for attacks with ``needs_flipped``, None for the others
    flipped: torch.Tensor | None = None


class Attack:
    """Base of every attack; ``Params`` is the dataclass of ``attack.params``.

    Client-side hooks (identity by default): :meth:`poison_labels`, :meth:`poison_sample`, :meth:`tamper`. Rank-0
    attacks set ``on_rank0`` and implement :meth:`forge`; ``needs_guiding`` asks rank 0 for the attacker's estimate
    of its guiding gradients (``AttackView.guiding``); ``needs_flipped`` asks every honest client for a second
    gradient on its mini-batch with flipped labels, computed where the client lives and gathered as a second matrix
    (``AttackView.flipped``): that pass costs a gradient per honest client, so only such attacks get it.
    """

    Params: ClassVar[type] = NoParams
    on_rank0: ClassVar[bool] = False
    needs_guiding: ClassVar[bool] = False
    needs_flipped: ClassVar[bool] = False

    def __init__(self, params: object) -> None:
        self.params = params

    @classmethod
    def check(cls, params: object, cfg: ExperimentConfig) -> None:
        """Raise ConfigError when the attack cannot run in ``cfg`` (checked when the config is resolved)."""

    def check_classes(self, num_classes: int) -> None:
        """Raise ConfigError when a class the attack names is not one of the dataset's ``num_classes``."""

    @property
    def backdoor_task(self) -> tuple[int, int] | None:
        """(source, target) of a backdoor, whose success the evaluation measures; None for other attacks."""
        return None

    def poison_labels(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The labels a Byzantine client trains on this round."""
        return y

    def poison_sample(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The labels of the sample a (fixed) Byzantine client hands DiverseFL's server once, before training."""
        return y

    def tamper(self, message: torch.Tensor, seed: int, round_: int, client: int) -> torch.Tensor:
        """The vector a Byzantine client uploads instead of its (label-poisoned) ``message``."""
        return message

    def forge(self, view: AttackView) -> torch.Tensor:
        """Rank-0 attacks: the rows [b, d] the round's Byzantine clients upload."""
        raise NotImplementedError


class ColludingAttack(Attack):
    """Base of the rank-0 (colluding, omniscient) attacks."""

    on_rank0 = True


def require(ok: bool, message: str) -> None:
    """A Params check: raise a one-line ConfigError unless ``ok``."""
    if not ok:
        raise ConfigError(message)
