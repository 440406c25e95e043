"""``diversefl_plus``: DiverseFL hardened against updates built to pass its test.

DiverseFL accepts z_j when C1 = sign(g~_j · z_j) > 0 and eps1 < ||z_j|| / ||g~_j|| < eps2, and then trusts all of
z_j. An attacker that knows the test (:mod:`mpifl.attacks.adaptive`) sends the length of its guiding gradient and a
small positive cosine with it, and puts the rest of its update against the honest clients' mean: every such update
passes, and the published rule ends at chance accuracy. What the server can trust is the guiding gradient it
computed itself, so this rule keeps the published samples, screening and flags, and trusts an update only as far as
it agrees with its guiding gradient:

1. Direction: a row is used when C1 = 1 (and g~_j != 0). C2 outside (eps1, eps2) stays in the flags, but a long row
   is clipped (3), not rejected: honest C2 grows during training, and an attack that pushes it past eps2 would get
   honest clients rejected while its own rows pass.
2. Cone: the component of z_j orthogonal to g~_j is cut to at most ``kappa`` times its component along g~_j (an
   update inside the cone of half-angle atan(kappa) around g~_j is unchanged; honest ones mostly are).
3. Length: the rebuilt row is clipped to ``clip`` * ||g~_j||.
4. Pooled direction (``pooled``): each row's component against the sum of all guiding gradients (the server's own
   estimate of the full gradient, from every client's sample) is removed.

Steps 2-3 run per chunk of clients while the server computes the guiding gradients (:meth:`reshape`), step 4 in
:meth:`aggregate`; the step is the mean of the rebuilt rows, as in eq. 13. Steps 1-3 are the rule's public per-client
test (:func:`mpifl.rules.diversefl.client_test`), which attacks tuned against it optimise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..aggregators import masked_mean
from .base import Decision, RoundView, Rule, weights_of
from ..screening import LENGTH
from .registry import register


def _positive(name: str, value: float) -> None:
    if not value > 0:
        from ..config import ConfigError

        raise ConfigError(f"aggregator.params.{name}={value} must be > 0.")


@dataclass(frozen=True)
class Params:
    kappa: float = 0.5  # orthogonal part <= kappa * parallel part: a cone of half-angle atan(kappa) around g~_j
    clip: float = 2.0  # a rebuilt row is at most clip * ||g~_j|| long
    pooled: bool = True  # drop each row's component against the summed guiding gradients

    def __post_init__(self) -> None:
        _positive("kappa", self.kappa)
        _positive("clip", self.clip)


@register("rule", "diversefl_plus")
class DiverseFLPlus(Rule):
    """The published test, then each accepted update confined to a cone around its guiding gradient, clipped to its
    length, and kept from pointing against the pooled guiding gradient; the mean of what remains."""

    Params = Params
    implies_filter = "diversefl"
    reshapes_updates = True
    tolerated_flags = LENGTH  # a long row is clipped, not rejected

    def reshape(self, z: torch.Tensor, guiding: torch.Tensor) -> torch.Tensor:
        p = self.params
        tiny = torch.finfo(z.dtype).tiny
        g_norm = torch.linalg.vector_norm(guiding, dim=1, keepdim=True)
        unit = guiding / g_norm.clamp_min(tiny)
        along = (z * unit).sum(dim=1, keepdim=True)
        across = z - along * unit
        across_norm = torch.linalg.vector_norm(across, dim=1, keepdim=True)
        cone = (p.kappa * along.clamp_min(0) / across_norm.clamp_min(tiny)).clamp(max=1.0)
        rows = along * unit + cone * across
        length = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
        return rows * (p.clip * g_norm / length.clamp_min(tiny)).clamp(max=1.0)

    def aggregate(self, view: RoundView) -> Decision:
        if not bool(view.valid.any()):
            return Decision(None, view.valid.clone(), torch.zeros(view.valid.shape, device=view.z.device))
        z = view.z
        if self.params.pooled and view.guiding_sum is not None:
            pooled = view.guiding_sum / torch.linalg.vector_norm(view.guiding_sum).clamp_min(1e-30)
            z = z - (z @ pooled).clamp(max=0.0)[:, None] * pooled
        return Decision(masked_mean(z, view.valid), view.valid.clone(), weights_of(view.valid))
