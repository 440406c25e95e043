"""DiverseFL's per-client test (eqs. 9-12): C1, C2 and the reasons a client is rejected, as flag bits."""

from __future__ import annotations

import math

import torch

from ...screening import DIRECTION, LENGTH, ZERO_GUIDING


def similarity(dots: torch.Tensor, update_norms: torch.Tensor,
               guiding_norms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DiverseFL's per-client criteria from g~_j · z_j, ||z_j|| and ||g~_j||: C1 = sign(g~_j · z_j) (eq. 9) and
    C2 = ||z_j|| / ||g~_j|| (eq. 10).

    A zero guiding gradient gives C2 = inf (or nan for a zero update); :func:`diversefl_flags` flags it explicitly.
    """
    return torch.sign(dots).to(torch.int8), update_norms / guiding_norms


def diversefl_flags(c1: torch.Tensor, c2: torch.Tensor, guiding_norm: torch.Tensor, eps1: float,
                    eps2: float) -> torch.Tensor:
    """Why DiverseFL rejects client j (uint8 bit mask, 0 = accepted): C1 > 0 fails (eq. 11, DIRECTION),
    eps1 < C2 < eps2 fails (eq. 12, strict as in the paper, LENGTH), or ||g~_j|| = 0 leaves C2 undefined
    (ZERO_GUIDING)."""
    zero = guiding_norm == 0
    in_range = (c2 > eps1) & (c2 < eps2)
    return ((c1 <= 0).to(torch.uint8) * DIRECTION | zero.to(torch.uint8) * ZERO_GUIDING
            | (~zero & ~in_range).to(torch.uint8) * LENGTH)


def criteria(dots: torch.Tensor, update_norms: torch.Tensor, guiding_norms: torch.Tensor, valid: torch.Tensor,
             eps1: float, eps2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C1, C2, flag bits) of every client; clients outside ``valid`` (screened out, not sampled, rejected by an
    earlier filter) get C1 = 0, C2 = NaN and no DiverseFL bits: they never reach the test."""
    c1, c2 = similarity(dots, update_norms, guiding_norms)
    c1 = torch.where(valid, c1, torch.zeros_like(c1))
    c2 = torch.where(valid, c2, torch.full_like(c2, math.nan))
    bits = diversefl_flags(c1, c2, guiding_norms, eps1, eps2)
    return c1, c2, torch.where(valid, bits, torch.zeros_like(bits))
