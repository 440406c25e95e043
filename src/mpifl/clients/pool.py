"""Any client's local data on demand, for workers that compute whichever clients a round gives them.

The training images stay where the dataset keeps them (MNIST and Fashion-MNIST are memory-mapped from their IDX
files), and a client is its index list into them: a worker reads the rows of the clients it is given, when it is
given them, so no rank holds the population's data.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.datasets import Dataset
from .gradient import ClientData


class ClientPool:
    """Client j's data as :class:`ClientData` on ``device``, built from the dataset and j's indices."""

    def __init__(self, ds: Dataset, parts: list[np.ndarray], batches: list[int], device: torch.device) -> None:
        self.ds, self.parts, self.batches, self.device = ds, parts, batches, device

    def get(self, j: int) -> ClientData:
        idx = torch.from_numpy(self.parts[j])
        return ClientData(j, self.ds.train_x[idx].to(self.device), self.ds.train_y[idx].to(self.device),
                          self.batches[j])
