"""Client-side Byzantine behaviour: poisoned labels before the gradient, a forged message after it.

Attacks see only the attacking client's own data and message (the paper's fault model); omniscient colluding
attacks that see honest updates would act on rank 0 before aggregation.
"""

from __future__ import annotations

import torch

from .config import AttackConfig
from .rng import Purpose, generator


def poison_labels(y: torch.Tensor, attack: AttackConfig, num_classes: int) -> torch.Tensor:
    """Labels a Byzantine client trains on: class flip c → C−1−c (NOTES.md), backdoor source → target."""
    if attack.name == "class_flip":
        return num_classes - 1 - y
    if attack.name == "backdoor":
        return torch.where(y == attack.source, torch.full_like(y, attack.target), y)
    return y


def forge(message: torch.Tensor, attack: AttackConfig, seed: int, round_: int, client: int) -> torch.Tensor:
    """The vector a Byzantine client uploads instead of its honest ``message``.

    Sign flip sends −z; backdoor scales its (poisoned) update by ``scale`` (model replacement, Bagdasaryan et al.
    2020); gaussian sends N(0, sigma²) noise; nan sends NaN everywhere; class flip sends its poisoned update unchanged.
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
    if attack.name in ("class_flip", "none"):
        return message
    raise ValueError(f"attack.name={attack.name!r} is not an attack this version forges.")
