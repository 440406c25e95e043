"""DiverseFL, all of it: the samples clients share before training, the per-client test against guiding gradients,
the filter it makes, and the rule (the average of what passes).

S. Prakash, A. S. Avestimehr, "Mitigating Byzantine attacks in federated learning", arXiv:2010.07541. Before training
client j gives the server a tiny sample M_j^0 (``aggregator.sample_fraction`` or ``sample_size``); each round the
server computes the guiding gradient g~_j on it (:mod:`mpifl.guiding`) and accepts z_j only if
C1 = sign(g~_j · z_j) > 0 (eq. 11) and eps1 < C2 = ||z_j|| / ||g~_j|| < eps2 (eq. 12). ``aggregator.name: diversefl``
averages the accepted updates (eq. 13); ``aggregator.filter: diversefl`` puts the same test in front of any rule.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..attacks.client import poison_labels
from ..data.partition import fraction_size
from ..guiding import GuidingGradients, row_dots
from ..models import FlatModel
from ..rng import Purpose, generator
from ..screening import DIRECTION, LENGTH, ZERO_GUIDING
from .base import Rule
from .classic import Mean
from .registry import register

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..data.datasets import Dataset, Scaling


def guiding_samples(cfg: ExperimentConfig, flat: FlatModel, parts: list[np.ndarray], ds: Dataset,
                    scaling: Scaling, num_classes: int) -> GuidingGradients:
    """The samples M_j^0 each client shares once before training, drawn by the client's own seeded generator, so
    rank 0 holds exactly what client j would send (rows of the memory-mapped dataset, no transfer). Under the
    ``sleeper`` attack the fixed Byzantine clients hand over their sample with poisoned labels."""
    sleepers = set(cfg.byzantine.clients) if cfg.attack.name == "sleeper" else set()
    xs, ys = [], []
    for j, p in enumerate(parts):
        s = fraction_size(len(p), cfg.aggregator.sample_size, cfg.aggregator.sample_fraction)
        pick = torch.randperm(len(p), generator=generator(cfg.seed, Purpose.SAMPLE, 0, j))[:s]
        idx = torch.from_numpy(p)[pick]
        xs.append(scaling(ds.train_x[idx].to(scaling.mean.device)))
        y = ds.train_y[idx].to(xs[-1].device)
        ys.append(poison_labels(y, cfg.attack, num_classes) if j in sleepers else y)
    return GuidingGradients(flat, xs, ys)


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
    """(C1, C2, flag bits) of every client; clients outside ``valid`` (screened out, not sampled) get C1 = 0,
    C2 = NaN and no DiverseFL bits: they never reach the test."""
    c1, c2 = similarity(dots, update_norms, guiding_norms)
    c1 = torch.where(valid, c1, torch.zeros_like(c1))
    c2 = torch.where(valid, c2, torch.full_like(c2, math.nan))
    bits = diversefl_flags(c1, c2, guiding_norms, eps1, eps2)
    return c1, c2, torch.where(valid, bits, torch.zeros_like(bits))


@register("filter", "diversefl")
class DiverseFLFilter:
    """Marks the ``diversefl`` filter as a choice; its decision is the flag mask :func:`criteria` computes during
    the server's screening."""


def accepted_by(rule: Rule, flags: torch.Tensor) -> torch.Tensor:
    """[k] bool: rows whose DiverseFL flags the rule does not reject (all bits but its ``tolerated_flags``)."""
    return (flags & (0xFF & ~rule.tolerated_flags)) == 0


def client_test(rule: Rule, z: torch.Tensor, guiding: torch.Tensor, eps1: float,
                eps2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-client test of a rule behind DiverseFL's filter, as the server applies it to rows ``z`` against
    ``guiding`` (eqs. 11-12 less the rule's tolerated flags, then its reshaping): ([k] accepted, the rows it would
    use). It is public: attacks tuned against the rule call it with their estimates of the guiding gradients."""
    norms = torch.linalg.vector_norm(guiding, dim=1)
    c1, c2 = similarity(row_dots(z, guiding), torch.linalg.vector_norm(z, dim=1), norms)
    accepted = accepted_by(rule, diversefl_flags(c1, c2, norms, eps1, eps2))
    return accepted, rule.reshape(z, guiding) if rule.reshapes_updates else z


@register("rule", "diversefl")
class DiverseFL(Mean):
    """DiverseFL (eq. 13): the average of the updates its filter accepted; choosing it turns the filter on."""

    implies_filter = "diversefl"
