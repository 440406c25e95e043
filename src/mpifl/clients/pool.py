"""Any client's local data on demand, for workers that compute whichever clients a round gives them.

The training images stay where the dataset keeps them (MNIST and Fashion-MNIST are memory-mapped from their IDX
files), and a client is its index list into them, or its seed for a generated population: a worker reads (or makes)
the data of the clients it is given, when it is given them, so no rank holds the population's data.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.population import Population
from .gradient import ClientData


class ClientPool:
    """Client j's data as :class:`ClientData` on ``device``, asked of the population when j is given to this rank
    (generated from the seed for a procedural population such as LEAF's Synthetic)."""

    def __init__(self, population: Population, batches: np.ndarray, device: torch.device) -> None:
        self.population, self.batches, self.device = population, batches, device

    def get(self, j: int) -> ClientData:
        x, y = self.population.client(j)
        return ClientData(j, x.to(self.device), y.to(self.device), int(self.batches[j]))
