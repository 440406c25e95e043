"""An example plug-in filter: accept the rows whose cosine with the coordinate-wise median of the usable rows is above
``min_cosine``; the rule behind it sees only those.

    mpifl train --plugin examples/cosine_filter.py --set aggregator.name=mean --set "aggregator.filters=[cosine]"

Filters compose in the order listed: ``aggregator.filters=[cosine, diversefl]`` runs DiverseFL's test on the rows
this one let through. On non-IID shards (the paper's) honest gradients point in different directions and a
sign-flipped one need not oppose their median: that is the case DiverseFL's per-client guiding gradients are for.
"""

from dataclasses import dataclass

import torch

from mpifl.filters import Filter, FilterView, Verdict
from mpifl.registry import register


@dataclass(frozen=True)
class Params:
    min_cosine: float = 0.0


@register("filter", "cosine")
class CosineFilter(Filter):
    Params = Params

    def judge(self, view: FilterView) -> Verdict:
        if not bool(view.usable.any()):
            return Verdict(view.usable.clone())
        centre = view.z[view.usable].median(dim=0).values
        cosine = (view.z @ centre) / (view.update_norm * torch.linalg.vector_norm(centre)).clamp_min(1e-30)
        return Verdict(view.usable & (cosine > self.params.min_cosine))
