"""Learning-rate schedules mu_r, r = 1..r_max (Sec. IV)."""

from __future__ import annotations

import bisect
import math

from .config import LrConfig
from .registry import choose, register


def learning_rate(cfg: LrConfig, round_: int) -> float:
    """mu_r for round ``round_`` (1-based) under the registered schedule ``cfg.schedule``."""
    return choose("train.lr.schedule", "lr_schedule", cfg.schedule)(cfg, round_)


@register("lr_schedule", "constant")
def constant(cfg: LrConfig, round_: int) -> float:
    return cfg.base


@register("lr_schedule", "inv_sqrt")
def inv_sqrt(cfg: LrConfig, round_: int) -> float:
    """base/sqrt(r) (Fig. 2)."""
    return cfg.base / math.sqrt(round_)


@register("lr_schedule", "step")
def step(cfg: LrConfig, round_: int) -> float:
    """base * gamma^(number of milestones <= r) (Fig. 3: 0.06 halved at 500 and 950), preceded by a linear warm-up
    reaching ``base`` at round ``warmup_rounds`` (Figs. 4-5: 0.05 → 0.1)."""
    if round_ <= cfg.warmup_rounds:
        return cfg.warmup_start + (cfg.base - cfg.warmup_start) * round_ / cfg.warmup_rounds
    return cfg.base * cfg.gamma ** bisect.bisect_right(cfg.milestones, round_)
