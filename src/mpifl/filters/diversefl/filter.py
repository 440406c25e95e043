"""DiverseFL as a filter: the samples clients share before training, the guiding gradients on them each round, and
the test that accepts z_j only if C1 = sign(g~_j · z_j) > 0 and eps1 < C2 = ||z_j|| / ||g~_j|| < eps2.

S. Prakash, A. S. Avestimehr, "Mitigating Byzantine attacks in federated learning", arXiv:2010.07541. Before training
client j gives the server a tiny sample M_j^0 (``aggregator.params.sample_fraction`` or ``sample_size``); each round
the server computes the guiding gradient g~_j on it (:mod:`.guiding`) and takes C1 and C2 (:mod:`.criteria`). The rule
``diversefl`` implies this filter and averages what passes (eq. 13); ``aggregator.filters: [diversefl]`` puts the
same test in front of any rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...config import exactly_one
from ...data.partition import fraction_size
from ...errors import ConfigError
from ...registry import register
from ..base import Filter, FilterSetup, FilterView, Verdict
from .criteria import criteria, diversefl_flags, similarity
from .guiding import GuidingGradients, row_dots


@dataclass(frozen=True)
class Params:
    eps1: float = 0.5  # eps1 < C2 = ||z|| / ||g~|| < eps2 (eq. 12)
    eps2: float = 2.0
    sample_size: int | None = None  # points each client shares before training, or
    sample_fraction: float | None = 0.01  # that fraction of its data (exactly one of the two)

    def __post_init__(self) -> None:
        if self.eps1 < 0:
            raise ConfigError(f"aggregator.params.eps1={self.eps1} must be >= 0.")
        if self.eps1 >= self.eps2:
            raise ConfigError(f"aggregator.params.eps1={self.eps1} must be smaller than aggregator.params.eps2="
                              f"{self.eps2}: DiverseFL accepts eps1 < C2 < eps2.")
        exactly_one("aggregator.params", "sample_size", self.sample_size, "sample_fraction", self.sample_fraction)


def guiding_samples(setup: FilterSetup, params: Params, clients: list[int] | None = None) -> GuidingGradients:
    """The samples M_j^0 the ``clients`` (None: every client) share before training, each the client's own seeded
    draw (:meth:`mpifl.data.population.Population.sample`), so rank 0 holds exactly what client j would send. A client
    that is Byzantine from the start hands over what its attack's ``poison_sample`` makes of its labels."""
    population, scaling = setup.population, setup.scaling
    sizes = population.sizes()
    xs, ys = [], []
    for j in range(population.n) if clients is None else clients:
        s = fraction_size(int(sizes[j]), params.sample_size, params.sample_fraction)
        x, y = population.sample(j, s, setup.seed)
        xs.append(scaling(x.to(scaling.mean.device)))
        y = y.to(xs[-1].device)
        ys.append(setup.attack.poison_sample(y, population.num_classes) if j in setup.byzantine_from_start else y)
    return GuidingGradients(setup.flat, xs, ys)


class SampleSource:
    """DiverseFL's samples of a cross-device population, taken when a round needs them: the cohort's (the filter),
    or the round's Byzantine clients' (a white-box attacker). Nothing population-sized is held."""

    def __init__(self, setup: FilterSetup, params: Params) -> None:
        self.setup, self.params = setup, params

    def cohort(self, clients: torch.Tensor) -> GuidingGradients:
        return guiding_samples(self.setup, self.params, clients.tolist())

    def gradients(self, theta: torch.Tensor, clients: torch.Tensor) -> torch.Tensor:
        """[b, d] guiding gradients of ``clients`` (as :meth:`GuidingGradients.gradients`)."""
        rows = torch.arange(len(clients), device=theta.device)
        return self.cohort(clients).gradients(theta, rows)


@register("filter", "diversefl")
class DiverseFLFilter(Filter):
    """Accepts the rows that pass eqs. 11-12 against their guiding gradients, less the flag bits the rule behind it
    tolerates; rebuilds rows for a rule that reshapes them (``diversefl_plus``), a chunk of clients at a time."""

    Params = Params

    def __init__(self, params: Params, n: int, rule) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, n, rule)
        self.guiding: GuidingGradients | None = None
        self._rejects = 0xFF & ~rule.needs.tolerated_flags
        self._unverified: torch.Tensor | None = None  # reused across rounds: [n, d] is large

    def check_data(self, client_sizes: list[int]) -> None:
        size = self.params.sample_size
        if size is not None and size > min(client_sizes):
            raise ConfigError(f"aggregator.params.sample_size={size} exceeds the smallest client's "
                              f"{min(client_sizes)} points.")

    def prepare(self, setup: FilterSetup) -> None:
        """Every client's sample now, or (cross-device rounds) a source that takes the cohort's when it comes."""
        self.source = SampleSource(setup, self.params)
        self.guiding = None if setup.cross_device else guiding_samples(setup, self.params)

    @property
    def knowledge(self) -> GuidingGradients | SampleSource:
        """What a white-box attacker knows of the server's samples: their ``gradients(theta, clients)``."""
        return self.guiding if self.guiding is not None else self.source

    def judge(self, view: FilterView) -> Verdict:
        adjust, unverified = self._adjustment(view.z)
        guiding, clients = self.guiding, view.clients
        if guiding is None:  # a cross-device round: the cohort's samples, one row each, in the matrix's order
            assert clients is not None, "a cross-device round names its rows' clients"
            guiding, clients = self.source.cohort(clients), None
        dots, guiding_norm, guiding_sum = guiding.compare(view.theta, view.z, view.sampled, adjust, clients)
        c1, c2, bits = criteria(dots, view.update_norm, guiding_norm, view.usable, self.params.eps1,
                                self.params.eps2)
        accepted = view.usable & ((bits & self._rejects) == 0)
        return Verdict(accepted, bits, {"c1": c1, "c2": c2, "guiding_norm": guiding_norm}, guiding_sum, unverified)

    def _adjustment(self, z: torch.Tensor) -> tuple[Callable | None, torch.Tensor | None]:
        """The rule's reshaping as ``GuidingGradients.compare``'s ``adjust`` hook, and the buffer it fills with the
        rows' unverified parts when the rule keeps them (zero for the clients whose rows are not computed)."""
        rule = self.rule
        if not rule.needs.reshapes:
            return None, None
        if not rule.keeps_unverified:
            return (lambda clients, rows, guiding: rule.reshape(rows, guiding)), None
        if self._unverified is None or self._unverified.shape != z.shape or self._unverified.device != z.device:
            self._unverified = torch.zeros_like(z)
        unverified = self._unverified.zero_()

        def adjust(clients: slice | torch.Tensor, rows: torch.Tensor, guiding: torch.Tensor) -> torch.Tensor:
            rebuilt, unverified[clients] = rule.split(rows, guiding)
            return rebuilt

        return adjust, unverified

    def public_test(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The per-client test as the server applies it (eqs. 11-12 less the rule's tolerated flags, then its
        reshaping)."""
        return lambda z, guiding: client_test(self.rule, z, guiding, self.params.eps1, self.params.eps2)


def client_test(rule, z: torch.Tensor, guiding: torch.Tensor, eps1: float,  # type: ignore[no-untyped-def]
                eps2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-client test of ``rule`` behind DiverseFL's filter: ([k] accepted, the rows it would use). It is
    public: attacks tuned against the rule call it with their estimates of the guiding gradients."""
    norms = torch.linalg.vector_norm(guiding, dim=1)
    c1, c2 = similarity(row_dots(z, guiding), torch.linalg.vector_norm(z, dim=1), norms)
    accepted = (diversefl_flags(c1, c2, norms, eps1, eps2) & (0xFF & ~rule.needs.tolerated_flags)) == 0
    return accepted, rule.reshape(z, guiding) if rule.needs.reshapes else z
