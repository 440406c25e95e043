"""The interface of a filter: what it takes before training, what it computes each round, which rows it accepts and
what it records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from ..registry import NoParams

if TYPE_CHECKING:
    from ..attacks import Attack
    from ..data.datasets import Scaling
    from ..data.population import Population
    from ..models import FlatModel
    from ..rules import Rule


@dataclass(frozen=True)
class FilterSetup:
    """What rank 0 can give a filter before round 1: the model, the population (each client's data, as the client
    would draw from it), and what the clients hand over before training."""

    flat: FlatModel
    population: Population
    scaling: Scaling
    seed: int
    attack: Attack  # its ``poison_sample`` hook: what a Byzantine client hands over instead of honest data
    byzantine_from_start: frozenset[int]  # clients Byzantine before training (a fixed schedule), who poison samples
    cross_device: bool = False  # rounds hold a sampled cohort: take what a round needs when it needs it


@dataclass(frozen=True)
class FilterView:
    """One round as a filter sees it, every tensor on the update matrix's device."""

    z: torch.Tensor  # [n, d] screened updates (excluded rows zero); a filter may rebuild rows in place for its rule
    usable: torch.Tensor  # [n] bool: rows that passed screening and the filters before this one
    update_norm: torch.Tensor  # [n] ||z_j|| as received
    sampled: torch.Tensor | None  # [n] bool: clients that took part (None: everyone)
    theta: torch.Tensor  # [d]
    round: int
    seed: int
    clients: torch.Tensor | None = None  # [k] the client id of each row (a cross-device cohort); None: row j = client j


@dataclass(frozen=True)
class Verdict:
    """What a filter decided about one round."""

    accepted: torch.Tensor  # [n] bool: usable rows the filter lets through
    flags: torch.Tensor | None = None  # [n] uint8 reason bits (mpifl.screening); None: rejected rows get FILTERED
    record: dict[str, torch.Tensor] = field(default_factory=dict)  # per-client measurements kept in the HDF5 file:
    #                                 'c1', 'c2', 'guiding_norm' (the schema's columns)
    guiding_sum: torch.Tensor | None = None  # [d], for rules behind DiverseFL (RoundView.guiding_sum)
    unverified: torch.Tensor | None = None  # [n, d], for rules that keep it (RoundView.unverified)


class Filter:
    """Base of every filter; ``Params`` is its dataclass in ``aggregator.params``. ``rule`` is the rule behind it
    (a filter may honour what the rule declares in its ``needs``)."""

    Params: ClassVar[type] = NoParams

    def __init__(self, params: object, n: int, rule: Rule) -> None:
        self.params, self.n, self.rule = params, n, rule

    def check_data(self, client_sizes: list[int]) -> None:
        """Raise ConfigError when the partition cannot give the filter what it needs (e.g. a sample larger than a
        client's data); run on every rank before round 1."""

    def prepare(self, setup: FilterSetup) -> None:
        """Take what the filter needs before training (rank 0 only)."""

    def judge(self, view: FilterView) -> Verdict:
        raise NotImplementedError

    def public_test(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
        """The filter's per-client test, public so that attacks tuned against it can optimise it: (z [b, d],
        guiding [b, d]) -> (accepted [b], the rows the rule would use [b, d]); None for filters without one."""
        return None
