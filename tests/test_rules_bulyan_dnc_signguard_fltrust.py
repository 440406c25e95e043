"""Bulyan, DnC, SignGuard and FLTrust against hand-computed cases and independent NumPy re-implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpifl.rng import Purpose, generator
from mpifl.rules.base import Decision, RoundView
from mpifl.rules import bulyan
from mpifl.rules.bulyan import Bulyan, krum_selection
from mpifl.rules.dnc import DivideAndConquer
from mpifl.rules.fltrust import FLTrust
from mpifl.registry import get
from mpifl.rules.signguard import SignGuard, largest_mean_shift_cluster, sign_features

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def view(z: np.ndarray | torch.Tensor, valid: list[bool] | None = None, round_: int = 0, seed: int = 0,
         g0: np.ndarray | None = None, device: str = "cpu") -> RoundView:
    """A RoundView with rows outside ``valid`` zeroed, as the server hands them on."""
    z = torch.as_tensor(z, dtype=torch.float32, device=device)
    mask = torch.ones(z.shape[0], dtype=torch.bool, device=device) if valid is None else torch.tensor(valid,
                                                                                                    device=device)
    z = z * mask.unsqueeze(1)
    server = None if g0 is None else (lambda theta: torch.as_tensor(g0, dtype=torch.float32, device=device))
    return RoundView(z, mask, torch.zeros(z.shape[1], device=device), round_, seed, server)


def rule(cls: type, n: int, **params: object):  # type: ignore[no-untyped-def]
    return cls(cls.Params(**params), n)


# ---------------------------------------------------------------------------------------------------------- FLTrust


def test_fltrust_hand_computed():
    # g0 = (2, 0): TS = ReLU(cos) = 0.6, 1, 0; rescaled to ||g0|| = 2: (1.2, 1.6), (2, 0); the 4th row is invalid.
    z = [[3.0, 4.0], [2.0, 0.0], [-1.0, 1.0], [5.0, 0.0]]
    d = rule(FLTrust, 4).aggregate(view(z, [True, True, True, False], g0=np.array([2.0, 0.0])))
    np.testing.assert_allclose(d.direction.numpy(), [(0.6 * 1.2 + 2.0) / 1.6, 0.6 * 1.6 / 1.6], rtol=1e-6)
    np.testing.assert_allclose(d.weight.numpy(), [0.6 / 1.6, 1 / 1.6, 0.0, 0.0], rtol=1e-6)
    assert d.accepted.tolist() == [True, True, False, False]


def test_fltrust_evaluates_the_server_gradient_at_theta():
    seen = []
    v = view([[1.0, 1.0]])
    v = RoundView(v.z, v.valid, torch.tensor([0.5, -0.5]), 3, 0, lambda theta: seen.append(theta) or theta)
    d = rule(FLTrust, 1).aggregate(v)
    assert torch.equal(seen[0], v.theta) and float(d.weight[0]) == 0.0 and d.direction is None  # cos = 0


@pytest.mark.parametrize("g0", [[1.0, 0.0], [0.0, 0.0]])
def test_fltrust_without_trust_takes_no_step(g0: list[float]):
    d = rule(FLTrust, 2).aggregate(view([[-1.0, 0.0], [-2.0, 1.0]], g0=np.array(g0)))
    assert d.direction is None and d.accepted.tolist() == [False, False] and d.weight.tolist() == [0.0, 0.0]


def test_fltrust_matches_numpy_and_needs_a_server_gradient():
    rng = np.random.default_rng(1)
    z, g0 = rng.normal(size=(9, 6)), rng.normal(size=6)
    cos = z @ g0 / (np.linalg.norm(z, axis=1) * np.linalg.norm(g0))
    ts = np.maximum(cos, 0)
    expected = (ts[:, None] * z * (np.linalg.norm(g0) / np.linalg.norm(z, axis=1))[:, None]).sum(0) / ts.sum()
    d = rule(FLTrust, 9).aggregate(view(z, g0=g0))
    np.testing.assert_allclose(d.direction.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.weight.numpy(), ts / ts.sum(), rtol=1e-5, atol=1e-7)
    assert FLTrust.needs.server_data
    with pytest.raises(ValueError, match="server_gradient"):
        rule(FLTrust, 9).aggregate(view(z))


# ----------------------------------------------------------------------------------------------------------- Bulyan


def numpy_bulyan(z: np.ndarray, f: int) -> tuple[np.ndarray, list[int]]:
    """Bulyan written out with loops: Krum with max(|R| − f − 2, 1) neighbours, then the β values nearest the median."""
    remaining, picked = list(range(len(z))), []
    for _ in range(len(z) - 2 * f):
        neighbours = max(len(remaining) - f - 2, 1)
        scores = [sum(sorted(float(((z[i] - z[j]) ** 2).sum()) for j in remaining if j != i)[:neighbours])
                  for i in remaining]
        picked.append(remaining.pop(int(np.argmin(scores))))
    chosen = z[sorted(picked)]
    beta = len(chosen) - 2 * f
    out = np.empty(z.shape[1])
    for u in range(z.shape[1]):
        column = chosen[:, u]
        nearest = np.argsort(np.abs(column - np.median(column)), kind="stable")[:beta]
        out[u] = column[nearest].mean()
    return out, sorted(picked)


def test_bulyan_hand_computed_7x3():
    # Collinear rows v·(1, 2, −1), v = 0, 1, 2, 3, 4, 50, −60. Krum (f = 1) picks v = 2 (score 1+1+4+4), then v = 1
    # (tie with v = 3 at 14, lower index), v = 3, v = 0 (tie with v = 4 at 16), v = 4: both outliers are dropped.
    # θ = 5, β = 3: per coordinate the values of v = 1, 2, 3 (nearest the median v = 2), mean 2·(1, 2, −1).
    v = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 50.0, -60.0])
    z = v[:, None] * np.array([1.0, 2.0, -1.0])
    d = rule(Bulyan, 7, f=1).aggregate(view(z))
    np.testing.assert_allclose(d.direction.numpy(), [2.0, 4.0, -2.0])
    assert d.accepted.tolist() == [True] * 5 + [False] * 2
    assert np.isnan(d.weight[:5].numpy()).all() and d.weight[5:].tolist() == [0.0, 0.0]
    assert krum_selection(torch.as_tensor(z, dtype=torch.float32), 1, 5).tolist() == [2, 1, 3, 0, 4]


@pytest.mark.parametrize(("k", "f", "d"), [(7, 1, 3), (11, 2, 5), (12, 2, 4)])
def test_bulyan_matches_numpy(k: int, f: int, d: int):
    z = np.random.default_rng(k).normal(size=(k, d))
    z[:f] += 8.0  # Byzantine rows far away
    expected, picked = numpy_bulyan(z.astype(np.float32).astype(np.float64), f)
    decision = rule(Bulyan, k, f=f).aggregate(view(z))
    np.testing.assert_allclose(decision.direction.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.flatnonzero(decision.accepted.numpy()).tolist() == picked
    honest = z[f:]  # clustered Byzantine rows may win late Krum picks; the median step still keeps them out
    assert (honest.min(0) <= decision.direction.numpy()).all() and (decision.direction.numpy() <= honest.max(0)).all()


def test_bulyan_mean_around_median_keeps_the_earlier_row_at_equal_distances(monkeypatch: pytest.MonkeyPatch):
    """Column 0: values 3, 1, 2 (median 2, distances 1, 1, 0): β = 2 keeps 2 and the earlier 3 → 2.5. Column 1: the
    same values with the tie the other way round → 1.5. Column 2: a stable sort by distance on a wider spread. Bands
    of 2 columns split the columns across calls."""
    monkeypatch.setattr(bulyan, "CPU_BAND", 2)
    z = torch.tensor([[3.0, 1.0, 7.0], [1.0, 3.0, -5.0], [2.0, 2.0, 1.0], [9.0, 9.0, 9.0]])
    got = bulyan.mean_around_median(z, torch.tensor([0, 1, 2]), 2)
    assert got.tolist() == [2.5, 1.5, 4.0]  # column 2: median 1, distances 6, 6, 0 → keep 1 and 7
    assert bulyan.mean_around_median(z, torch.tensor([0, 1, 2]), 3).tolist() == [2.0, 2.0, 1.0]


def test_bulyan_first_pick_is_byzfl_krum():
    """byzfl's Krum(f') scores by the n − f' − 1 nearest, i.e. Blanchard's n − f − 2 for f' = f + 1."""
    byzfl = pytest.importorskip("byzfl.aggregators.aggregators")  # test-only reference, slow to import
    rows = torch.as_tensor(np.random.default_rng(5).normal(size=(9, 4)), dtype=torch.float32)
    first = rows[krum_selection(rows, 2, 1)[0]]
    assert torch.equal(first, byzfl.Krum(3)(rows))


def test_bulyan_needs_4f_plus_3_rows():
    with pytest.raises(ValueError, match=r"f=2 needs at least 4f \+ 3 = 11 usable rows, got 10"):
        rule(Bulyan, 12, f=2).aggregate(view(np.ones((12, 3)), [True] * 10 + [False] * 2))
    with pytest.raises(ValueError, match="must be >= 0"):
        Bulyan.Params(f=-1)


# -------------------------------------------------------------------------------------------------------------- DnC


def numpy_dnc(z: np.ndarray, f: int, c: float, iterations: int, coordinates: list[np.ndarray]) -> np.ndarray:
    """DnC's good set by NumPy's SVD on the given coordinate subsets."""
    good = np.ones(len(z), dtype=bool)
    for cols in coordinates[:iterations]:
        sample = z[:, cols] - z[:, cols].mean(0)
        score = (sample @ np.linalg.svd(sample, full_matrices=False)[2][0]) ** 2
        good[np.argsort(-score, kind="stable")[:int(np.floor(c * f))]] = False
    return good


def test_dnc_removes_an_obvious_outlier():
    z = np.random.default_rng(0).normal(size=(7, 50)) * 0.1
    z[4] += 5.0
    d = rule(DivideAndConquer, 7, f=1).aggregate(view(z))
    assert d.accepted.tolist() == [True] * 4 + [False] + [True] * 2
    np.testing.assert_allclose(d.direction.numpy(), np.delete(z, 4, axis=0).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.weight.numpy(), [1 / 6] * 4 + [0.0] + [1 / 6] * 2)


def test_dnc_matches_numpy_on_the_seeded_coordinates():
    z = np.random.default_rng(2).normal(size=(10, 40)).astype(np.float32)
    z[:3, :20] += 1.5
    draws = generator(7, Purpose.RULE, 4)
    coordinates = [torch.randperm(40, generator=draws)[:8].numpy() for _ in range(3)]
    good = numpy_dnc(z.astype(np.float64), f=2, c=1.5, iterations=3, coordinates=coordinates)
    d = rule(DivideAndConquer, 10, f=2, c=1.5, iterations=3, subsample=8).aggregate(view(z, round_=4, seed=7))
    assert d.accepted.numpy().tolist() == good.tolist() and 7 - 3 <= good.sum() < 10 - 3 * 2 + 3
    np.testing.assert_allclose(d.direction.numpy(), z[good].mean(0), rtol=1e-5, atol=1e-6)


def test_dnc_bounds():
    with pytest.raises(ValueError, match=r"floor\(c·f\) = 3 rows .* got 3"):
        rule(DivideAndConquer, 5, f=2, c=1.5).aggregate(view(np.ones((5, 2)), [True] * 3 + [False] * 2))
    d = rule(DivideAndConquer, 3, f=2, c=0.0).aggregate(view([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]]))
    np.testing.assert_allclose(d.direction.numpy(), [3.0, 2.0])
    with pytest.raises(ValueError, match="iterations"):
        DivideAndConquer.Params(iterations=0)


# -------------------------------------------------------------------------------------------------------- SignGuard


def test_sign_features_and_clustering():
    np.testing.assert_allclose(sign_features(torch.tensor([[1.0, 0.0, -2.0, 3.0]])).numpy(), [[0.5, 0.25, 0.25]])
    points = torch.tensor([[0.0], [0.01], [0.02], [0.03], [1.0], [1.01]], dtype=torch.float64)
    assert largest_mean_shift_cluster(points).tolist() == [True] * 4 + [False] * 2


def test_signguard_rejects_flipped_signs_and_a_large_norm():
    rng = np.random.default_rng(3)
    honest = 1.0 + 0.5 * rng.normal(size=(6, 200))  # about 98% positive entries
    z = np.vstack([honest[:3], -honest[3], honest[4:], 10.0 * honest[0]])  # row 3 flipped, row 6 ten times longer
    d = rule(SignGuard, 7, coordinates=0.5).aggregate(view(z, round_=2))
    assert d.accepted.tolist() == [True, True, True, False, True, True, False]
    norms = np.linalg.norm(z.astype(np.float32), axis=1)
    median = np.median(norms)
    kept = z[d.accepted.numpy()]
    clipped = kept * np.minimum(1.0, median / np.linalg.norm(kept, axis=1))[:, None]
    np.testing.assert_allclose(d.direction.numpy(), clipped.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.weight.numpy(), [0.2, 0.2, 0.2, 0.0, 0.2, 0.2, 0.0])


def test_signguard_norm_filter_bounds():
    # Norms 1, 2, 3, 4, 40 (all entries positive): median 3, keep 0.3 <= ||x|| <= 9; clipped to 3: 1, 2, 3, 3.
    z = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [40.0, 0.0]]) + np.array([0.0, 1e-9])
    d = rule(SignGuard, 5, coordinates=1.0).aggregate(view(z[:, :1]))
    assert d.accepted.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(d.direction.numpy(), [(1 + 2 + 3 + 3) / 4])
    with pytest.raises(ValueError, match="coordinates"):
        SignGuard.Params(coordinates=0.0)


# ------------------------------------------------------------------------------------------------- all four rules

CASES = [(Bulyan, {"f": 1}), (DivideAndConquer, {"f": 1, "subsample": 5}), (SignGuard, {"coordinates": 0.5}),
         (FLTrust, {})]


def random_view(valid: list[bool], device: str = "cpu", round_: int = 1, seed: int = 11) -> RoundView:
    z = np.random.default_rng(4).normal(size=(len(valid), 12)) + 0.5
    return view(z, valid, round_, seed, g0=np.full(12, 0.5), device=device)


@pytest.mark.parametrize(("cls", "params"), CASES)
def test_registered_and_no_valid_rows(cls: type, params: dict):
    assert get("rule", cls.registered_name) is cls
    d = rule(cls, 4, **params).aggregate(random_view([False] * 4))
    assert d.direction is None and d.accepted.tolist() == [False] * 4 and d.weight.tolist() == [0.0] * 4


@pytest.mark.parametrize(("cls", "params"), CASES)
def test_invalid_rows_are_ignored(cls: type, params: dict):
    valid = [True, False, True, True, True, False, True, True, True, False]
    full = random_view(valid)
    garbage = RoundView(full.z + 1e3 * ~full.valid.unsqueeze(1), full.valid, full.theta, full.round, full.seed,
                        full.server_gradient)
    keep = full.valid
    compact = RoundView(full.z[keep], keep[keep], full.theta, full.round, full.seed, full.server_gradient)
    d, g = rule(cls, 10, **params).aggregate(full), rule(cls, 10, **params).aggregate(garbage)
    c = rule(cls, 7, **params).aggregate(compact)
    for other in (g, c):
        assert torch.equal(d.direction, other.direction)
    assert torch.equal(d.accepted, g.accepted) and torch.equal(d.accepted[keep], c.accepted)
    assert not d.accepted[~keep].any() and (d.weight[~keep] == 0).all()
    assert torch.allclose(d.weight[keep], c.weight, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("cls", "params"), CASES)
def test_shapes_device_and_determinism(cls: type, params: dict, device: str):
    valid = [True] * 8 + [False]
    first, again = (rule(cls, 9, **params).aggregate(random_view(valid, device)) for _ in range(2))
    assert isinstance(first, Decision) and first.direction.shape == (12,)
    for t in (first.direction, first.accepted, first.weight):
        assert t.device.type == device
    assert first.accepted.shape == first.weight.shape == (9,) and first.weight.dtype == torch.float32
    assert first.accepted.dtype == torch.bool
    assert torch.equal(first.direction, again.direction) and torch.equal(first.accepted, again.accepted)
    if device != "cpu":
        on_cpu = rule(cls, 9, **params).aggregate(random_view(valid))
        assert torch.equal(first.accepted.cpu(), on_cpu.accepted)
        torch.testing.assert_close(first.direction.cpu(), on_cpu.direction, rtol=1e-5, atol=1e-6)


def test_rule_draws_follow_seed_and_round():
    """DnC's coordinate subset is keyed by (seed, round): the same key gives the same decision, and a tiny subset
    makes another key change it."""
    z = np.random.default_rng(8).normal(size=(8, 30))
    dnc = rule(DivideAndConquer, 8, f=2, subsample=2)
    results = {r: dnc.aggregate(view(z, round_=r, seed=1)).accepted.tolist() for r in range(6)}
    assert dnc.aggregate(view(z, round_=3, seed=1)).accepted.tolist() == results[3]
    assert len({tuple(a) for a in results.values()}) > 1
