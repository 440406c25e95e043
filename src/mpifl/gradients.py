"""Per-client mean gradients for a block of clients in one batched call.

Client j's gradient is (1/m_j) sum_k grad l(theta_j; x_jk, y_jk) (eq. 3 and, on the server's samples, eq. 8). Clients
with fewer points are padded and the padding gets weight 0, so one ``vmap`` over clients handles unequal sizes, and
the same function serves client updates, RSA's per-client models and DiverseFL's guiding gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import FlatModel


def stack_padded(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lists of per-client (x [m_j, ...], y [m_j]) → x [k, M, ...], y [k, M], weights [k, M] (1/m_j or 0)."""
    longest = max(len(y) for y in ys)
    k = len(xs)
    x = xs[0].new_zeros((k, longest, *xs[0].shape[1:]))
    y = ys[0].new_zeros((k, longest))
    w = torch.zeros((k, longest), dtype=torch.float32, device=xs[0].device)
    for j, (xj, yj) in enumerate(zip(xs, ys)):
        x[j, : len(yj)] = xj
        y[j, : len(yj)] = yj
        w[j, : len(yj)] = 1.0 / len(yj)
    return x, y, w


def batched_grads(flat: FlatModel, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                  chunk: int = 0) -> torch.Tensor:
    """[k, d] gradients. ``theta`` is [d] (one model for all) or [k, d] (one model per client, RSA)."""

    def weighted_loss(t: torch.Tensor, xj: torch.Tensor, yj: torch.Tensor, wj: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(flat.forward(t, xj), yj, reduction="none") * wj).sum()

    theta_dim = 0 if theta.dim() == 2 else None
    fn = torch.func.vmap(torch.func.grad(weighted_loss), in_dims=(theta_dim, 0, 0, 0), chunk_size=chunk or None)
    return fn(theta, x, y, w)
