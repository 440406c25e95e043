"""The field's colluding attacks (mpifl.attacks.field): hand-checked numbers, byzfl differential tests, the min-max /
min-sum constraints against their closed forms, determinism of the random attacks, and config validation."""

from __future__ import annotations

import math

import pytest
import torch
from byzfl.attacks import ALittleIsEnough, InnerProductManipulation

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.attacks import AttackView, RuleFacts
from mpifl.attacks.field import (AgnosticParams, AlieParams, FangParams, IpmParams, MimicParams, RandomParams,
                                 ScalingParams, _std, halving_search, z_max)
from mpifl.build import resolve
from mpifl.config import ConfigError, load

SMALL = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]  # mean (3, 4), unbiased std (2, 2)
FIELD = ("zero", "alie", "ipm", "min_max", "min_sum", "fang", "mimic", "scaling", "random")


def make_view(honest, b: int = 2, own=None, seed: int = 0, device: str = "cpu") -> AttackView:
    honest = torch.as_tensor(honest, dtype=torch.float32, device=device)
    h, d = honest.shape
    own = torch.zeros(b, d, device=device) if own is None else torch.as_tensor(own, dtype=torch.float32, device=device)
    rule = RuleFacts(name="mean", n=h + own.shape[0], f=own.shape[0], params=None, client_test=None)
    return AttackView(honest, own, None, torch.zeros(d, device=device), 3, torch.Generator().manual_seed(seed), rule)


def attack(name: str, **params):
    cls = registry.get("attack", name)
    return cls(cls.Params(**params))


def random_honest(h: int = 15, d: int = 50, seed: int = 1) -> torch.Tensor:
    return torch.randn(h, d, generator=torch.Generator().manual_seed(seed)) + 0.3


# --- ALIE and IPM -------------------------------------------------------------------------------------------------


def test_alie_hand_checked():
    out = attack("alie", z=1.0).forge(make_view(SMALL, b=2))
    assert torch.equal(out, torch.tensor([[5.0, 6.0], [5.0, 6.0]]))  # mean + 1 * std
    out = attack("alie", z=-0.5).forge(make_view(SMALL, b=1))
    assert torch.equal(out, torch.tensor([[2.0, 3.0]]))


@pytest.mark.parametrize("k", [2, 3, 10, 13, 20])
def test_std_gives_torch_std_bits(k):
    """The fast two-pass float64 deviation is torch's own std(dim=0), bit for bit, on rows of every scale."""
    g = torch.Generator().manual_seed(k)
    for scale, shift in ((1.0, 0.0), (1e-3, 5.0), (40.0, -7.0)):
        rows = torch.randn(k, 20_000, generator=g) * scale + shift
        assert torch.equal(_std(rows), rows.std(dim=0))
    assert torch.equal(_std(rows[:1]), torch.zeros(20_000))


def test_z_max_by_hand():
    # n = 20, f = 5: s = floor(20/2 + 1) - 5 = 6, z = Phi^-1((20 - 6)/20) = Phi^-1(0.7) = 0.524400512708...
    assert z_max(20, 5) == pytest.approx(0.5244005127080407, abs=1e-12)
    # n = 10, f = 2: s = 6 - 2 = 4, z = Phi^-1(0.6) = 0.253347103135...
    assert z_max(10, 2) == pytest.approx(0.2533471031357997, abs=1e-12)
    # Byzantine majority (s would be <= 0): s is kept at 1, z = Phi^-1(9/10) = 1.281551565544...
    assert z_max(10, 7) == pytest.approx(1.2815515655446004, abs=1e-12)


def test_alie_default_uses_z_max():
    honest = random_honest(15, 50)
    view = make_view(honest, b=5)  # n = 20, f = 5
    expected = honest.mean(0) + 0.5244005127080407 * honest.std(0)
    torch.testing.assert_close(attack("alie").forge(view), expected.expand(5, -1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("z", [1.5, -1.0])
def test_alie_matches_byzfl(z):
    honest = random_honest(15, 50)
    ours = attack("alie", z=z).forge(make_view(honest, b=3))
    theirs = ALittleIsEnough(tau=z)(honest.clone())
    for row in ours:
        torch.testing.assert_close(row, theirs, rtol=0, atol=1e-6)


def test_ipm_hand_checked_and_matches_byzfl():
    out = attack("ipm", epsilon=0.1).forge(make_view(SMALL, b=2))
    torch.testing.assert_close(out, torch.tensor([[-0.3, -0.4]] * 2), rtol=0, atol=1e-7)
    honest = random_honest(15, 50)
    ours = attack("ipm", epsilon=2.5).forge(make_view(honest, b=4))
    theirs = InnerProductManipulation(tau=2.5)(honest.clone())
    for row in ours:
        torch.testing.assert_close(row, theirs, rtol=0, atol=1e-6)


# --- Min-Max and Min-Sum ------------------------------------------------------------------------------------------


def perturbation(kind: str, honest: torch.Tensor) -> torch.Tensor:
    mu = honest.mean(0)
    return {"unit": -mu / mu.norm(), "std": -honest.std(0), "sign": -mu.sign()}[kind]


def closed_form_gamma(name: str, honest: torch.Tensor, p: torch.Tensor) -> float:
    """The exact largest γ (float64): min-max, the smallest positive root of ‖x_i − γp‖² = D over i; min-sum,
    Σ‖x_i‖² + hγ²‖p‖² = max_i Σ_j ‖h_i − h_j‖² (the cross term vanishes because Σ x_i = 0)."""
    honest, p = honest.double(), p.double()
    x = honest - honest.mean(0)
    pair = torch.cdist(honest, honest) ** 2
    a, c, q = (x * x).sum(1), x @ p, p @ p
    if name == "min_max":
        return float(((c + torch.sqrt(c * c - q * (a - pair.max()))) / q).min())
    return math.sqrt(float((pair.sum(1).max() - a.sum()) / (len(honest) * q)))


def recovered_gamma(out: torch.Tensor, honest: torch.Tensor, p: torch.Tensor) -> float:
    shift = out[0].double() - honest.double().mean(0)
    return float(shift @ p.double() / (p.double() @ p.double()))


def fits(name: str, honest: torch.Tensor, m: torch.Tensor, slack: float = 0.0) -> bool:
    honest, m = honest.double(), m.double()
    pair = torch.cdist(honest, honest) ** 2
    to_honest = ((honest - m) ** 2).sum(1)
    if name == "min_max":
        return bool(to_honest.max() <= pair.max() * (1 + slack))
    return bool(to_honest.sum() <= pair.sum(1).max() * (1 + slack))


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
def test_agnostic_hand_checked(name):
    # sign perturbation p = -(1, 1): m = (3 - γ, 4 - γ). Min-max: 2(2 + γ)² <= 32; min-sum: 16 + 6γ² <= 40; both γ = 2.
    out = attack(name, perturbation="sign").forge(make_view(SMALL, b=3))
    assert out.shape == (3, 2) and torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    torch.testing.assert_close(out[0], torch.tensor([1.0, 2.0]), rtol=0, atol=3e-5)
    assert bool((out[0] >= torch.tensor([1.0, 2.0]) - 1e-6).all())  # never past the largest γ that fits


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
@pytest.mark.parametrize("kind", ["unit", "std", "sign"])
def test_agnostic_gamma_is_the_largest_that_fits(name, kind):
    honest = random_honest(15, 50)
    params = AgnosticParams(perturbation=kind)
    out = attack(name, perturbation=kind).forge(make_view(honest, b=2))
    p = perturbation(kind, honest)
    exact, gamma = closed_form_gamma(name, honest, p), recovered_gamma(out, honest, p)
    assert 0.1 < exact < 2 * params.gamma_init  # inside the search's range, so the search can reach it
    assert exact - 2 * params.tolerance - 1e-6 <= gamma <= exact + 1e-6
    assert fits(name, honest, out[0], slack=1e-6)
    mu = honest.double().mean(0)
    assert not fits(name, honest, mu + (gamma + 2 * params.tolerance) * p.double())
    assert not fits(name, honest, mu + gamma * 1.01 * p.double())


def test_halving_search_converges_below_the_threshold():
    assert 3.3 - 2e-5 < halving_search(lambda g: g <= 3.3, 10.0, 1e-5) <= 3.3
    assert 19.99 < halving_search(lambda g: True, 10.0, 1e-5) < 20.0  # γ stays below 2 · gamma_init
    assert halving_search(lambda g: False, 10.0, 1e-5) == 0.0  # nothing fits: the honest mean


def test_agnostic_bad_perturbation_is_refused():
    with pytest.raises(ValueError, match=r"attack.params.perturbation='bad' is not one of unit, std, sign"):
        attack("min_max", perturbation="bad")
    with pytest.raises(ConfigError, match=r"attack.params.perturbation='bad'"):
        resolve(load(overrides=["attack.name=min_max", "attack.params={perturbation: bad}"]))
    with pytest.raises(ConfigError, match="attack.params.tolerance"):
        AgnosticParams(tolerance=0.0)


# --- Fang -----------------------------------------------------------------------------------------------------------

# Columns: s > 0 with w_min > 0; s > 0 with w_min <= 0; s <= 0 with w_max > 0; s <= 0 with w_max <= 0.
FANG_HONEST = [[1.0, 3.0, 2.0, -1.0], [2.0, -1.0, -4.0, -2.0], [4.0, 2.0, 1.0, -5.0]]
FANG_LOW = torch.tensor([0.5, -2.0, 2.0, -1.0])  # w_min/b, b*w_min, w_max, w_max/b with b = 2
FANG_HIGH = torch.tensor([1.0, -1.0, 4.0, -0.5])  # w_min, w_min, b*w_max, w_max


def test_fang_values_lie_in_the_stated_intervals():
    out = attack("fang", b=2.0).forge(make_view(FANG_HONEST, b=50))
    assert out.shape == (50, 4) and out.dtype == torch.float32
    assert bool(((out >= FANG_LOW) & (out <= FANG_HIGH)).all())
    assert bool((out[:, 0] <= 1.0).all())  # s > 0: at or below every honest value
    assert bool((out[:, 1] < 0).all() and (out[:, 2] > 0).all())  # against s where the interval allows
    assert len(torch.unique(out[:, 2])) == 50  # every row draws its own values
    spread = (out - FANG_LOW) / (FANG_HIGH - FANG_LOW)  # the uniform draws fill each column's interval
    assert bool((spread.amin(0) < 0.1).all() and (spread.amax(0) > 0.9).all())


def test_fang_bad_b_is_refused():
    with pytest.raises(ConfigError, match="attack.params.b=0.5"):
        FangParams(b=0.5)


# --- Mimic, scaling, random -----------------------------------------------------------------------------------------


def test_mimic_copies_the_farthest_or_the_chosen_row():
    honest = [[5.0, 5.0], [6.0, 5.0], [5.0, 6.0], [0.0, 0.0]]  # mean (4, 4): row 3 is farthest, yet has the least norm
    assert torch.equal(attack("mimic").forge(make_view(honest, b=2)), torch.zeros(2, 2))
    assert torch.equal(attack("mimic", target=1).forge(make_view(honest, b=2)), torch.tensor([[6.0, 5.0]] * 2))
    with pytest.raises(ValueError, match="attack.params.target=4 is out of range: the round has 4 honest"):
        attack("mimic", target=4).forge(make_view(honest, b=2))
    with pytest.raises(ConfigError, match="attack.params.target=-1"):
        MimicParams(target=-1)


def test_scaling_multiplies_own_gradient():
    own = [[1.0, -2.0], [0.5, 3.0]]
    out = attack("scaling").forge(make_view(SMALL, own=own))
    assert torch.equal(out, torch.tensor([[10.0, -20.0], [5.0, 30.0]]))
    assert ScalingParams().factor == 10.0


def test_random_draws_from_the_generator():
    out = attack("random", sigma=2.0, mean=0.5).forge(make_view(SMALL, b=3, seed=7))
    expected = 0.5 + 2.0 * torch.randn(3, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out, expected)
    big = attack("random", sigma=2.0, mean=0.5).forge(make_view(torch.zeros(2, 20000), b=2))
    assert abs(float(big.mean()) - 0.5) < 0.05 and abs(float(big.std()) - 2.0) < 0.05
    with pytest.raises(ConfigError, match="attack.params.sigma=-1.0"):
        RandomParams(sigma=-1.0)


@pytest.mark.parametrize("name", ["fang", "random"])
def test_random_attacks_are_deterministic_per_seed(name):
    honest = random_honest(15, 50)
    first = attack(name).forge(make_view(honest, b=4, seed=11))
    assert torch.equal(first, attack(name).forge(make_view(honest, b=4, seed=11)))
    assert not torch.equal(first, attack(name).forge(make_view(honest, b=4, seed=12)))
    assert not torch.equal(first[0], first[1])  # each row draws its own values


# --- Every attack: shapes, edge cases, devices, config ---------------------------------------------------------------


@pytest.mark.parametrize("name", FIELD)
def test_no_byzantine_gives_empty_rows(name):
    out = attack(name).forge(make_view(random_honest(5, 7), b=0))
    assert out.shape == (0, 7) and out.dtype == torch.float32


@pytest.mark.parametrize("name", FIELD)
def test_one_honest_row_gives_finite_rows(name):
    honest = [[1.0, -2.0, 3.0]]
    out = attack(name).forge(make_view(honest, b=2, own=[[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]))
    assert out.shape == (2, 3) and bool(torch.isfinite(out).all())
    if name in ("alie", "min_max", "min_sum", "mimic"):  # std of one row is 0; its own spread is 0: m = the row
        assert torch.equal(out, torch.tensor([honest[0]] * 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", FIELD)
def test_cuda_matches_cpu(name):
    honest = random_honest(15, 50)
    own = torch.randn(3, 50, generator=torch.Generator().manual_seed(5))
    cpu = attack(name).forge(make_view(honest, own=own, seed=9))
    gpu = attack(name).forge(make_view(honest, own=own, seed=9, device="cuda"))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_config_fills_and_checks_params():
    cfg = load(overrides=["attack.name=alie", "attack.params={z: 1.5}"])
    assert resolve(cfg).attack.params == AlieParams(z=1.5)
    assert resolve(load(overrides=["attack.name=ipm"])).attack.params == IpmParams(epsilon=0.1)
    with pytest.raises(ConfigError, match="unknown key attack.params.zz"):
        resolve(load(overrides=["attack.name=alie", "attack.params={zz: 1.5}"]))
    with pytest.raises(ConfigError, match="attack.params.z='high' must be a number"):
        resolve(load(overrides=["attack.name=alie", "attack.params={z: high}"]))
