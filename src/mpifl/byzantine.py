"""Who is Byzantine in round r: the same answer on every rank, from the seed alone."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import ByzantineConfig
from .registry import choose, register
from .rng import Purpose, generator


class ByzantineSchedule:
    """The ground-truth Byzantine mask [n] per round.

    ``random``: k of n drawn anew each round (the paper's 5 of 20). ``fixed``: the same set every round. ``markov``
    (backdoor experiment): a client holding ``markov_class`` in the normal state turns Byzantine with probability p and
    then stays Byzantine for ``markov_rounds`` consecutive rounds. The Markov state depends on history, so it is
    replayed from round 1 when an earlier round is asked for (cheap: n coin flips per round).
    """

    def __init__(self, cfg: ByzantineConfig, n: int, seed: int, client_classes: Callable[[int], set[int]]) -> None:
        self.cfg, self.n, self.seed = cfg, n, seed
        self._draw = choose("byzantine.model", "byzantine", cfg.model)
        # which clients hold markov_class: asked of every client only when the Markov model needs it
        self.eligible = torch.tensor([cfg.markov_class in client_classes(j) for j in range(n)], dtype=torch.bool) \
            if cfg.model == "markov" else None
        self._reset()

    def _reset(self) -> None:
        self._round = 0
        self._left = torch.zeros(self.n, dtype=torch.int64)
        self._mask = torch.zeros(self.n, dtype=torch.bool)

    def mask(self, round_: int) -> torch.Tensor:
        return self._draw(self, round_)

    def markov(self, round_: int) -> torch.Tensor:
        if round_ < self._round:
            self._reset()
        while self._round < round_:
            self._round += 1
            self._advance(self._round)
        return self._mask.clone()

    def _advance(self, round_: int) -> None:
        for j in range(self.n):
            if self._left[j] == 0 and self.eligible[j]:
                coin = torch.rand(1, generator=generator(self.seed, Purpose.BYZANTINE, round_, j)).item()
                if coin < self.cfg.markov_p:
                    self._left[j] = self.cfg.markov_rounds
        self._mask = self._left > 0
        self._left = (self._left - 1).clamp(min=0)


@register("byzantine", "none")
def nobody(schedule: ByzantineSchedule, round_: int) -> torch.Tensor:
    return torch.zeros(schedule.n, dtype=torch.bool)


@register("byzantine", "fixed")
def fixed(schedule: ByzantineSchedule, round_: int) -> torch.Tensor:
    m = torch.zeros(schedule.n, dtype=torch.bool)
    m[schedule.cfg.clients] = True
    return m


@register("byzantine", "random")
def random_k(schedule: ByzantineSchedule, round_: int) -> torch.Tensor:
    m = torch.zeros(schedule.n, dtype=torch.bool)
    order = torch.randperm(schedule.n, generator=generator(schedule.seed, Purpose.BYZANTINE, round_))
    m[order[: schedule.cfg.k]] = True
    return m


register("byzantine", "markov")(ByzantineSchedule.markov)
