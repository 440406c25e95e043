"""The accuracy a progress line shows: the last evaluated one with its round, since a progress line may fall on a
round without evaluation (``output.progress_every`` not a multiple of ``train.eval_every``), where it read `acc nan`."""

from __future__ import annotations

import math

from .metrics import RoundRecord


class LastAccuracy:
    """Remembers the latest evaluated test accuracy and its round from the records of the rounds as they pass."""

    def __init__(self) -> None:
        self.round, self.accuracy = 0, math.nan

    def observe(self, record: RoundRecord) -> None:
        if not math.isnan(record.test_accuracy):
            self.round, self.accuracy = record.round, record.test_accuracy

    def describe(self, round_: int) -> str:
        """``acc 0.9312`` when evaluated in ``round_``, ``acc 0.9312 (round 10)`` when earlier, ``acc –`` before the
        first evaluation."""
        if self.round == 0:
            return "acc –"
        return f"acc {self.accuracy:.4f}" + ("" if self.round == round_ else f" (round {self.round})")
