"""DiverseFL's guiding gradients g~_j (eq. 8): the server's gradient on each client's tiny sample.

DiverseFL needs of g~_j only its inner product with z_j (C1) and its norm (C2), so the [n, d] guiding matrix is never
held whole: it is computed a chunk of clients at a time (:data:`CHUNK_ELEMENTS` gradient entries: every client of the
paper's MLP in one call) and reduced at once. With 10,000 clients of a 200k-parameter MLP that matrix alone would be
8 GB. Only rank 0 computes them, so the chunk is not tied to ``train.client_chunk`` (which keeps the clients'
gradients the same on any number of ranks).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...models.gradients import DenseStack, SharedModelGrads, chunks, stack_padded
from ...models import FlatModel


CHUNK_ELEMENTS = 1 << 24  # guiding-gradient entries per call (64 MB): 84 clients of the 199,210-parameter MLP


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[k] inner products of the rows of a and b. On a CPU one BLAS dot per row: ``(a * b).sum(1)`` writes a [k, d]
    temporary first and took 2.5x as long for the paper's MLP. On a GPU one fused ``vecdot`` kernel: a launch per
    row would be 10,000 launches a round with 10,000 clients."""
    if a.device.type != "cpu":
        return torch.linalg.vecdot(a, b)
    return torch.stack([torch.dot(a[i], b[i]) for i in range(len(a))]) if len(a) else a.new_zeros(0)


class GuidingGradients:
    """Holds the samples M_j^0 the clients shared before training."""

    def __init__(self, flat: FlatModel, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        self.chunk = max(1, min(len(xs), CHUNK_ELEMENTS // flat.dim))
        self.grads = SharedModelGrads(flat, self.chunk)
        self.x, self.y, self.w = stack_padded(xs, ys)
        # the samples never change: their Gram matrices [n, M, M] serve every round's fused norms
        self.x_gram = DenseStack.gram(self.x) if self.grads.fuses_dots else None

    def gradients(self, theta: torch.Tensor, clients: torch.Tensor) -> torch.Tensor:
        """[b, d] guiding gradients of the clients with the given indices (a white-box attacker's knowledge)."""
        j = clients.to(self.x.device)
        out = torch.empty((len(j), self.grads.dim), dtype=torch.float32, device=self.x.device)
        for part in chunks(len(j), self.chunk):
            out[part] = self.grads(theta, self.x[j[part]], self.y[j[part]], self.w[j[part]])
        return out

    def compare(self, theta: torch.Tensor, z: torch.Tensor, rows: torch.Tensor | None = None,
                adjust: Callable[[slice | torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                clients: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(g~_j · z_j, ||g~_j||), each [n] float32 on z's device, for the clients in ``rows`` ([n] bool; all when
        None) and NaN for the others, whose guiding gradients are not computed; and, with ``adjust``, the sum of the
        computed g~_j [d] (None without it, or when none is computed).

        ``adjust(clients, z_rows, g_rows)`` (``clients`` a slice or an index tensor), when given, returns replacement
        rows computed from each chunk's updates and guiding gradients (after the criteria are taken from the rows as
        received): rules that reshape updates with their guiding gradients do it here, a chunk at a time, so the
        guiding matrix is still never held whole. Without ``adjust``, linear stacks never form the guiding
        gradients at all (:meth:`mpifl.models.gradients.DenseStack.dots_and_norms`): DiverseFL needs only the two
        numbers.

        ``clients`` ([k] ids, None: row j is client j) says whose sample each row of ``z`` is compared with: a
        cross-device round's matrix holds only its cohort.
        """
        n = z.shape[0]
        dots = torch.full((n,), float("nan"), dtype=torch.float32, device=z.device)
        norms = torch.full_like(dots, float("nan"))
        total = None
        picked = None if rows is None else rows.nonzero().flatten()
        for part in chunks(n if picked is None else len(picked), self.chunk):
            j = part if picked is None else picked[part]  # every client: slices, so z's rows are views, not copies
            s = j if clients is None else clients[j].to(self.x.device)  # whose samples
            zj, samples = z[j], (self.x[s], self.y[s], self.w[s])
            if adjust is None and self.x_gram is not None:
                dots[j], norms[j] = self.grads.dots_and_norms(theta, *samples, zj, self.x_gram[s])
                continue
            g = self.grads(theta, *samples)
            dots[j] = row_dots(g, zj)
            norms[j] = torch.linalg.vector_norm(g, dim=1)
            if adjust is not None:
                total = g.sum(dim=0) if total is None else total.add_(g.sum(dim=0))
                z[j] = adjust(j, zj, g)
        return dots, norms, total
