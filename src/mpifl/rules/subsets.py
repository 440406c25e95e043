"""MDA and SMEA: search every subset of k − f usable updates for the tightest one, average it.

Both rules choose among all C(k, f) subsets of k − f rows (the problem is NP-hard in general, so ByzFL 0.0.11
enumerates them too); subsets are scored a chunk at a time from one float64 Gram matrix of the usable rows, so a
subset costs O((k − f)²) instead of a pass over its d coordinates. Subsets come in the lexicographic order of
``itertools.combinations`` and ties go to the first, as in ByzFL (strict ``<``).

References
    MDA: E. M. El Mhamdi, R. Guerraoui, A. Guirguis, L. N. Hoang, S. Rouault, "Genuinely distributed Byzantine
         machine learning", PODC 2020, arXiv:1905.03853 (minimum-diameter averaging; the reference ByzFL cites).
    SMEA: Y. Allouah, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan, "On the privacy-robustness-utility trilemma in
         distributed learning", ICML 2023, arXiv:2302.04787 (smallest maximum eigenvalue averaging).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import register
from ..rng import Purpose, generator
from .base import Decision, RoundView, Rule, TooFewUpdates, too_few
from .columns import gram64, masked_mean
from .krum import squared_distances

MAX_SUBSETS = 1_000_000  # C(k, f) above this is refused at config time: the search would dominate every round
CHUNK_ENTRIES = 1 << 22  # [chunk, m, m] float64 entries of one chunk of subsets (32 MiB)


@dataclass(frozen=True)
class SubsetParams:
    f: int = 1  # Byzantine updates tolerated: subsets of k − f rows; a round needs more than 2f usable updates

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ConfigError(f"aggregator.params.f={self.f} must be >= 0: it is the number of Byzantine updates "
                              "tolerated.")


def check_majority(rule: str, f: int, k: int, why: str) -> None:
    """The config-time bound of a rule that needs an honest majority: more than 2f rows."""
    if k <= 2 * f:
        raise too_few(f"{rule} with aggregator.params.f={f}", f"more than 2f = {2 * f}", k, why)


def check_subsets(rule: str, f: int, k: int, why: str) -> None:
    """Config-time bounds of a subset search: more than 2f rows, and at most :data:`MAX_SUBSETS` subsets."""
    check_majority(rule, f, k, why)
    if math.comb(k, f) > MAX_SUBSETS:
        raise ConfigError(f"{rule} with aggregator.params.f={f} searches C({k}, {f}) = {math.comb(k, f)} subsets a "
                          f"round ({why}), more than {MAX_SUBSETS}; lower f or use fewer clients per round.")


def subset_chunks(k: int, m: int, device: torch.device, width: int = 1) -> Iterator[torch.Tensor]:
    """Every m-subset of range(k) in ``itertools.combinations`` order, as [chunk, m] int64 tensors; a chunk holds at
    most :data:`CHUNK_ENTRIES` entries of [m, m] blocks or of ``width``-long rows."""
    chunk = max(1, CHUNK_ENTRIES // max(m * m, width, 1))
    combos = itertools.combinations(range(k), m)
    while block := list(itertools.islice(combos, chunk)):
        yield torch.as_tensor(np.array(block, dtype=np.int64).reshape(len(block), m), device=device)


def argmin_subset(k: int, m: int, device: torch.device, score: Callable[[torch.Tensor], torch.Tensor],
                  width: int = 1) -> torch.Tensor:
    """The m-subset [m] with the lowest ``score`` (chunk [c, m] -> [c] float64); ties: the first in order."""
    best, best_score = None, math.inf
    for subsets in subset_chunks(k, m, device, width):
        scores = score(subsets)
        i = int(torch.argmin(scores))  # the first minimum of the chunk
        if float(scores[i]) < best_score:
            best, best_score = subsets[i], float(scores[i])
    return best if best is not None else torch.arange(m, device=device)  # every score NaN: the first subset


def block(matrix: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
    """[c, m, m]: the rows and columns of ``matrix`` [k, k] that each subset [c, m] selects."""
    return matrix[subsets[:, :, None], subsets[:, None, :]]


def decide(view: RoundView, index: torch.Tensor, chosen: torch.Tensor) -> Decision:
    """The mean of the usable rows ``index[chosen]``, as a Decision over all n clients (weight 1/m each)."""
    accepted = torch.zeros_like(view.valid)
    accepted[index[chosen]] = True
    return Decision(masked_mean(view.z, accepted), accepted, accepted.to(torch.float32) / len(chosen))


def usable(view: RoundView, rule: str, f: int) -> torch.Tensor | None:
    """The indices of the usable rows; None when there are none; TooFewUpdates when 2f ≥ k."""
    index = torch.nonzero(view.valid).squeeze(1)
    k = index.shape[0]
    if k == 0:
        return None
    if 2 * f >= k:
        raise TooFewUpdates(f"{rule} needs more than 2f usable updates: aggregator.params.f={f} allows at least "
                            f"{2 * f + 1}, this round has {k}; lower f.")
    return index


def empty(view: RoundView) -> Decision:
    return Decision(None, view.valid.clone(), torch.zeros(view.valid.shape, device=view.z.device))


@register("rule", "mda")
class MinimumDiameterAveraging(Rule):
    """MDA (El Mhamdi et al., PODC 2020, arXiv:1905.03853): the mean of the k − f usable updates whose
    diameter (largest pairwise Euclidean distance) is smallest; ByzFL 0.0.11's ``MDA(f)``.

    Diameters are compared squared, in float64 (:func:`mpifl.rules.krum.squared_distances`); ByzFL compares float32
    ``cdist`` distances, so only subsets whose diameters agree to ~1e-7 relative may be ordered differently.
    """

    Params = SubsetParams

    @classmethod
    def check_rows(cls, params: SubsetParams, k: int, why: str) -> None:
        check_subsets("mda", params.f, k, why)

    def aggregate(self, view: RoundView) -> Decision:
        index = usable(view, "MDA", self.params.f)
        if index is None:
            return empty(view)
        k = index.shape[0]
        distances = squared_distances(view.z, view.valid)
        chosen = argmin_subset(k, k - self.params.f, view.z.device,
                               lambda subsets: block(distances, subsets).flatten(1).amax(dim=1))
        return decide(view, index, chosen)


@register("rule", "smea")
class SmallestMaxEigenvalueAveraging(Rule):
    """SMEA (Allouah et al., ICML 2023, arXiv:2302.04787): the mean of the k − f usable updates whose empirical
    covariance has the smallest largest eigenvalue; ByzFL 0.0.11's ``SMEA(f)``.

    As ByzFL, each subset's eigenvalue is one power-iteration step from its own random unit vector v (a fresh
    ``randn(d)`` per subset, in subset order): λ ≈ ‖Dᵀ D v‖ with D the subset's centred rows. Here ‖Dᵀu‖² = uᵀ G u
    for u = D v (centred, so the centring of the Gram block G drops out), so a subset costs one product X v and an
    [m, m] form. The vectors are drawn on the CPU from ``mpifl.rng.generator(seed, Purpose.RULE, round)`` and moved to
    the device; seeding torch's global generator with that key makes ByzFL draw the same ones.
    """

    Params = SubsetParams

    @classmethod
    def check_rows(cls, params: SubsetParams, k: int, why: str) -> None:
        check_subsets("smea", params.f, k, why)

    def aggregate(self, view: RoundView) -> Decision:
        index = usable(view, "SMEA", self.params.f)
        if index is None:
            return empty(view)
        k, d = index.shape[0], view.z.shape[1]
        rows = view.z if k == view.z.shape[0] else view.z[index]
        gram = gram64(rows)
        draws = generator(view.seed, Purpose.RULE, view.round)

        def eigenvalues(subsets: torch.Tensor) -> torch.Tensor:
            v = torch.empty((subsets.shape[0], d), device="cpu")  # drawn on the CPU (mpifl.rng), then moved
            for row in v:  # one draw per subset, in order: ByzFL's sequence of randn(d) calls
                torch.randn(d, generator=draws, out=row)
            v = (v / torch.linalg.vector_norm(v, dim=1, keepdim=True)).to(rows.device)
            projected = (rows @ v.T).to(torch.float64)  # [k, c]: X v for every subset's v
            u = projected.gather(0, subsets.T).T  # [c, m]: the subset's rows of its own X v
            u = u - u.mean(dim=1, keepdim=True)
            return torch.einsum("ci,cij,cj->c", u, block(gram, subsets), u).clamp_min(0).sqrt()

        return decide(view, index, argmin_subset(k, k - self.params.f, view.z.device, eigenvalues, width=d))
