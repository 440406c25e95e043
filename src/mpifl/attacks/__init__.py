"""Byzantine behaviour, in two places.

On the client (:mod:`.client`): poisoned labels before the gradient (class flip, backdoor) and a forged message after
it (sign flip, scaling for the backdoor, noise): the paper's fault model, where an attacker sees only its own data.
On rank 0 (:mod:`.base`): colluding omniscient attacks that see the round's honest updates and the rule's public
parameters: the field's standard attacks (:mod:`.field`) and attacks built against DiverseFL's test (:mod:`.adaptive`).
Rank-0 attacks are registered by name (kind ``attack`` in :mod:`mpifl.rules.registry`), so a plug-in file adds its own.
"""

from . import adaptive, field
from .base import KNOWLEDGE, AttackView, ColludingAttack, RuleFacts
from .client import CLIENT_ATTACKS, forge, poison_labels

__all__ = ["CLIENT_ATTACKS", "KNOWLEDGE", "AttackView", "ColludingAttack", "RuleFacts", "adaptive", "field", "forge",
           "poison_labels"]
