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
REASONS = {DIRECTION: "direction", LENGTH: "length", NON_FINITE: "non_finite", NORM_BOUND: "norm_bound",
           ZERO_GUIDING: "zero_guiding"}
INVALID = NON_FINITE | NORM_BOUND


def screen(z: torch.Tensor, max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(flags [n] uint8 with NON_FINITE / NORM_BOUND bits, the updates with invalid rows replaced by zeros).

    The zeroed copy lets similarity and norm computations run on every row without NaN propagating; rules only ever
    see the valid rows.
    """
    finite = torch.isfinite(z).all(dim=1)
    clean = torch.where(finite.unsqueeze(1), z, torch.zeros((), dtype=z.dtype, device=z.device))
    norms = torch.linalg.vector_norm(clean.double(), dim=1)  # float64: 1e30-sized entries must not overflow to inf
    bounded = norms <= max_norm
    flags = (~finite).to(torch.uint8) * NON_FINITE | (finite & ~bounded).to(torch.uint8) * NORM_BOUND
    clean = torch.where((flags == 0).unsqueeze(1), clean, torch.zeros((), dtype=z.dtype, device=z.device))
    return flags, clean
