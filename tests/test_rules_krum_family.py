"""Krum, Multi-Krum, geometric median and centered clipping against ByzFL 0.0.11, and the documented differences.

ByzFL takes the rows the rule sees (the valid ones); our rules get them padded to n clients with zero invalid rows,
so every differential test also checks that invalid rows are ignored and that decisions map back to client indices.
"""

import numpy as np
import pytest
import torch

from mpifl.config import ConfigError
from mpifl.rules.base import RoundView
from mpifl.rules import clipping
from mpifl.rules.clipping import CenteredClipping, ClippingParams
from mpifl.rules.geomed import GeometricMedian, GeoMedParams
from mpifl.rules.krum import Krum, KrumParams, MultiKrum, MultiKrumParams, krum_scores
from mpifl.registry import get

from .rule_matrices import D, K, rows

byzfl = pytest.importorskip("byzfl")

INVALID = (3, 9)  # positions of the invalid (zero) rows in the padded view of n = K + 2 clients
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ATTACKS = ["none", "scaled", "far"]
ATTACKED = {"none": 0, "scaled": 2, "far": 3}  # the first rows that the attack changed


def padded(x: torch.Tensor, device: str = "cpu", round_: int = 1) -> tuple[RoundView, torch.Tensor]:
    """The view of n = k + 2 clients whose rows INVALID are zero and invalid, and the client index of each row of x."""
    n = x.shape[0] + len(INVALID)
    valid = torch.ones(n, dtype=torch.bool)
    valid[list(INVALID)] = False
    z = torch.zeros(n, x.shape[1])
    z[valid] = x
    view = RoundView(z.to(device), valid.to(device), torch.zeros(x.shape[1], device=device), round_)
    return view, torch.nonzero(valid).squeeze(1)


CASES = [(seed, attack) for seed in range(3) for attack in ATTACKS]


# ---------------------------------------------------------------- Krum, Multi-Krum


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f", [0, 1, 3])
def test_krum_is_byzfl_krum_with_one_more_fault(seed: int, attack: str, f: int):
    x = rows(seed, attack)
    view, client = padded(x)
    decision = Krum(KrumParams(f=f), 13).aggregate(view)
    expected = byzfl.Krum(f=f + 1)(x)
    assert torch.equal(decision.direction, expected)
    chosen = torch.nonzero(decision.accepted).squeeze(1).tolist()
    assert len(chosen) == 1 and torch.equal(view.z[chosen[0]], expected)
    assert decision.weight.tolist() == [1.0 if j == chosen[0] else 0.0 for j in range(13)]
    if attack != "none":
        assert chosen[0] not in client[:ATTACKED[attack]].tolist()  # an attacked row is never the one chosen


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f", [0, 1, 3])
def test_multi_krum_is_byzfl_multi_krum_with_one_more_fault(seed: int, attack: str, f: int):
    x = rows(seed, attack)
    view, _ = padded(x)
    m = K - f - 1  # ByzFL's m = k − f' with f' = f + 1
    decision = MultiKrum(MultiKrumParams(f=f, m=m), 13).aggregate(view)
    torch.testing.assert_close(decision.direction, byzfl.MultiKrum(f=f + 1)(x), rtol=1e-6, atol=1e-6)
    assert int(decision.accepted.sum()) == m and not decision.accepted[list(INVALID)].any()
    assert torch.allclose(decision.weight[decision.accepted], torch.tensor(1 / m))
    assert decision.weight[~decision.accepted].eq(0).all()
    torch.testing.assert_close(decision.weight @ view.z, decision.direction, rtol=1e-5, atol=1e-5)


def line(*values: float) -> torch.Tensor:
    """Points on the first axis of R², one row each."""
    return torch.tensor([[v, 0.0] for v in values])


def test_krum_uses_the_papers_k_minus_f_minus_2_neighbours_where_byzfl_uses_k_minus_f_minus_1():
    x = line(0, 1, 2, 10, 10.5)
    # ours, 2 nearest others: 0 → 1+4, 1 → 1+1, 2 → 1+4, 10 → 0.25+64, 10.5 → 0.25+72.25
    assert krum_scores(x, f=1).tolist() == [5.0, 2.0, 5.0, 64.25, 72.5]
    # ByzFL, 3 nearest others: 0 → 105, 1 → 83, 2 → 69, 10 → 145.25, 10.5 → 162.75 (it picks x = 2)
    assert byzfl.Krum(f=1)(x).tolist() == [2.0, 0.0]
    view = RoundView(x, torch.ones(5, dtype=torch.bool), torch.zeros(2), 1)
    decision = Krum(KrumParams(f=1), 5).aggregate(view)
    assert decision.direction.tolist() == [1.0, 0.0]
    assert decision.accepted.tolist() == [False, True, False, False, False]


def test_multi_krum_default_m_is_k_minus_f_as_in_byzfl():
    x = line(0, 1, 2, 10, 10.5)
    decision = MultiKrum(MultiKrumParams(f=1), 5).aggregate(RoundView(x, torch.ones(5, dtype=torch.bool),
                                                                      torch.zeros(2), 1))
    # scores 5, 2, 5, 64.25, 72.5: the four lowest are 0, 1, 2, 10, mean 3.25; ByzFL drops 10.5 too
    assert decision.accepted.tolist() == [True, True, True, True, False]
    assert decision.weight.tolist() == [0.25, 0.25, 0.25, 0.25, 0.0]
    assert decision.direction.tolist() == [3.25, 0.0] == byzfl.MultiKrum(f=1)(x).tolist()


def test_multi_krum_ties_go_to_the_lower_client():
    x = line(0, 1, 2, 10, 10.5)  # rows 0 and 2 tie at score 5
    decision = MultiKrum(MultiKrumParams(f=1, m=2), 5).aggregate(RoundView(x, torch.ones(5, dtype=torch.bool),
                                                                           torch.zeros(2), 1))
    assert decision.accepted.tolist() == [True, True, False, False, False]
    assert decision.direction.tolist() == [0.5, 0.0]


def test_krum_refuses_rounds_with_k_at_most_2f_plus_2():
    x = rows(0, "none", k=6)
    view = RoundView(x, torch.ones(6, dtype=torch.bool), torch.zeros(D), 1)
    with pytest.raises(ValueError, match=r"aggregator\.params\.f=2 allows at least 7, this round has 6"):
        Krum(KrumParams(f=2), 6).aggregate(view)
    with pytest.raises(ValueError, match=r"aggregator\.params\.f=2"):
        MultiKrum(MultiKrumParams(f=2), 6).aggregate(view)
    assert Krum(KrumParams(f=1), 6).aggregate(view).accepted.sum() == 1  # 6 > 2·1 + 2
    with pytest.raises(ValueError, match=r"aggregator\.params\.m=7 .* only 6"):
        MultiKrum(MultiKrumParams(f=1, m=7), 6).aggregate(view)


def test_krum_params_are_checked():
    with pytest.raises(ConfigError, match=r"aggregator\.params\.f=-1"):
        KrumParams(f=-1)
    with pytest.raises(ConfigError, match=r"aggregator\.params\.m=0"):
        MultiKrumParams(m=0)


# ---------------------------------------------------------------- geometric median


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("iterations,nu", [(1, 0.1), (3, 0.1), (10, 1e-8)])
def test_geomed_with_a_fixed_number_of_steps_is_byzfl(seed: int, attack: str, iterations: int, nu: float):
    x = rows(seed, attack)
    view, _ = padded(x)
    params = GeoMedParams(iterations=iterations, tolerance=0.0, nu=nu)
    decision = GeometricMedian(params, 13).aggregate(view)
    torch.testing.assert_close(decision.direction, byzfl.GeometricMedian(nu=nu, T=iterations)(x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,attack", CASES)
def test_geomed_converges_to_byzfls_median_in_float64(seed: int, attack: str):
    x = rows(seed, attack)
    view, client = padded(x)
    decision = GeometricMedian(GeoMedParams(), 13).aggregate(view)
    reference = torch.from_numpy(byzfl.GeometricMedian(nu=1e-8, T=2000)(x.double().numpy())).float()
    torch.testing.assert_close(decision.direction, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(decision.accepted, view.valid)
    assert decision.weight[list(INVALID)].tolist() == [0.0, 0.0]
    assert float(decision.weight.sum()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(decision.weight @ view.z, decision.direction, rtol=1e-5, atol=1e-5)
    if attack != "none":
        assert float(decision.weight[client[:ATTACKED[attack]]].sum()) < 0.05  # the attacked rows get little weight


def test_geomed_of_three_points_on_a_line_is_the_middle_one():
    decision = GeometricMedian(GeoMedParams(), 3).aggregate(RoundView(line(0, 1, 10), torch.ones(3, dtype=torch.bool),
                                                                      torch.zeros(2), 1))
    torch.testing.assert_close(decision.direction, torch.tensor([1.0, 0.0]), rtol=0, atol=1e-5)
    assert float(decision.weight[1]) > 0.99


def test_geomed_params_are_checked():
    with pytest.raises(ConfigError, match=r"aggregator\.params\.nu=0"):
        GeoMedParams(nu=0.0)
    with pytest.raises(ConfigError, match=r"aggregator\.params\.iterations=0"):
        GeoMedParams(iterations=0)


# ---------------------------------------------------------------- centered clipping


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("tau,iterations", [(1.0, 1), (10.0, 3)])
def test_centered_clipping_over_rounds_is_byzfl(seed: int, attack: str, tau: float, iterations: int):
    rule = CenteredClipping(ClippingParams(tau=tau, iterations=iterations), 13)
    reference = byzfl.CenteredClipping(L=iterations, tau=tau)  # starts from zero and keeps its output, as ours
    for round_ in range(1, 4):
        x = rows(10 * seed + round_, attack)
        view, _ = padded(x, round_=round_)
        decision = rule.aggregate(view)
        torch.testing.assert_close(decision.direction, reference(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(decision.accepted, view.valid)
        assert decision.weight[list(INVALID)].tolist() == [0.0, 0.0]


def test_centered_clipping_in_column_bands_is_byzfl(monkeypatch: pytest.MonkeyPatch):
    """Bands of 7 columns (not a divisor of the width): the norms summed over bands and the banded step give
    ByzFL's result, round after round."""
    monkeypatch.setattr(clipping, "CPU_BAND", 7)
    rule = CenteredClipping(ClippingParams(tau=2.0, iterations=2), 13)
    reference = byzfl.CenteredClipping(L=2, tau=2.0)
    for round_ in range(1, 4):
        x = rows(round_, "sign_flip")
        assert x.shape[1] % 7
        view, _ = padded(x, round_=round_)
        torch.testing.assert_close(rule.aggregate(view).direction, reference(x), rtol=1e-5, atol=1e-5)


def test_centered_clipping_pulls_huge_rows_by_tau():
    """Entries of 1e20 overflow a float32 norm; the row still moves the centre by tau / k towards it, not by 0."""
    x = torch.tensor([[1e20, 0.0], [0.0, 1.0]])
    view = RoundView(x, torch.ones(2, dtype=torch.bool), torch.zeros(2), 1)
    decision = CenteredClipping(ClippingParams(tau=1.0), 2).aggregate(view)
    torch.testing.assert_close(decision.direction, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(decision.weight, torch.tensor([0.5e-20, 0.5]))


def test_centered_clipping_weights_are_each_clients_share_of_the_direction():
    x = torch.tensor([[0.5], [4.0]])
    view = RoundView(x, torch.ones(2, dtype=torch.bool), torch.zeros(1), 1)
    rule = CenteredClipping(ClippingParams(tau=1.0), 2)
    first = rule.aggregate(view)  # v0 = 0: clip factors 1 and 1/4, v = (0.5 + 1) / 2
    assert first.direction.tolist() == [0.75] and first.weight.tolist() == [0.5, 0.125]
    second = rule.aggregate(view)  # v0 = 0.75: pulls −0.25 and 3.25 → 1, v = 0.75 + (−0.25 + 1) / 2
    assert second.direction.tolist() == [1.125]
    torch.testing.assert_close(second.weight, torch.tensor([0.5, 1 / 6.5]))
    keep = 1 - float(second.weight.sum())  # the previous output's share
    assert keep * 0.75 + float(second.weight @ x[:, 0]) == pytest.approx(1.125, abs=1e-6)


def test_centered_clipping_state_round_trips_between_rounds():
    params = ClippingParams(tau=2.0, iterations=2)
    first, second = padded(rows(0, "scaled"), round_=1)[0], padded(rows(1, "far"), round_=2)[0]
    straight = CenteredClipping(params, 13)
    assert straight.state_dict() == {}
    straight.aggregate(first)
    expected = straight.aggregate(second).direction

    before = CenteredClipping(params, 13)
    before.aggregate(first)
    state = before.state_dict()
    assert set(state) == {"momentum"} and state["momentum"].dtype == np.float32 and state["momentum"].shape == (D,)
    resumed = CenteredClipping(params, 13)
    resumed.load_state_dict({"momentum": state["momentum"].copy()})
    assert torch.equal(resumed.aggregate(second).direction, expected)


def test_centered_clipping_keeps_its_momentum_through_a_round_without_updates():
    rule = CenteredClipping(ClippingParams(), 13)
    view = padded(rows(0, "none"))[0]
    v = rule.aggregate(view).direction
    empty = RoundView(view.z, torch.zeros(13, dtype=torch.bool), view.theta, 2)
    decision = rule.aggregate(empty)
    assert decision.direction is None and decision.weight.eq(0).all()
    np.testing.assert_array_equal(rule.state_dict()["momentum"], v.numpy())


def test_centered_clipping_refuses_momentum_of_another_size():
    rule = CenteredClipping(ClippingParams(), 13)
    rule.load_state_dict({"momentum": np.zeros(D + 1, dtype=np.float32)})
    with pytest.raises(ValueError, match="momentum has shape"):
        rule.aggregate(padded(rows(0, "none"))[0])


# ---------------------------------------------------------------- common to all four


RULES = {
    "krum": lambda: Krum(KrumParams(f=2), 13),
    "multi_krum": lambda: MultiKrum(MultiKrumParams(f=2), 13),
    "geomed": lambda: GeometricMedian(GeoMedParams(), 13),
    "centered_clipping": lambda: CenteredClipping(ClippingParams(tau=3.0, iterations=2), 13),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_registered_under_its_name(name: str):
    assert get("rule", name) is type(RULES[name]())


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("device", DEVICES)
def test_invalid_rows_are_ignored_and_everything_stays_on_the_device(name: str, device: str):
    x = rows(4, "scaled")
    alone = RULES[name]().aggregate(RoundView(x.to(device), torch.ones(K, dtype=torch.bool, device=device),
                                              torch.zeros(D, device=device), 1))
    view, client = padded(x, device)
    decision = RULES[name]().aggregate(view)
    assert decision.accepted.shape == decision.weight.shape == (13,)
    assert decision.weight.dtype == torch.float32 and decision.accepted.dtype == torch.bool
    assert {t.device for t in (decision.direction, decision.accepted, decision.weight)} == {view.z.device}
    torch.testing.assert_close(decision.direction, alone.direction, rtol=1e-6, atol=1e-6)
    assert torch.equal(decision.accepted[client], alone.accepted)
    assert torch.equal(decision.weight[client], alone.weight)
    assert not decision.accepted[list(INVALID)].any() and decision.weight[list(INVALID)].eq(0).all()


@pytest.mark.parametrize("name", sorted(RULES))
def test_no_usable_rows_means_no_step(name: str):
    view = RoundView(torch.zeros(4, D), torch.zeros(4, dtype=torch.bool), torch.zeros(D), 1)
    decision = RULES[name]().aggregate(view)
    assert decision.direction is None
    assert decision.accepted.tolist() == [False] * 4 and decision.weight.tolist() == [0.0] * 4
