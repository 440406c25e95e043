"""FLTrust: trust scores from the cosine to a gradient on the server's own root data."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .base import Decision, Needs, Rule, RoundView
from ..registry import register


@dataclass(frozen=True)
class FLTrustParams:
    root_size: int = 100  # server root-data points; read by the server set-up that builds server_gradient

    def __post_init__(self) -> None:
        if self.root_size < 1:
            raise ConfigError(f"aggregator.params.root_size={self.root_size} must be >= 1.")


@register("rule", "fltrust")
class FLTrust(Rule):
    """FLTrust [Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust federated learning via trust bootstrapping", NDSS
    2021, arXiv:2012.13995].

    The server computes g0 on its root data at θ; client i's trust score is TS_i = ReLU(cos(x_i, g0)); each x_i is
    rescaled to ‖g0‖ and the direction is Σ TS_i x̄_i / Σ TS_i.

    Choices where the paper leaves room: the cosine of a zero vector (x_i = 0 or g0 = 0) is taken as 0, so such a
    client gets no trust; when Σ TS_i = 0 (no client points within 90° of g0) there is no step (direction None,
    nobody accepted) rather than a step along g0 alone. ``accepted`` is TS_i > 0 and ``weight`` is TS_i / Σ TS_j, the
    share of client i's rescaled update in the direction.
    """

    Params = FLTrustParams
    needs = Needs(server_data=True)

    def aggregate(self, view: RoundView) -> Decision:
        device, n = view.z.device, view.z.shape[0]
        rows = view.z[view.valid]
        if rows.shape[0] == 0:
            return Decision(None, view.valid.clone(), torch.zeros(n, device=device))
        if view.server_gradient is None:
            raise ValueError("fltrust needs RoundView.server_gradient (the gradient on the server's root data).")
        g0 = view.server_gradient(view.theta).to(rows.dtype)
        g0_norm = torch.linalg.vector_norm(g0)
        norms = torch.linalg.vector_norm(rows, dim=1)
        scale = norms * g0_norm
        trust = torch.relu(torch.where(scale > 0, rows @ g0 / scale, 0.0))
        total = trust.sum()
        weight = torch.zeros(n, device=device)
        weight[view.valid] = trust / total if total > 0 else trust
        accepted = weight > 0
        if not total > 0:
            return Decision(None, accepted, weight)
        rescale = torch.where(norms > 0, g0_norm / norms, 0.0)
        return Decision((weight[view.valid] * rescale) @ rows, accepted, weight)
