"""Which clients take part in round r (cross-device FL, ``train.clients_per_round``): the same answer on every rank.

Under sampling a round's work follows its cohort, not the population: the cohort's m clients (in id order) are spread
evenly over the client ranks, which act as workers for whichever clients they are given (:func:`worker_slots`), so
the slowest rank computes at most one client more than the others wherever the ids fall.
"""

from __future__ import annotations

import torch

from .placement import client_blocks
from .rng import Purpose, generator


def is_cohort(n: int, per_round: int | None) -> bool:
    """Whether rounds are built around a sampled cohort (m < n clients a round) rather than the whole population."""
    return per_round is not None and per_round < n


def cohort(seed: int, n: int, per_round: int | None, round_: int) -> torch.Tensor:
    """The ids (int64, ascending) of the clients that take part in ``round_``: ``per_round`` drawn uniformly without
    replacement, or all n when it is None."""
    if not is_cohort(n, per_round):
        return torch.arange(n)
    draw = torch.randperm(n, generator=generator(seed, Purpose.PARTICIPATION, round_))[:per_round]
    return torch.sort(draw).values


def as_mask(ids: torch.Tensor, n: int) -> torch.Tensor:
    """[n] bool with the clients ``ids`` set (host-side, like every ground-truth mask)."""
    return torch.zeros(n, dtype=torch.bool).index_fill_(0, ids, True)


def worker_slots(m: int, size: int, rank: int) -> range:
    """The positions in a round's cohort of m clients that ``rank`` computes (rank 0 only when it is alone)."""
    return client_blocks(m, size)[rank]
