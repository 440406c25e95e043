"""Coordinate-wise Median and TrMean against ByzFL 0.0.11 on seeded matrices with adversarial rows.

ByzFL's Median is NumPy/torch's median of the rows (for an even count the mean of the two middle values, as in docs/paper-notes.md
and mpifl); its TrMean(f) drops f values from each end, ours floor(beta k): the tests pass f = floor(beta k).
"""

import math

import pytest
import torch

from mpifl.rules.columns import coordinate_median, trimmed_mean

from .rule_matrices import rows

byzfl = pytest.importorskip("byzfl")


@pytest.mark.parametrize("k", [10, 11])  # even and odd counts
@pytest.mark.parametrize("attack", ["none", "scaled", "far"])
@pytest.mark.parametrize("seed", range(3))
def test_median_equals_byzfl(seed: int, attack: str, k: int):
    x = rows(seed, attack, k=k)
    torch.testing.assert_close(coordinate_median(x), torch.as_tensor(byzfl.Median()(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.2, 0.3])
@pytest.mark.parametrize("attack", ["none", "scaled", "far"])
@pytest.mark.parametrize("seed", range(3))
def test_trimmed_mean_equals_byzfl_with_f_floor_beta_k(seed: int, attack: str, beta: float):
    x = rows(seed, attack, k=20)
    f = math.floor(beta * 20)
    torch.testing.assert_close(trimmed_mean(x, beta), torch.as_tensor(byzfl.TrMean(f=f)(x)), rtol=1e-5, atol=1e-5)
