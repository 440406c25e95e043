"""DiverseFL's guiding gradients g~_j (eq. 8): the server's gradient on each client's tiny sample.

DiverseFL needs of g~_j only its inner product with z_j (C1) and its norm (C2), so the [n, d] guiding matrix is never
held whole: it is computed ``chunk`` clients at a time and reduced at once. With 10,000 clients of a 200k-parameter
MLP that matrix alone would be 8 GB.
"""

from __future__ import annotations

import torch

from .gradients import batched_grads, chunks, stack_padded
from .models import FlatModel


class GuidingGradients:
    """Holds the samples M_j^0 the clients shared before training."""

    def __init__(self, flat: FlatModel, xs: list[torch.Tensor], ys: list[torch.Tensor], chunk: int) -> None:
        self.flat, self.chunk = flat, chunk
        self.x, self.y, self.w = stack_padded(xs, ys)

    def compare(self, theta: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g~_j · z_j, ||g~_j||) for every client j, each [n] float32 on z's device."""
        n = self.x.shape[0]
        dots = torch.empty(n, dtype=torch.float32, device=z.device)
        norms = torch.empty_like(dots)
        for part in chunks(n, self.chunk):
            g = batched_grads(self.flat, theta, self.x[part], self.y[part], self.w[part], self.chunk)
            dots[part] = (g * z[part]).sum(dim=1)
            norms[part] = torch.linalg.vector_norm(g, dim=1)
        return dots, norms
