"""DiverseFL's guiding gradients g~_j (eq. 8): the server's gradient on each client's tiny sample, all n at once."""

from __future__ import annotations

import torch

from .gradients import batched_grads, stack_padded
from .models import FlatModel


class GuidingGradients:
    """Holds the samples M_j^0 the clients shared before training; ``compute(theta)`` → [n, d]."""

    def __init__(self, flat: FlatModel, xs: list[torch.Tensor], ys: list[torch.Tensor], chunk: int = 0) -> None:
        self.flat, self.chunk = flat, chunk
        self.x, self.y, self.w = stack_padded(xs, ys)

    def compute(self, theta: torch.Tensor) -> torch.Tensor:
        return batched_grads(self.flat, theta, self.x, self.y, self.w, self.chunk)
