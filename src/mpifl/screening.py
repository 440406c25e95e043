"""Rank 0's first look at what clients sent: every update is untrusted.

An update with a NaN/±Inf entry, or a norm above ``aggregator.max_norm``, is invalid: it is excluded before any rule
sees it, for every rule, so no client can turn theta into NaN. Why a client was flagged is kept as a bit mask per client
and round (``clients/flags`` in the HDF5 file).
"""

from __future__ import annotations

import torch

DIRECTION = 1  # DiverseFL condition 1 failed: C1 = sign(g~ . z) <= 0
LENGTH = 2  # DiverseFL condition 2 failed: C2 = ||z|| / ||g~|| outside (eps1, eps2)
NON_FINITE = 4  # the update holds NaN or +-Inf
NORM_BOUND = 8  # ||z|| > aggregator.max_norm
ZERO_GUIDING = 16  # ||g~|| = 0: C2 undefined
NOT_SAMPLED = 32  # the client did not take part in the round (train.clients_per_round)
REASONS = {DIRECTION: "direction", LENGTH: "length", NON_FINITE: "non_finite", NORM_BOUND: "norm_bound",
           ZERO_GUIDING: "zero_guiding", NOT_SAMPLED: "not_sampled"}
INVALID = NON_FINITE | NORM_BOUND  # what screening rejects
EXCLUDED = INVALID | NOT_SAMPLED  # rows no rule ever sees


def row_bands(z: torch.Tensor, elements: int = 1 << 24) -> list[slice]:
    """Row slices of ``z`` holding about ``elements`` entries each: server passes over [n, d] that need a temporary
    (a float64 copy, a product) make it one band at a time, so 10,000 clients never double the matrix's memory."""
    rows = max(1, elements // max(1, z.shape[1]))
    return [slice(start, min(start + rows, z.shape[0])) for start in range(0, z.shape[0], rows)]


def row_norms(z: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """||z_j|| for every row, in ``dtype`` (NaN/inf rows give NaN/inf), band by band."""
    out = torch.empty(z.shape[0], dtype=dtype, device=z.device)
    for band in row_bands(z):
        out[band] = torch.linalg.vector_norm(z[band].to(dtype), dim=1)
    return out


BOUNDARY = 1e-4  # float32 norms this close (relatively) to max_norm are rechecked in float64


def screen(z: torch.Tensor, max_norm: float, sampled: torch.Tensor | None = None,
           norms: torch.Tensor | None = None) -> torch.Tensor:
    """Flags [n] uint8 with NON_FINITE / NORM_BOUND bits (and NOT_SAMPLED for rows outside ``sampled``, whose
    content is ignored); the excluded rows of ``z`` are zeroed in place. ``norms``: the rows' float32 norms when the
    caller has them (:func:`row_norms`).

    Zeroing lets similarity and norm computations run on every row without NaN propagating; rules only ever see the
    valid rows. In place because ``z`` is the round's receive buffer: a copy would double rank 0's largest array.
    """
    # A float32 norm is finite only if every entry is (inf and NaN propagate), and then it decides the bound, except
    # within BOUNDARY of max_norm. The rows it cannot decide (non-finite: NaN/inf entries, or squares of 1e30-sized
    # entries that overflow float32; or at the boundary) are measured again in float64, where squares of float32
    # entries cannot overflow, so 1e30-sized entries still count against max_norm. Only those rows: a float64 copy
    # of every row cost more than the rest of the screening.
    norms64 = (row_norms(z) if norms is None else norms).to(torch.float64)
    unsure = (~torch.isfinite(norms64) | ((norms64 - max_norm).abs() <= BOUNDARY * max_norm)).nonzero().flatten()
    if len(unsure):
        norms64[unsure] = row_norms(z[unsure], torch.float64)
    finite = torch.isfinite(norms64)
    bounded = norms64 <= max_norm
    flags = (~finite).to(torch.uint8) * NON_FINITE | (finite & ~bounded).to(torch.uint8) * NORM_BOUND
    if sampled is not None:
        flags = torch.where(sampled, flags, torch.full_like(flags, NOT_SAMPLED))
    excluded = (flags != 0).nonzero().flatten()
    if len(excluded):  # only the excluded rows are written (a row mask would rewrite all of z)
        z.index_fill_(0, excluded, 0.0)
    return flags
