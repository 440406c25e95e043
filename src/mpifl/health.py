"""Signs that a run has gone wrong while it trains, said at once instead of discovered in the HDF5 file later.

A θ with NaN/inf makes every later round meaningless (and its checkpoint unusable), so it stops the run before that
round is recorded or checkpointed. A rule that takes no step round after round (Krum or Bulyan with too few usable
updates, thresholds nobody passes) leaves θ frozen while the run looks healthy; one warning says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TextIO

import torch

from . import checkpoint

#: Rounds in a row without a step before the warning: long enough that an occasional empty round stays quiet.
STALL_ROUNDS = 10


#: What every rank learns after each round (the highest any rank says): go on, stop on a signal (checkpoint, exit
#: 75), or halt on rank 0's error.
GO, STOP, HALT = 0, 1, 2


class Diverged(RuntimeError):
    """θ turned non-finite; the run stopped before recording that round."""


class Halted(RuntimeError):
    """Rank 0 stopped the run for a reason it states (a non-finite θ, an unwritable run file). Every rank raises this
    in the same round after agreeing to, so none is left waiting in a collective and the job is not aborted; the
    message is rank 0's (empty elsewhere), said once."""

    def __init__(self, message: str, rank: int) -> None:
        super().__init__(message)
        self.rank = rank


def check_finite(theta: torch.Tensor, round_: int, out: Path) -> None:
    """Raise :class:`Diverged` when θ holds NaN or inf. One float64 sum: NaN and inf propagate through it and a sum
    of finite float32 values cannot overflow float64, so no [d] mask is allocated."""
    if math.isfinite(float(theta.sum(dtype=torch.float64))):
        return
    raise Diverged(f"θ became non-finite (NaN or inf) in round {round_}, so the run stops: {out} keeps rounds "
                   f"1..{round_ - 1} and {checkpoint.path_for(out)} (if written) an earlier round. Lower train.lr "
                   "or choose a more robust aggregator.")


class StallWatch:
    """Counts rounds in a row in which the rule took no step and warns once, on the progress stream."""

    def __init__(self, rule: str, progress: TextIO | None, limit: int = STALL_ROUNDS) -> None:
        self.rule, self.progress, self.limit = rule, progress, limit
        self.streak, self.warned = 0, False

    def observe(self, round_: int, applied: bool) -> None:
        self.streak = 0 if applied else self.streak + 1
        if self.streak < self.limit or self.warned or self.progress is None:
            return
        self.warned = True
        print(f"[mpifl] warning: {self.rule} took no step in rounds {round_ - self.streak + 1}..{round_}: too few "
              "usable updates for it (see aggregator.params and the clients per round); θ is not changing.",
              file=self.progress, flush=True)
