"""Client-side Byzantine behaviour: poisoned labels before the gradient, a forged message after it.

These attacks see only the attacking client's own data and message (the paper's fault model). Under a rank-0 attack
(:class:`.base.ColludingAttack`) a Byzantine client computes its honest gradient and the attack replaces it after the
gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ExperimentConfig
from ..registry import register
from ..rng import Purpose, generator
from .base import Attack, require


def flipped(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class flip c → C−1−c (docs/paper-notes.md)."""
    return num_classes - 1 - y


@register("attack", "none")
class NoAttack(Attack):
    """Byzantine clients behave honestly (the clean baseline; the schedule still records who they are)."""


@register("attack", "class_flip")
class ClassFlip(Attack):
    """Train on flipped labels c → C−1−c and upload that gradient."""

    def poison_labels(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        return flipped(y, num_classes)


@register("attack", "sign_flip")
class SignFlip(Attack):
    """Upload −z."""

    def tamper(self, message: torch.Tensor, seed: int, round_: int, client: int) -> torch.Tensor:
        return -message


@dataclass(frozen=True)
class BackdoorParams:
    source: int = 4  # relabelled class
    target: int = 9  # the label it gets
    scale: float = 4.0  # the update is scaled by this (model replacement)

    def __post_init__(self) -> None:
        require(self.source >= 0 and self.target >= 0,
                f"attack.params.source={self.source} and target={self.target} must be class ids >= 0.")
        require(self.source != self.target, "attack.params.source and attack.params.target must differ for a backdoor.")
        require(self.scale > 0, f"attack.params.scale={self.scale} must be > 0.")


@register("attack", "backdoor")
class Backdoor(Attack):
    """Relabel ``source`` as ``target`` in the batch and scale the update by ``scale`` (Bagdasaryan et al. 2020)."""

    Params = BackdoorParams

    def check_classes(self, num_classes: int) -> None:
        for key in ("source", "target"):
            value = getattr(self.params, key)
            require(value < num_classes, f"attack.params.{key}={value} is not a class of the dataset ({num_classes} "
                                         "classes).")

    @property
    def backdoor_task(self) -> tuple[int, int]:
        return self.params.source, self.params.target

    def poison_labels(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        return torch.where(y == self.params.source, torch.full_like(y, self.params.target), y)

    def tamper(self, message: torch.Tensor, seed: int, round_: int, client: int) -> torch.Tensor:
        return self.params.scale * message


@dataclass(frozen=True)
class GaussianParams:
    sigma: float = 1.0  # std of the uploaded noise

    def __post_init__(self) -> None:
        require(self.sigma > 0, f"attack.params.sigma={self.sigma} must be > 0.")


@register("attack", "gaussian")
class Gaussian(Attack):
    """Upload N(0, sigma²) noise instead of a gradient."""

    Params = GaussianParams

    def tamper(self, message: torch.Tensor, seed: int, round_: int, client: int) -> torch.Tensor:
        noise = torch.randn(message.shape, generator=generator(seed, Purpose.ATTACK, round_, client))
        return (self.params.sigma * noise).to(message.device)


@register("attack", "nan")
class NotANumber(Attack):
    """Upload NaN everywhere (a crashed or malicious client)."""

    def tamper(self, message: torch.Tensor, seed: int, round_: int, client: int) -> torch.Tensor:
        return torch.full_like(message, float("nan"))


@register("attack", "sleeper")
class Sleeper(ClassFlip):
    """A fixed Byzantine set that flips its labels in the sample it hands DiverseFL before training and in every
    mini-batch, so its updates agree with its own poisoned guiding gradient."""

    @classmethod
    def check(cls, params: object, cfg: ExperimentConfig) -> None:
        require(cfg.byzantine.model == "fixed", "attack.name=sleeper needs byzantine.model=fixed: a sleeper hands the "
                "server its poisoned sample once, before training, so the same clients must stay Byzantine.")

    def poison_sample(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        return flipped(y, num_classes)
