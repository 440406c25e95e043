"""Which clients take part in round r (cross-device FL, ``train.clients_per_round``): the same answer on every rank."""

from __future__ import annotations

import torch

from .rng import Purpose, generator


def sampled(seed: int, n: int, per_round: int | None, round_: int) -> torch.Tensor:
    """[n] bool: ``per_round`` clients drawn uniformly without replacement for ``round_``, or all when it is None."""
    mask = torch.ones(n, dtype=torch.bool)
    if per_round is None or per_round >= n:
        return mask
    mask[:] = False
    mask[torch.randperm(n, generator=generator(seed, Purpose.PARTICIPATION, round_))[:per_round]] = True
    return mask
