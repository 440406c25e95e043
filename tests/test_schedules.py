import math

import pytest

from mpifl.config import LrConfig
from mpifl.schedules import learning_rate


def test_fig3_step_schedule_halves_at_500_and_950():
    cfg = LrConfig(schedule="step", base=0.06, milestones=[500, 950], gamma=0.5)
    assert [learning_rate(cfg, r) for r in (1, 499, 500, 949, 950, 1000)] == [0.06, 0.06, 0.03, 0.03, 0.015, 0.015]


def test_fig2_inverse_square_root():
    cfg = LrConfig(schedule="inv_sqrt", base=0.001)
    assert learning_rate(cfg, 1) == 0.001 and learning_rate(cfg, 100) == pytest.approx(0.0001)
    assert learning_rate(cfg, 2) == pytest.approx(0.001 / math.sqrt(2))


def test_cifar_warmup_then_step():
    cfg = LrConfig(schedule="step", base=0.1, warmup_rounds=1000, warmup_start=0.05, milestones=[2000], gamma=0.4)
    assert learning_rate(cfg, 1) == pytest.approx(0.05005)
    assert learning_rate(cfg, 500) == pytest.approx(0.075)
    assert learning_rate(cfg, 1000) == pytest.approx(0.1)
    assert learning_rate(cfg, 1999) == pytest.approx(0.1)
    assert learning_rate(cfg, 2000) == pytest.approx(0.04)
