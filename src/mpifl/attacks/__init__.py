"""Byzantine behaviour behind one interface (:class:`.base.Attack`), registered by name (kind ``attack``).

Client side (:mod:`.client`): poisoned labels before the gradient (class flip, backdoor, sleeper) and a forged message
after it (sign flip, backdoor scaling, noise). Rank 0 (:class:`.base.ColludingAttack`): colluding omniscient attacks
that see the round's honest updates and the rule's public parameters: the field's standard attacks (:mod:`.field`),
ByzFL's fixed-vector ones (:mod:`.vectors`) and its line searches over the server's response (:mod:`.optimal`), and
attacks built against DiverseFL's test (:mod:`.adaptive`). A plug-in file registers its own the same way.
"""

from . import adaptive, client, field, optimal, vectors
from .base import Attack, AttackView, ColludingAttack, RuleFacts

__all__ = ["Attack", "AttackView", "ColludingAttack", "RuleFacts", "adaptive", "client", "field", "optimal", "vectors"]
