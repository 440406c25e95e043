"""Bulyan: Krum selection followed by a coordinate-wise mean around the median."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from . import coordinatewise
from .base import Decision, RoundView, Rule, TooFewUpdates, too_few
from .krum import squared_distances
from ..registry import register


@dataclass(frozen=True)
class BulyanParams:
    f: int = 1  # the number of Byzantine rows to tolerate; needs k >= 4f + 3 usable rows

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ConfigError(f"aggregator.params.f={self.f} must be >= 0.")


def krum_scores(distances: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of each row of the squared-distance matrix [m, m]: the sum of its m − f − 2 smallest distances to
    the other rows, and at least one, so the score still ranks rows once the set has shrunk below 2f + 3."""
    m = distances.shape[0]
    neighbours = min(max(m - f - 2, 1), m - 1)
    if neighbours == 0:
        return distances.diagonal().clone()
    others = distances + torch.diag(torch.full((m,), float("inf"), dtype=distances.dtype, device=distances.device))
    return torch.sort(others, dim=1).values[:, :neighbours].sum(dim=1)


def krum_selection(z: torch.Tensor, f: int, count: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Indices into the rows of ``z`` selected by ``rows`` ([n] bool; None: all) of ``count`` rows picked by repeated
    Krum, in the order picked: each pick is Krum on the rows not yet picked (distances are computed once, float64
    as Krum's, and restricted). Ties go to the lowest row index."""
    distances = squared_distances(z, rows)
    remaining = torch.arange(distances.shape[0], device=z.device)
    picked = []
    for _ in range(count):
        best = int(torch.argmin(krum_scores(distances[remaining][:, remaining], f)))
        picked.append(remaining[best])
        remaining = torch.cat([remaining[:best], remaining[best + 1:]])
    return torch.stack(picked)


CPU_BAND = 16384  # columns per band on the CPU: a band of the selected rows and its temporaries stay in cache


def mean_around_median(z: torch.Tensor, rows: torch.Tensor, beta: int) -> torch.Tensor:
    """Per coordinate, the mean of the ``beta`` values closest to the coordinate median among the rows of ``z``
    with the indices ``rows`` (ascending); ties in the distance keep the earlier row.

    The median is :func:`mpifl.rules.coordinatewise.median`. The other len(rows) − beta values per coordinate are
    dropped one at a time, the farthest first, a band of columns at a time, so nothing as large as the selected rows
    is sorted or copied. Each value's key is its distance's float32 bits (a non-negative float orders as its bits)
    times the row count plus its position: keys are distinct and order like a stable sort by distance, so the
    largest key below the last one dropped is exactly the value that sort puts next from the end."""
    mask = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    mask[rows] = True
    median = coordinatewise.median(z, mask)
    count, d = len(rows), z.shape[1]
    position = torch.arange(count, device=z.device).unsqueeze(1)
    band = CPU_BAND if z.device.type == "cpu" else d
    out = torch.empty(d, dtype=z.dtype, device=z.device)
    for lo in range(0, d, band):
        values = z[rows, lo:lo + band]
        gap = (values - median[lo:lo + band]).abs_()
        keys = gap.view(torch.int32).to(torch.int64).mul_(count).add_(position)
        limit = None  # per column, the smallest key dropped so far: keys below it are kept
        for _ in range(count - beta):
            limit = (keys if limit is None else torch.where(keys < limit, keys, -1)).amax(dim=0)
        kept = values if limit is None else values.mul_(keys < limit)
        out[lo:lo + band] = kept.sum(dim=0).div_(beta)
    return out


@register("rule", "bulyan")
class Bulyan(Rule):
    """Bulyan [El Mhamdi, Guerraoui, Rouault, "The hidden vulnerability of distributed learning in Byzantium", ICML
    2018, arXiv:1802.07927].

    From the k usable rows, Krum (Blanchard et al., NeurIPS 2017) picks θ = k − 2f rows one at a time, each pick
    removed before the next; then each coordinate averages the β = θ − 2f picked values closest to that coordinate's
    median. Bulyan needs k ≥ 4f + 3 (a ValueError otherwise, naming f and the bound).

    Choices where the paper leaves room: a Krum score sums the squared distances to the |R| − f − 2 nearest other rows
    of the remaining set R, as in Krum, but at least one neighbour, since late picks at k = 4f + 3 have
    |R| − f − 2 < 1 and a sum over no neighbours would rank nothing; pairwise distances are computed once (float64,
    as Krum's) and restricted to R. The median of an even number of values is the mean of the two middle ones
    (:func:`mpifl.rules.columns.coordinate_median`). Ties (equal Krum scores, equal distances to the median) go to the
    lower client index. ``accepted`` is the Krum-picked set; its ``weight`` is NaN because each
    coordinate averages its own β clients, and 0 for clients not picked.
    """

    Params = BulyanParams

    @classmethod
    def check_rows(cls, params: BulyanParams, k: int, why: str) -> None:
        if k < 4 * params.f + 3:
            raise too_few(f"bulyan with aggregator.params.f={params.f}", f"at least 4f + 3 = {4 * params.f + 3}", k, why)

    def aggregate(self, view: RoundView) -> Decision:
        device, n, f = view.z.device, view.z.shape[0], self.params.f
        usable = torch.nonzero(view.valid).squeeze(1)
        k = usable.shape[0]
        if k == 0:
            return Decision(None, view.valid.clone(), torch.zeros(n, device=device))
        if k < 4 * f + 3:
            raise TooFewUpdates(f"bulyan: aggregator.params.f={f} needs at least 4f + 3 = {4 * f + 3} usable rows, "
                             f"got {k}; lower f or use more clients.")
        theta = k - 2 * f
        clients = usable[krum_selection(view.z, f, theta, view.valid)]
        direction = mean_around_median(view.z, torch.sort(clients).values, theta - 2 * f)
        accepted = torch.zeros(n, dtype=torch.bool, device=device)
        accepted[clients] = True
        weight = torch.zeros(n, device=device).masked_fill(accepted, float("nan"))
        return Decision(direction, accepted, weight)
