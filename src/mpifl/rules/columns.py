"""The arithmetic of the paper's rules on the stacked update matrix Z [n, d] (row j = client j's message z_j).

Coordinate-wise statistics over selected rows in column bands and RSA's sign step; the rules themselves (what a
server does with a round) are in :mod:`mpifl.rules`.

References: :mod:`mpifl.rules.classic`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def by_columns(z: torch.Tensor, rows: torch.Tensor, rule: Callable[[torch.Tensor, slice], torch.Tensor],
               elements: int = 1 << 26) -> torch.Tensor:
    """A column-wise rule on the selected rows of ``z``, one band of columns at a time: ``rule(z[rows][:, cols],
    cols)`` → [len(cols)]. It bounds the copy of the selected rows to ``elements`` entries, where [n, d] with many
    clients would not fit twice; below that (20 clients of the paper's models) there is one band. Every rule here
    treats columns independently: order statistics and sign sums are bitwise the same in bands, a mean may differ in
    its last bit (the vectorised sum's order depends on the band width)."""
    d = z.shape[1]
    width = max(1, elements // max(1, int(rows.sum())))
    if width >= d:
        return rule(z if bool(rows.all()) else z[rows], slice(0, d))  # every row: no copy of Z
    out = torch.empty(d, dtype=z.dtype, device=z.device)
    for start in range(0, d, width):
        band = slice(start, min(start + width, d))
        out[band] = rule(z[rows, band], band)
    return out


GRAM_BAND_ELEMENTS = 1 << 16  # entries of one float64 band of the Gram matrix: 512 KiB, converted and used in cache


def gram64(z: torch.Tensor, rows: torch.Tensor | None = None, elements: int = GRAM_BAND_ELEMENTS) -> torch.Tensor:
    """[k, k] float64 inner products of the rows of ``z`` selected by ``rows`` ([n] bool; None: all), summed over
    column bands of ``elements`` entries: each band is gathered and converted to float64 while it sits in cache,
    instead of one float64 copy of the whole [k, d] (twice Z's bytes, written to memory and read back)."""
    index = None if rows is None or bool(rows.all()) else torch.nonzero(rows).squeeze(1)
    k = z.shape[0] if index is None else len(index)
    gram = torch.zeros((k, k), dtype=torch.float64, device=z.device)
    width = max(1, elements // max(k, 1))
    for start in range(0, z.shape[1], width):
        band = z[:, start:start + width] if index is None else z[index, start:start + width]
        band = band.to(torch.float64)
        gram.addmm_(band, band.T)
    return gram


def masked_mean(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """(1/|A|) sum_{j in A} z_j over the accepted set A = {j : mask_j}; None when A is empty.

    One matrix-vector product Zᵀw with w_j = 1/|A| on A and 0 elsewhere: it reads Z once and copies no rows (a
    gathered copy of the accepted rows took 10x as long at [20, 1e6]). The rows outside A must be finite, as in
    the screened matrix every rule sees (excluded rows are zero there): 0 · inf would be NaN."""
    count = int(mask.sum())
    if count == 0:
        return None
    return torch.mv(z.T, mask.to(z.dtype) / count)


def coordinate_median(z: torch.Tensor) -> torch.Tensor:
    """g(u) = median_j z_j(u); for even n the mean of the two middle values (docs/paper-notes.md; torch's median is
    the lower)."""
    n = z.shape[0]
    lower = torch.kthvalue(z, (n + 1) // 2, dim=0).values
    upper = torch.kthvalue(z, n // 2 + 1, dim=0).values
    return (lower + upper) / 2


def trimmed_mean(z: torch.Tensor, beta: float) -> torch.Tensor:
    """g(u) = (1/(n − 2b)) sum of z_j(u) after dropping the b = floor(beta n) largest and smallest values [9].

    docs/paper-notes.md: the printed normaliser 1/(1 − 2 beta n) is a typo for the number of values kept.
    """
    n = z.shape[0]
    b = int(beta * n)
    if b == 0:
        return z.mean(dim=0)
    return torch.sort(z, dim=0).values[b: n - b].mean(dim=0)


def rsa_direction(theta: torch.Tensor, z: torch.Tensor, delta: float) -> torch.Tensor:
    """RSA's server step without weight decay, eq. 7: g = delta sum_j sign(theta_M − theta_j), z_j = theta_j."""
    return delta * torch.sign(theta.unsqueeze(0) - z).sum(dim=0)
