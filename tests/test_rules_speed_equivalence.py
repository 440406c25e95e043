"""The fast coordinate-wise kernels (mpifl.rules.coordinatewise) give bit for bit what the sort-based reference gives.

The reference is the straightforward arithmetic: copy the usable rows, ``torch.sort`` each column, take the middle
(mean of the two middle values for an even count) or average the ranks b..k−b−1 with ``mean(dim=0)`` (all rows in
their order when b = 0).
"""

from __future__ import annotations

import pytest
import torch

from mpifl.rules import coordinatewise


def reference_median(z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    ranked = torch.sort(z[valid], dim=0).values
    k = ranked.shape[0]
    return (ranked[(k + 1) // 2 - 1] + ranked[k // 2]) / 2


def reference_trimmed_mean(z: torch.Tensor, valid: torch.Tensor, beta: float) -> torch.Tensor:
    rows = z[valid]
    k = rows.shape[0]
    b = int(beta * k)
    if b == 0:  # nothing trimmed: the plain mean, in row order (mpifl.rules.columns.trimmed_mean)
        return rows.mean(dim=0)
    return torch.sort(rows, dim=0).values[b:k - b].mean(dim=0)


def matrix(n: int, d: int, seed: int, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((n, d), generator=g) * torch.logspace(-3, 3, n)[torch.randperm(n, generator=g)][:, None]
    if ties:  # few distinct values: many equal entries per column, and ±0
        z = torch.round(z.clamp(-2, 2) * 2) / 2
        z[0, ::3] = -0.0
    return z


def mask(n: int, seed: int, drop: int) -> torch.Tensor:
    valid = torch.ones(n, dtype=torch.bool)
    valid[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:drop]] = False
    return valid


def assert_bitwise(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    assert torch.equal(actual, expected), (actual - expected).abs().max()


CASES = [(n, d, drop) for n in (1, 2, 3, 7, 20, 21) for d in (1, 5, 1000) for drop in (0, 1)
         if n - drop >= 1] + [(20, coordinatewise.CPU_BAND * 2 + 37, 3), (100, 3001, 7), (64, 4099, 0)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n, d, drop", CASES)
def test_median_is_bitwise_the_sorted_middle(n: int, d: int, drop: int, ties: bool):
    z, valid = matrix(n, d, n * d, ties), mask(n, d, drop)
    z[~valid] = 0  # as the server hands them over: invalid rows zeroed, and ignored
    assert_bitwise(coordinatewise.median(z, valid), reference_median(z, valid))


@pytest.mark.parametrize("beta", [0.1, 0.2, 0.45])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n, d, drop", CASES)
def test_trimmed_mean_is_bitwise_the_mean_of_the_kept_ranks(n: int, d: int, drop: int, ties: bool, beta: float):
    z, valid = matrix(n, d, n + d, ties), mask(n, d + 1, drop)
    assert_bitwise(coordinatewise.trimmed_mean(z, valid, beta), reference_trimmed_mean(z, valid, beta))


@pytest.mark.parametrize("k", range(1, 70))
def test_network_sorts_every_row_count(k: int):
    x = torch.randn(k, 50, generator=torch.Generator().manual_seed(k))
    rows = list(x)
    for i, j in coordinatewise.merge_sort_network(k):
        rows[i], rows[j] = torch.minimum(rows[i], rows[j]), torch.maximum(rows[i], rows[j])
    assert torch.equal(torch.stack(rows), torch.sort(x, dim=0).values)


def test_more_rows_than_the_network_takes_fall_back_to_the_sort():
    n = coordinatewise.NETWORK_MAX_ROWS + 3
    z, valid = matrix(n, 40, 1), mask(n, 2, 1)
    assert_bitwise(coordinatewise.median(z, valid), reference_median(z, valid))
    assert_bitwise(coordinatewise.trimmed_mean(z, valid, 0.1), reference_trimmed_mean(z, valid, 0.1))


@pytest.mark.parametrize("threads", [1, 3])
def test_narrow_bands_and_threads_give_the_same_numbers(monkeypatch: pytest.MonkeyPatch, threads: int):
    """Bands of a few columns (the last one narrower), shared among threads, change neither the ranks nor the
    per-column sums."""
    z, valid = matrix(20, 1003, 5), mask(20, 6, 2)
    median, trimmed = reference_median(z, valid), reference_trimmed_mean(z, valid, 0.1)
    monkeypatch.setattr(coordinatewise, "CPU_BAND", coordinatewise.VECTOR_BLOCK)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert_bitwise(coordinatewise.median(z, valid), median)
        assert_bitwise(coordinatewise.trimmed_mean(z, valid, 0.1), trimmed)
    finally:
        torch.set_num_threads(previous)
