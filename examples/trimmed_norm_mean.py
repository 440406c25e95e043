"""An example plug-in rule: the mean of the updates whose norm is at most `factor` times the median norm.

    mpifl train --plugin examples/trimmed_norm_mean.py --set aggregator.name=norm_mean --set aggregator.params.factor=2
"""

from dataclasses import dataclass

import torch

from mpifl.registry import register
from mpifl.rules import Decision, RoundView, Rule


@dataclass(frozen=True)
class Params:
    factor: float = 2.0


@register("rule", "norm_mean")
class NormMean(Rule):
    Params = Params

    def aggregate(self, view: RoundView) -> Decision:
        norms = torch.linalg.vector_norm(view.z, dim=1)
        bound = self.params.factor * norms[view.valid].median() if view.valid.any() else 0.0
        accepted = view.valid & (norms <= bound)
        count = int(accepted.sum())
        weight = accepted.float() / max(count, 1)
        return Decision(view.z[accepted].mean(dim=0) if count else None, accepted, weight)
