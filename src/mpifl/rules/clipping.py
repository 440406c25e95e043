"""Centered clipping: move the previous round's output towards the updates, each pull clipped to length tau.

Reference
    S. P. Karimireddy, L. He, M. Jaggi, "Learning from history for Byzantine robust optimization", ICML 2021,
    arXiv:2012.10333.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..screening import banded_norms
from .base import Decision, RoundView, Rule
from ..registry import register


@dataclass(frozen=True)
class ClippingParams:
    tau: float = 1.0  # clipping radius around the current centre
    iterations: int = 1  # clipping steps per round (the paper's l; 1 in its experiments)

    def __post_init__(self) -> None:
        if self.tau < 0:
            raise ConfigError(f"aggregator.params.tau={self.tau} must be >= 0.")
        if self.iterations < 1:
            raise ConfigError(f"aggregator.params.iterations={self.iterations} must be >= 1.")


CPU_BAND = 16384  # columns per band on the CPU: a band of the k rows and their differences stay in cache


def centered_clip(rows: torch.Tensor, v: torch.Tensor, tau: float,
                  iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """v ← v + (1/k) Σ_i min(1, tau / ||x_i − v||) (x_i − v), ``iterations`` times, and each row's share [k] of the
    result: v_L = (1 − Σ share) v_0 + Σ share_i x_i, tracked through the recursion
    share ← share (1 − Σ c/k) + c/k (each step keeps 1 − Σ c_i/k of the old centre).

    Each step reads the rows twice: the norms ||x_i − v||, a band of columns at a time on the CPU
    (:func:`mpifl.screening.banded_norms`), then the step itself as one matrix-vector product per band,
    v (1 − Σ c_i/k) + Σ (c_i/k) x_i, which writes no [k, d] difference matrix."""
    k, d = rows.shape
    band = CPU_BAND if rows.device.type == "cpu" else d
    shares = torch.zeros(k, dtype=rows.dtype, device=rows.device)
    for _ in range(iterations):
        norms64 = banded_norms(rows, v, band)
        for j in (~torch.isfinite(norms64)).nonzero().flatten().tolist():  # float32 overflow (entries ≳ 1.8e19)
            norms64[j] = torch.linalg.vector_norm(rows[j].double() - v.double())
        norms = norms64.to(rows.dtype)
        factors = torch.where(norms > tau, tau / norms, 1.0)  # norms > tau ≥ 0: no division by zero
        pulls = factors / k
        keep = float(1 - pulls.sum())
        moved = torch.empty_like(v)
        for lo in range(0, d, band):
            torch.addmv(v[lo:lo + band], rows[:, lo:lo + band].T, pulls, beta=keep, out=moved[lo:lo + band])
        v = moved
        shares = shares * keep + pulls
    return v, shares


@register("rule", "centered_clipping")
class CenteredClipping(Rule):
    """Centered clipping (Karimireddy, He, Jaggi, ICML 2021, arXiv:2012.10333): starting from the previous round's
    output v (zero before the first round, as in ByzFL 0.0.11), v ← v + (1/k) Σ clip_tau(x_i − v), ``iterations``
    times. The same as ByzFL's ``CenteredClipping(L=iterations, tau=tau)`` called once per round.

    weight_j is client j's exact share of the direction (v_L = (1 − Σ weight) v_0 + Σ weight_j z_j; the rest is the
    previous output's), rather than NaN: it is the clip factor / k for one iteration. A round without usable updates
    leaves v unchanged. The state is v, saved as float32 NumPy and moved to the update device on the next round.
    """

    Params = ClippingParams

    def __init__(self, params: object, n: int) -> None:
        super().__init__(params, n)
        self._momentum: torch.Tensor | None = None  # v after the last round; None before the first

    def aggregate(self, view: RoundView) -> Decision:
        n, device = view.valid.shape[0], view.z.device
        index = torch.nonzero(view.valid).squeeze(1)
        if index.shape[0] == 0:
            return Decision(None, view.valid.clone(), torch.zeros(n, device=device))
        d = view.z.shape[1]
        if self._momentum is None:
            v = torch.zeros(d, dtype=view.z.dtype, device=device)
        elif self._momentum.shape != (d,):
            raise ValueError(f"centered_clipping: the saved momentum has shape {tuple(self._momentum.shape)}, "
                             f"the updates have {d} coordinates.")
        else:
            v = self._momentum.to(device)
        rows = view.z if index.shape[0] == n else view.z[index]  # all usable: no copy of Z
        v, shares = centered_clip(rows, v, self.params.tau, self.params.iterations)
        self._momentum = v
        weight = torch.zeros(n, device=device)
        weight[index] = shares
        return Decision(v.clone(), view.valid.clone(), weight)

    def state_dict(self) -> dict[str, np.ndarray]:
        if self._momentum is None:
            return {}
        return {"momentum": self._momentum.detach().cpu().numpy().astype(np.float32, copy=True)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        momentum = state.get("momentum")
        self._momentum = None if momentum is None else torch.from_numpy(np.array(momentum, dtype=np.float32))
