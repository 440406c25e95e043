"""Rank 0's first look at what clients sent: every update is untrusted.

An update with a NaN/±Inf entry, or a norm above ``aggregator.max_norm``, is invalid: it is excluded before any rule
sees it, for every rule, so no client can turn theta into NaN. Why a client was flagged is kept as a bit mask per client
and round (``clients/flags`` in the HDF5 file).
"""

from __future__ import annotations

import math

import torch

DIRECTION = 1  # DiverseFL condition 1 failed: C1 = sign(g~ . z) <= 0
LENGTH = 2  # DiverseFL condition 2 failed: C2 = ||z|| / ||g~|| outside (eps1, eps2)
NON_FINITE = 4  # the update holds NaN or +-Inf
NORM_BOUND = 8  # ||z|| > aggregator.max_norm
ZERO_GUIDING = 16  # ||g~|| = 0: C2 undefined
NOT_SAMPLED = 32  # the client did not take part in the round (train.clients_per_round)
FILTERED = 64  # a filter that gives no reasons of its own (a plug-in) rejected the row
REASONS = {DIRECTION: "direction", LENGTH: "length", NON_FINITE: "non_finite", NORM_BOUND: "norm_bound",
           ZERO_GUIDING: "zero_guiding", NOT_SAMPLED: "not_sampled", FILTERED: "filtered"}
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


COLUMN_BAND = 16384  # columns whose float32 norm is one partial sum of the screening norms
BOUNDARY = 1e-3  # relative error bound of a float32 sum of COLUMN_BAND squares (16,384 · 2⁻²⁴; measured ~1e-5)
UNDERFLOW = 1e-18  # below this float32 squares of the entries can underflow to 0


def banded_norms(z: torch.Tensor, centre: torch.Tensor | None = None, band: int = COLUMN_BAND) -> torch.Tensor:
    """[n] float64 ||z_j − centre|| (centre None: ||z_j||): float32 norms of ``band`` columns at a time, their
    squares summed in float64.

    One read of z; with a centre, each band's differences go to one reused [n, band] buffer, so no [n, d]
    difference matrix is written. A float32 norm of a whole long row is not accurate enough to screen with (a
    constant row of 1e6 entries came out 4e-4 low); over 16,384 columns at a time the error stays within BOUNDARY.
    A row whose float32 squares overflow comes out inf."""
    n, d = z.shape
    work = None if centre is None else torch.empty((n, min(band, d)), dtype=z.dtype, device=z.device)
    squares = torch.zeros(n, dtype=torch.float64, device=z.device)
    for lo in range(0, d, band):
        part = z[:, lo:lo + band]
        if work is not None:
            part = torch.sub(part, centre[lo:lo + band], out=work[:, :part.shape[1]])
        squares += torch.linalg.vector_norm(part, dim=1).double().square()
    return squares.sqrt()


def screen(z: torch.Tensor, max_norm: float, sampled: torch.Tensor | None = None) -> torch.Tensor:
    """Flags [n] uint8 with NON_FINITE / NORM_BOUND bits (and NOT_SAMPLED for rows outside ``sampled``, whose
    content is ignored); the excluded rows of ``z`` are zeroed in place.

    Zeroing lets similarity and norm computations run on every row without NaN propagating; rules only ever see the
    valid rows. In place because ``z`` is the round's receive buffer: a copy would double rank 0's largest array.
    """
    # The flags are those of each row's norm in float64, where squares of float32 entries cannot overflow (so
    # 1e30-sized entries still count against max_norm) and NaN/inf propagate. :func:`banded_norms` decides most
    # rows from float32 pieces: a finite result means finite entries, and one farther than BOUNDARY from max_norm
    # is on the right side of it. The rows it cannot decide (non-finite: NaN/inf entries, or float32 overflow; at
    # the bound; or every row when max_norm is so small that float32 squares underflow) are measured again from a
    # float64 copy of those rows only: a float64 copy of every row cost more than the rest of the screening.
    norms = banded_norms(z)
    unsure = ~torch.isfinite(norms)
    if max_norm < UNDERFLOW:
        unsure.fill_(True)
    elif math.isfinite(max_norm):  # an infinite bound is never near a finite norm
        unsure |= (norms - max_norm).abs() <= BOUNDARY * max_norm
    recheck = unsure.nonzero().flatten()
    if len(recheck):
        norms[recheck] = row_norms(z[recheck], torch.float64)
    finite = torch.isfinite(norms)
    bounded = norms <= max_norm
    flags = (~finite).to(torch.uint8) * NON_FINITE | (finite & ~bounded).to(torch.uint8) * NORM_BOUND
    if sampled is not None:
        flags = torch.where(sampled, flags, torch.full_like(flags, NOT_SAMPLED))
    excluded = (flags != 0).nonzero().flatten()
    if len(excluded):  # only the excluded rows are written (a row mask would rewrite all of z)
        z.index_fill_(0, excluded, 0.0)
    return flags
