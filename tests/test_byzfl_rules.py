"""MDA, MoNNA, Meamed, CAF and SMEA against ByzFL 0.0.11's own functions, on the shared seeded matrices padded with
invalid rows (so every test also checks that invalid rows are ignored and decisions map back to client indices)."""

import math

import pytest
import torch

from mpifl import build  # noqa: F401 - build registers the built-in choices
from mpifl.config import ConfigError
from mpifl.registry import get
from mpifl.rng import Purpose, seed_for
from mpifl.rules.base import RoundView, TooFewUpdates
from mpifl.rules.caf import Caf
from mpifl.rules.neighbours import Meamed, Monna, MonnaParams
from mpifl.rules.subsets import MAX_SUBSETS, MinimumDiameterAveraging, SmallestMaxEigenvalueAveraging, SubsetParams

from .rule_matrices import D, K, rows

byzfl = pytest.importorskip("byzfl")

INVALID = (3, 9)
N = K + len(INVALID)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CASES = [(seed, attack) for seed in range(3) for attack in ("none", "scaled", "far")]
SEED, ROUND = 5, 4


def padded(x: torch.Tensor, device: str = "cpu") -> RoundView:
    valid = torch.ones(x.shape[0] + len(INVALID), dtype=torch.bool)
    valid[list(INVALID)] = False
    z = torch.zeros(valid.shape[0], x.shape[1])
    z[valid] = x
    return RoundView(z.to(device), valid.to(device), torch.zeros(x.shape[1], device=device), ROUND, seed=SEED)


def reference(byzfl_rule, x: torch.Tensor) -> torch.Tensor:
    """ByzFL's output with torch's global generator seeded as our rule's generator (the random rules draw alike)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed_for(SEED, Purpose.RULE, ROUND))
        return byzfl_rule(x.clone())


def test_registered_under_their_names():
    assert get("rule", "mda") is MinimumDiameterAveraging and get("rule", "smea") is SmallestMaxEigenvalueAveraging
    assert get("rule", "monna") is Monna and get("rule", "meamed") is Meamed and get("rule", "caf") is Caf


def assert_subset_mean(decision, view: RoundView, m: int) -> None:
    assert int(decision.accepted.sum()) == m and not decision.accepted[list(INVALID)].any()
    torch.testing.assert_close(decision.weight[decision.accepted], torch.full((m,), 1 / m))
    torch.testing.assert_close(decision.weight @ view.z, decision.direction, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f", [0, 1, 3])
def test_mda_is_byzfl(seed: int, attack: str, f: int):
    x = rows(seed, attack)
    view = padded(x)
    decision = MinimumDiameterAveraging(SubsetParams(f=f), N).aggregate(view)
    torch.testing.assert_close(decision.direction, byzfl.MDA(f=f)(x), rtol=1e-6, atol=1e-6)
    assert_subset_mean(decision, view, K - f)
    if attack == "far" and f == 3:
        assert not decision.accepted[:3].any()  # the three far rows are the ones left out


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f", [0, 1, 2])
def test_smea_is_byzfl_with_the_same_random_vectors(seed: int, attack: str, f: int):
    x = rows(seed, attack)
    view = padded(x)
    decision = SmallestMaxEigenvalueAveraging(SubsetParams(f=f), N).aggregate(view)
    torch.testing.assert_close(decision.direction, reference(byzfl.SMEA(f=f), x), rtol=1e-6, atol=1e-6)
    assert_subset_mean(decision, view, K - f)


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f,idx", [(0, 0), (1, 0), (3, 2), (5, 7)])
def test_monna_is_byzfl(seed: int, attack: str, f: int, idx: int):
    x = rows(seed, attack)
    view = padded(x)
    decision = Monna(MonnaParams(f=f, idx=idx), N).aggregate(view)
    torch.testing.assert_close(decision.direction, byzfl.MoNNA(f=f, idx=idx)(x), rtol=1e-6, atol=1e-6)
    assert_subset_mean(decision, view, K - f)


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f", [0, 1, 3, 4])
@pytest.mark.parametrize("k", [K, K - 1])  # odd and even counts (the median of an even count is a mean)
def test_meamed_is_byzfl(seed: int, attack: str, f: int, k: int):
    x = rows(seed, attack)[:k]
    decision = Meamed(SubsetParams(f=f), N).aggregate(padded(x))
    torch.testing.assert_close(decision.direction, byzfl.Meamed(f=f)(x), rtol=1e-6, atol=1e-6)
    assert decision.weight.isnan().all()


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f", [1, 2, 3, 5])
def test_caf_is_byzfl_with_the_same_random_vectors(seed: int, attack: str, f: int):
    """Same operations in the same order; at f = 5 the reweighting runs ~700 steps, which carry float32 rounding
    (ByzFL's own) to a relative difference up to 3e-5 (seed 0, 'scaled')."""
    x = rows(seed, attack)
    view = padded(x)
    decision = Caf(SubsetParams(f=f), N).aggregate(view)
    expected = reference(byzfl.CAF(f=f), x)
    assert float((decision.direction - expected).norm() / expected.norm()) < (1e-4 if f == 5 else 1e-6)
    assert not decision.accepted[list(INVALID)].any()
    torch.testing.assert_close(decision.weight.sum(), torch.tensor(1.0))
    torch.testing.assert_close(decision.weight @ view.z, decision.direction, rtol=1e-5, atol=1e-5)
    if attack == "far" and f >= 3:
        assert decision.weight[:3].abs().max() < 1e-3  # the far rows are filtered out


def test_caf_where_byzfl_returns_none_is_the_mean():
    x = rows(0, "none")
    assert byzfl.CAF(f=0)(x) is None
    for f, z in [(0, x), (2, torch.ones(K, D))]:
        decision = Caf(SubsetParams(f=f), N).aggregate(padded(z))
        torch.testing.assert_close(decision.direction, z.mean(dim=0))


@pytest.mark.parametrize("name", ["mda", "smea", "monna", "meamed", "caf"])
def test_two_f_usable_rows_skip_the_round_and_are_refused_at_config_time(name: str):
    cls = get("rule", name)
    params = cls.Params(f=3)
    six = torch.arange(N) < 6
    with pytest.raises(TooFewUpdates, match="aggregator.params.f=3"):
        cls(params, N).aggregate(RoundView(torch.where(six[:, None], rows(0, "none", k=N), 0.0), six, torch.zeros(D), 1))
    with pytest.raises(ConfigError, match="more than 2f = 6"):
        cls.check_rows(params, 6, "clients=6")
    cls.check_rows(params, 7, "clients=7")
    empty = cls(params, N).aggregate(RoundView(torch.zeros(N, D), torch.zeros(N, dtype=torch.bool), torch.zeros(D), 1))
    assert empty.direction is None and not empty.accepted.any()
    with pytest.raises(ConfigError, match="aggregator.params.f=-1"):
        cls.Params(f=-1)


def test_subset_searches_refuse_too_many_subsets():
    k = next(k for k in range(10, 200) if math.comb(k, 4) > MAX_SUBSETS)
    for cls in (MinimumDiameterAveraging, SmallestMaxEigenvalueAveraging):
        cls.check_rows(SubsetParams(f=4), k - 1, "clients")
        with pytest.raises(ConfigError, match=f"C\\({k}, 4\\)"):
            cls.check_rows(SubsetParams(f=4), k, "clients")


def test_monna_idx_must_be_a_usable_row():
    with pytest.raises(ConfigError, match="idx=11"):
        Monna.check_rows(MonnaParams(f=1, idx=11), 11, "clients=11")
    decision = Monna(MonnaParams(f=1, idx=10), N).aggregate(padded(rows(0, "none")[:9]))
    assert decision.direction is None


def test_mda_ties_go_to_the_first_subset_as_in_byzfl():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])  # {0,1,2,3} and {1,2,3,4} have the same diameter
    decision = MinimumDiameterAveraging(SubsetParams(f=1), 5).aggregate(RoundView(x, torch.ones(5, dtype=torch.bool),
                                                                                   torch.zeros(1), 1))
    assert decision.direction.tolist() == [1.5] == byzfl.MDA(f=1)(x).tolist()


@pytest.mark.parametrize("name", ["mda", "smea", "monna", "meamed", "caf"])
@pytest.mark.parametrize("device", DEVICES)
def test_device_agnostic(name: str, device: str):
    cls = get("rule", name)
    rule = cls(cls.Params(f=2), N)
    x = rows(1, "far")
    out = rule.aggregate(padded(x, device))
    assert out.direction.device.type == device and out.direction.dtype == torch.float32
    torch.testing.assert_close(out.direction.cpu(), rule.aggregate(padded(x)).direction, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- pre-aggregators: static clipping and ARC

from mpifl.rules.norm_clipping import AdaptiveRobustClipping, ArcParams, Clipping, ClippingParams  # noqa: E402


def test_pre_aggregators_registered_under_their_names():
    assert get("pre", "clipping") is Clipping and get("pre", "arc") is AdaptiveRobustClipping


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("threshold", [0.0, 2.0, 7.5, 1e4])
def test_clipping_is_byzfl(seed: int, attack: str, threshold: float):
    x = rows(seed, attack)
    out = Clipping(ClippingParams(threshold=threshold), K).transform(x, 1, 0)
    torch.testing.assert_close(out, byzfl.Clipping(c=threshold)(x.clone()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f", [0, 1, 3, 5, 11])
def test_arc_is_byzfl(seed: int, attack: str, f: int):
    x = rows(seed, attack)
    out = AdaptiveRobustClipping(ArcParams(f=f), K).transform(x, 1, 0)
    torch.testing.assert_close(out, byzfl.ARC(f=f)(x.clone()), rtol=1e-6, atol=1e-6)


def test_arc_clips_the_longest_to_the_next_norm_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -4.0], [50.0, 0.0]])
    # k = 5, f = 1: floor(2/5 · 4) = 1 row clipped (the longest) to the 4th shortest norm, 4
    out = AdaptiveRobustClipping(ArcParams(f=1), 5).transform(x, 1, 0)
    assert out.tolist() == [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -4.0], [4.0, 0.0]]
    with pytest.raises(TooFewUpdates, match="f=6"):
        AdaptiveRobustClipping(ArcParams(f=6), 5).transform(x, 1, 0)
    with pytest.raises(ConfigError, match="arc with aggregator.params.f=6"):
        AdaptiveRobustClipping.check_rows(ArcParams(f=6), 5, "clients=5")
    with pytest.raises(ConfigError, match="threshold=-1"):
        ClippingParams(threshold=-1.0)


@pytest.mark.parametrize("step", [Clipping(ClippingParams(threshold=3.0), K), AdaptiveRobustClipping(ArcParams(f=3), K)])
@pytest.mark.parametrize("device", DEVICES)
def test_clipping_stays_on_the_device(step, device: str):
    x = rows(0, "scaled")
    out = step.transform(x.to(device), 1, 0)
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), step.transform(x, 1, 0), rtol=1e-5, atol=1e-5)
