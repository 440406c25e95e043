"""Pre-aggregators that bound each row's norm: static clipping and ARC (adaptive robust clipping).

References
    Static clipping: ByzFL 0.0.11's ``Clipping(c)`` (min(1, c/‖x‖)·x); ARC: Y. Allouah, R. Guerraoui, N. Gupta,
    A. Jellouli, G. Rizk, J. Stephan, "The Vital Role of Gradient Clipping in Byzantine-Resilient Distributed
    Learning", arXiv:2405.14432, 2024.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..registry import register
from .base import PreAggregator, TooFewUpdates, too_few


def clip_rows(rows: torch.Tensor, norms: torch.Tensor, threshold: torch.Tensor | float,
              which: torch.Tensor | None = None) -> torch.Tensor:
    """Rows whose norm exceeds ``threshold`` scaled to norm ``threshold`` (only the rows ``which`` [k] bool, None:
    all); the others unchanged."""
    over = norms > threshold if which is None else which & (norms > threshold)
    scale = torch.where(over, threshold / torch.where(over, norms, 1.0), 1.0)
    return rows * scale[:, None]


@dataclass(frozen=True)
class ClippingParams:
    threshold: float = 2.0  # ByzFL's c: rows longer than this are scaled down to it

    def __post_init__(self) -> None:
        if not self.threshold >= 0:
            raise ConfigError(f"aggregator.params.threshold={self.threshold} must be >= 0.")


@register("pre", "clipping")
class Clipping(PreAggregator):
    """Static clipping, ByzFL 0.0.11's ``Clipping(c)`` with c = ``threshold``: x ← min(1, c/‖x‖)·x for every row.

    ByzFL 0.0.11 has no adaptive threshold for ``Clipping`` (c must be a float; ``c=None`` raises); the adaptive
    variant is ARC (``arc``). The parameter is ``threshold``, not ByzFL's ``c``, because ``aggregator.params`` is one
    flat mapping and ``c`` is DnC's filtering fraction.
    """

    Params = ClippingParams

    def transform(self, rows: torch.Tensor, round_: int, seed: int) -> torch.Tensor:
        return clip_rows(rows, torch.linalg.vector_norm(rows, dim=1), self.params.threshold)


@dataclass(frozen=True)
class ArcParams:
    f: int = 1  # Byzantine rows expected: the floor(2f(k − f)/k) longest rows are clipped

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ConfigError(f"aggregator.params.f={self.f} must be >= 0.")


@register("pre", "arc")
class AdaptiveRobustClipping(PreAggregator):
    """ARC (Allouah et al., arXiv:2405.14432), ByzFL 0.0.11's ``ARC(f)``: the m = floor(2f(k − f)/k) longest of the k
    rows are clipped to the norm of the (k − m)-th shortest. Ties in the norm order go to the lower row (ByzFL sorts
    (norm, index) pairs). f > k raises, as ByzFL does."""

    Params = ArcParams

    @classmethod
    def check_rows(cls, params: ArcParams, k: int, why: str) -> None:
        if params.f > k:
            raise too_few(f"arc with aggregator.params.f={params.f}", f"at least f = {params.f}", k, why)

    def transform(self, rows: torch.Tensor, round_: int, seed: int) -> torch.Tensor:
        k, f = rows.shape[0], self.params.f
        if k == 0:
            return rows
        if f > k:
            raise TooFewUpdates(f"ARC with aggregator.params.f={f} needs at least {f} usable updates, this round has "
                                f"{k}.")
        clipped = int((2 * f / k) * (k - f))
        norms = torch.linalg.vector_norm(rows, dim=1)
        order = torch.sort(norms, stable=True).indices
        longest = torch.zeros(k, dtype=torch.bool, device=rows.device)
        longest[order[k - clipped:]] = True
        return clip_rows(rows, norms, norms[order[k - clipped - 1]], longest)
