"""Client-side Byzantine behaviour: poisoned labels before the gradient, a forged message after it.

These attacks see only the attacking client's own data and message (the paper's fault model). Under a rank-0 attack
(:mod:`.base`) a Byzantine client computes its honest gradient and the attack replaces it after the gather.
"""

from __future__ import annotations

import torch

from ..config import AttackConfig
from ..rng import Purpose, generator

#: Attacks that act on the client; every other ``attack.name`` is a registered rank-0 attack. ``sleeper``: a fixed
#: Byzantine set that flips its labels (c -> C-1-c) in the sample it hands DiverseFL before training and in every
#: mini-batch, so its updates agree with its own poisoned guiding gradient.
CLIENT_ATTACKS = ("none", "class_flip", "sign_flip", "backdoor", "gaussian", "nan", "sleeper")


def poison_labels(y: torch.Tensor, attack: AttackConfig, num_classes: int) -> torch.Tensor:
    """Labels a Byzantine client trains on: class flip c → C−1−c (NOTES.md), backdoor source → target."""
    if attack.name in ("class_flip", "sleeper"):
        return num_classes - 1 - y
    if attack.name == "backdoor":
        return torch.where(y == attack.source, torch.full_like(y, attack.target), y)
    return y


def forge(message: torch.Tensor, attack: AttackConfig, seed: int, round_: int, client: int) -> torch.Tensor:
    """The vector a Byzantine client uploads instead of its honest ``message``.

    Sign flip sends −z; backdoor scales its (poisoned) update by ``scale`` (model replacement, Bagdasaryan et al.
    2020); gaussian sends N(0, sigma²) noise; nan sends NaN everywhere; class flip and sleeper send their poisoned
    update.
    """
    if attack.name == "sign_flip":
        return -message
    if attack.name == "backdoor":
        return attack.scale * message
    if attack.name == "gaussian":
        noise = torch.randn(message.shape, generator=generator(seed, Purpose.ATTACK, round_, client))
        return (attack.sigma * noise).to(message.device)
    if attack.name == "nan":
        return torch.full_like(message, float("nan"))
    return message  # label attacks send their poisoned gradient; rank-0 attacks replace the honest one later
