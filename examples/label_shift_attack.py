"""An example plug-in client attack: Byzantine clients train on labels shifted by ``shift`` (c -> c + shift mod C)
and upload their gradient scaled by ``boost``. It runs where the client runs, on every rank that hosts one.

    mpifl train --plugin examples/label_shift_attack.py --set attack.name=label_shift --set attack.params.boost=3
"""

from dataclasses import dataclass

import torch

from mpifl.attacks import Attack
from mpifl.registry import register


@dataclass(frozen=True)
class Params:
    shift: int = 1
    boost: float = 1.0


@register("attack", "label_shift")
class LabelShift(Attack):
    Params = Params

    def poison_labels(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        return (y + self.params.shift) % num_classes

    def tamper(self, message: torch.Tensor, seed: int, round_: int, client: int) -> torch.Tensor:
        return self.params.boost * message
