"""Per-client mean gradients for a block of clients, in batched calls of one fixed shape.

Client j's gradient is (1/m_j) sum_k grad l(theta_j; x_jk, y_jk) (eq. 3 and, on the server's samples, eq. 8). Clients
with fewer points are padded and the padding gets weight 0, so one ``vmap`` over clients handles unequal sizes, and
the same function serves client updates, RSA's per-client models and DiverseFL's guiding gradients.

Placement independence: GPU kernels (and cuDNN's algorithm choice) depend on the batch shape, so a client's gradient
would change with the number of clients its rank hosts. Every call therefore has the same shape on every rank: ``chunk``
clients (the last chunk padded with zero-weight clients) of ``length`` points each (the longest batch of *all*
clients, not of the rank's block).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .models import FlatModel


def stack_padded(xs: list[torch.Tensor], ys: list[torch.Tensor],
                 length: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lists of per-client (x [m_j, ...], y [m_j]) → x [k, M, ...], y [k, M], weights [k, M] (1/m_j or 0).

    M is ``length`` (pass the longest batch over every client, so all ranks stack the same shape) or the longest here.
    """
    longest = max(len(y) for y in ys)
    if length is not None and length < longest:
        raise ValueError(f"stack_padded: length={length} is shorter than a client's {longest} points.")
    size = length or longest
    k = len(xs)
    x = xs[0].new_zeros((k, size, *xs[0].shape[1:]))
    y = ys[0].new_zeros((k, size))
    w = torch.zeros((k, size), dtype=torch.float32, device=xs[0].device)
    for j, (xj, yj) in enumerate(zip(xs, ys)):
        x[j, : len(yj)] = xj
        y[j, : len(yj)] = yj
        w[j, : len(yj)] = 1.0 / len(yj)
    return x, y, w


def _padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with zero rows appended up to ``rows`` (zero weights make the padding clients' gradients zero)."""
    if len(t) == rows:
        return t
    return torch.cat([t, t.new_zeros((rows - len(t), *t.shape[1:]))])


def chunks(k: int, chunk: int) -> Iterator[slice]:
    """The client slices of consecutive fixed-size calls over k clients."""
    for start in range(0, k, chunk):
        yield slice(start, min(start + chunk, k))


def batched_grads(flat: FlatModel, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                  chunk: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """[k, d] gradients, ``chunk`` clients per vmapped call. ``theta`` is [d] (one model for all) or [k, d] (one model
    per client, RSA). ``out`` ([k, d], reused across rounds) receives the result; none is allocated when given.

    The vmap covers the forward pass only, on one model copy per client, and plain autograd differentiates the sum of
    the per-client losses: row j of the result is client j's gradient. ``torch.func.grad`` gives the same bits but
    imports torch._dynamo and sympy on first use, 130 MB of resident memory on every rank.
    """

    def weighted_loss(t: torch.Tensor, xj: torch.Tensor, yj: torch.Tensor, wj: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(flat.forward(t, xj), yj, reduction="none") * wj).sum()

    losses = torch.func.vmap(weighted_loss)
    per_client = theta.dim() == 2
    k = x.shape[0]
    if out is None:
        out = torch.empty((k, flat.dim), dtype=torch.float32, device=x.device)
    for part in chunks(k, chunk):
        models = _padded(theta[part], chunk) if per_client else theta.expand(chunk, -1)
        t = models.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(losses(t, _padded(x[part], chunk), _padded(y[part], chunk),
                                              _padded(w[part], chunk)).sum(), t)
        out[part] = g[: part.stop - part.start]
    return out


class SharedModelGrads:
    """Per-client gradients at one model θ for every client (DiverseFL's guiding gradients), ``chunk`` clients per
    call: :func:`batched_grads` with a [d] θ to float rounding (bitwise on the paper's MLP shapes), about 1.5× faster:
    θ enters the vmap unbatched, so each layer's forward is one matmul over the chunk's stacked points instead of one
    per client copy of θ, and there is no [chunk, d] copy of θ to make or gradient to reassemble from per-client
    pieces. Every call has the same shape (the last chunk padded with zero-weight clients), so a client's gradient
    does not depend on which clients are computed with it. ``torch.func.grad`` imports torch._dynamo (~160 MB
    resident), which is why the clients' own gradients (every rank) do not use it; guiding gradients are rank 0's."""

    def __init__(self, flat: FlatModel, chunk: int) -> None:
        def weighted_loss(t: torch.Tensor, xj: torch.Tensor, yj: torch.Tensor, wj: torch.Tensor) -> torch.Tensor:
            return (F.cross_entropy(flat.forward(t, xj), yj, reduction="none") * wj).sum()

        self.dim, self.chunk = flat.dim, chunk
        self._grads = torch.func.vmap(torch.func.grad(weighted_loss), in_dims=(None, 0, 0, 0))

    def __call__(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[k, d] gradients of the k ≤ ``chunk`` clients' weighted losses (x [k, M, ...], y and w [k, M]) at θ [d]."""
        k = x.shape[0]
        return self._grads(theta.detach(), _padded(x, self.chunk), _padded(y, self.chunk), _padded(w, self.chunk))[:k]
