"""What a server-side rule sees and what it decides: the interface every rule, built in or plugged in, implements.

A rule sees what a real server knows: the round's screened updates, which rows it may use, θ, the round number and,
for rules that have one (FLTrust), a gradient on the server's own data. Only a rule whose :class:`Needs` say ``truth``
(OracleSGD) is given the simulator's ground truth about who is Byzantine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import NoParams


def too_few(rule: str, bound: str, k: int, why: str) -> ConfigError:
    """The config-time error of a rule whose parameters need more rows than a round can bring (``bound``: e.g.
    'more than 2f + 2 = 52')."""
    return ConfigError(f"{rule} needs {bound} usable updates a round, but at most {k} reach it ({why}); lower the "
                       "parameter or use more clients.")


class TooFewUpdates(ValueError):
    """A round left fewer usable updates than the rule's parameters need (Krum's 2f + 2, Bulyan's 4f + 3, …); the
    server then skips the step for that round instead of stopping the run."""


@dataclass(frozen=True)
class Needs:
    """What a rule needs beyond the round's update matrix, declared once and read by :mod:`mpifl.build` alone."""

    truth: bool = False  # OracleSGD: RoundView.byzantine, the simulator's ground truth
    server_data: bool = False  # FLTrust: RoundView.server_gradient, a gradient on rank 0's own root data
    filter: str | None = None  # DiverseFL: the filter that choosing the rule turns on
    clients: str = "gradient"  # the client side (registry kind 'clients'): 'noisy' for Noisy Median, 'model_copies'
    #                            for RSA; those clients read the rule's own Params
    reshapes: bool = False  # diversefl_plus: DiverseFL's filter rebuilds rows with Rule.reshape / Rule.split
    tolerated_flags: int = 0  # DiverseFL flag bits (mpifl.screening) the rule handles itself instead of rejecting


@dataclass(frozen=True)
class RoundView:
    """One round as the server sees it; every tensor on the rank's device."""

    z: torch.Tensor  # [n, d] float32 updates; rows outside ``valid`` are zero and must be ignored
    valid: torch.Tensor  # [n] bool: rows that passed screening (and filters) and whose client took part
    theta: torch.Tensor  # [d] the model the updates were computed at
    round: int
    seed: int = 0  # the run's seed: a rule's random draws use mpifl.rng.generator(seed, Purpose.RULE, round)
    server_gradient: Callable[[torch.Tensor], torch.Tensor] | None = None  # θ → [d] gradient on the server's data
    byzantine: torch.Tensor | None = None  # [n] bool ground truth; only for rules whose needs.truth
    guiding_sum: torch.Tensor | None = None  # [d] sum of the round's guiding gradients; for rules behind DiverseFL
    unverified: torch.Tensor | None = None  # [n, d] the part of each rebuilt row the server cannot check (rules that
    #                                         keep_unverified); rows outside ``valid`` must be ignored
    guiding_norm: torch.Tensor | None = None  # [n] ||g~_j|| for rules behind DiverseFL (NaN where not computed)
    update_norm: torch.Tensor | None = None  # [n] ||z_j|| as the client sent it, before any filter rebuilt the row


@dataclass(frozen=True)
class Decision:
    """What a rule did with one round: the step direction (None: no step) and, per client, what it used."""

    direction: torch.Tensor | None  # [d]
    accepted: torch.Tensor  # [n] bool: the client's update entered the direction
    weight: torch.Tensor  # [n] float32: the client's share of the direction (0: not used; NaN: not defined, e.g.
    #                       coordinate-wise rules where every coordinate picks its own clients)


class Rule:
    """Base of every rule: ``aggregate(view) -> Decision``; ``Params`` is the dataclass of ``aggregator.params``.

    ``state_dict``/``load_state_dict`` carry state between rounds (momentum, a previous direction) through
    checkpoints, so a resumed run stays bit-identical.
    """

    Params: ClassVar[type] = NoParams
    needs: ClassVar[Needs] = Needs()
    keeps_unverified: bool = False  # diversefl_plus: the server hands aggregate the rows' unverified parts

    def __init__(self, params: object, n: int) -> None:
        self.params, self.n = params, n

    @classmethod
    def check_rows(cls, params: object, k: int, why: str) -> None:
        """Raise ConfigError when ``params`` cannot work even with the most rows a round can bring, ``k`` (every
        client that takes part, all valid; ``why`` says where k comes from, for the message)."""

    @classmethod
    def check_pre(cls, params: object, pre: list[str]) -> None:
        """Raise ConfigError when the rule with ``params`` cannot run behind the pre-aggregators ``pre`` (whose
        rows mix clients); config validation calls it, so the run stops before it starts."""

    def aggregate(self, view: RoundView) -> Decision:
        raise NotImplementedError

    def reshape(self, z: torch.Tensor, guiding: torch.Tensor) -> torch.Tensor:
        """Rows [k, d] rebuilt from the updates and their guiding gradients, for rules whose ``needs.reshapes``;
        the server calls it a chunk of clients at a time, after DiverseFL's criteria are taken."""
        raise NotImplementedError

    def split(self, z: torch.Tensor, guiding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(:meth:`reshape`'s rows, the part [k, d] of them that their guiding gradients do not vouch for), for rules
        that ``keeps_unverified``: one rebuild serves both, a chunk at a time."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned (nothing to restore for stateless rules)."""


class PreAggregator:
    """A step between screening and the rule that maps the usable rows [k, d] to new rows [k', d] (NNM, bucketing)."""

    Params: ClassVar[type] = NoParams

    def __init__(self, params: object, n: int) -> None:
        self.params, self.n = params, n

    @classmethod
    def check_rows(cls, params: object, k: int, why: str) -> None:
        """As :meth:`Rule.check_rows`, for the ``k`` rows reaching this step."""

    @classmethod
    def rows_out(cls, params: object, k: int) -> int:
        """How many rows the step makes of ``k`` (the rule behind it sees that many)."""
        return k

    def transform(self, rows: torch.Tensor, round_: int, seed: int) -> torch.Tensor:
        raise NotImplementedError


def weights_of(accepted: torch.Tensor) -> torch.Tensor:
    """Equal shares 1/|A| for the accepted clients, 0 for the others (the weight of a plain mean)."""
    count = int(accepted.sum())
    return accepted.to(torch.float32) / max(count, 1)


def undefined_weights(n: int, device: torch.device) -> torch.Tensor:
    """NaN weights, for rules that mix clients per coordinate."""
    return torch.full((n,), float("nan"), device=device)
