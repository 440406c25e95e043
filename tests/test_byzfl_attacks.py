"""ByzFL's attacks in mpifl (mean_sign_flip, inf, gaussian_vectors, optimal_ipm, optimal_alie) against ByzFL 0.0.11's own
functions, the existing ones that already match (ipm, alie, mimic), and the simulated server the optimal attacks
search over."""

from __future__ import annotations

import pytest
import torch
import byzfl as byz_agg
from byzfl.attacks import attacks as byz

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.attacks import AttackView, RuleFacts
from mpifl.attacks.adversary import Adversary, simulated_server
from mpifl.config import ConfigError
from mpifl.rules.base import RoundView

from .conftest import small_config

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def honest_rows(h: int = 9, d: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randn(h, d, generator=torch.Generator().manual_seed(seed)) + 0.3


def make_view(honest: torch.Tensor, b: int = 3, aggregate=None, seed: int = 0) -> AttackView:
    h, d = honest.shape
    facts = RuleFacts("mean", h + b, b, None, None, aggregate)
    own = torch.zeros(b, d, device=honest.device)
    return AttackView(honest, own, None, torch.zeros(d, device=honest.device), 2, torch.Generator().manual_seed(seed),
                      facts)


def attack(name: str, **params):
    cls = registry.get("attack", name)
    return cls(cls.Params(**params))


def test_registered_as_rank0_attacks():
    for name in ("mean_sign_flip", "inf", "gaussian_vectors", "optimal_ipm", "optimal_alie"):
        assert registry.get("attack", name).on_rank0


@pytest.mark.parametrize("device", DEVICES)
def test_mean_sign_flip_is_byzfl_sign_flipping(device: str):
    honest = honest_rows().to(device)
    out = attack("mean_sign_flip").forge(make_view(honest))
    expected = byz.SignFlipping()(honest.cpu())
    assert out.shape == (3, 40) and out.device == honest.device
    for row in out.cpu():
        torch.testing.assert_close(row, expected)


def test_inf_is_byzfl_inf():
    out = attack("inf").forge(make_view(honest_rows()))
    assert out.dtype == torch.float32 and torch.equal(out, byz.Inf()(honest_rows()).float().expand(3, -1))


def test_gaussian_vectors_is_byzfl_gaussian_with_the_same_generator():
    honest = honest_rows()
    out = attack("gaussian_vectors", mu=0.5, sigma=2.0).forge(make_view(honest, seed=7))
    torch.manual_seed(7)
    expected = byz.Gaussian(mu=0.5, sigma=2.0)(honest)
    assert torch.equal(out, expected.expand(3, -1))  # one draw, sent by every Byzantine client


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_existing_ipm_alie_mimic_are_byzfl_with_renamed_parameters(tau: float):
    honest = honest_rows()
    view = make_view(honest)
    torch.testing.assert_close(attack("ipm", epsilon=tau).forge(view)[0], byz.InnerProductManipulation(tau=tau)(honest))
    torch.testing.assert_close(attack("alie", z=tau).forge(view)[0], byz.ALittleIsEnough(tau=tau)(honest))
    assert torch.equal(attack("mimic", target=4).forge(view)[0], byz.Mimic(epsilon=4)(honest))


# ------------------------------------------------------------------ optimal IPM / ALIE

PIPELINES = [  # (mpifl aggregator section, ByzFL's agg and pre-aggregators), equal on these rows
    ({"name": "mean"}, byz_agg.Average(), []),
    ({"name": "median"}, byz_agg.Median(), []),
    ({"name": "trmean", "params": {"beta": 0.25}}, byz_agg.TrMean(f=3), []),  # floor(0.25 · 12) = 3
    ({"name": "meamed", "params": {"f": 3}}, byz_agg.Meamed(f=3), []),
    ({"name": "mean", "pre": ["nnm"], "params": {"f": 3}}, byz_agg.Average(), [byz_agg.NNM(f=3)]),
    ({"name": "median", "pre": ["nnm"], "params": {"f": 3}}, byz_agg.Median(), [byz_agg.NNM(f=3)]),
]


def server_of(aggregator: dict, clients: int = 12):
    cfg = small_config(clients=clients, aggregator={"max_norm": 1e30, **aggregator})
    return simulated_server(build.pipeline(cfg), torch.zeros(40), 1, cfg.seed)


@pytest.mark.parametrize("name,byzfl_cls", [("optimal_ipm", byz.Optimal_InnerProductManipulation),
                                            ("optimal_alie", byz.Optimal_ALittleIsEnough)])
@pytest.mark.parametrize("aggregator,agg,pre", PIPELINES)
@pytest.mark.parametrize("evals,delta", [(20, 10.0), (7, 1.0)])
def test_optimal_attacks_are_byzfl(name: str, byzfl_cls, aggregator: dict, agg, pre: list, evals: int, delta: float):
    honest = honest_rows()
    aggregate = server_of(aggregator)
    out = attack(name, evals=evals, delta=delta).forge(make_view(honest, b=3, aggregate=aggregate))
    expected = byzfl_cls(agg=agg, pre_agg_list=pre, f=3, evals=evals, delta=delta)(honest)
    torch.testing.assert_close(out, expected.expand(3, -1), rtol=1e-5, atol=1e-5)


def test_optimal_ipm_beats_fixed_factors_against_the_mean():
    honest = honest_rows()
    aggregate = server_of({"name": "median"})
    mean = honest.mean(dim=0)
    forged = attack("optimal_ipm").forge(make_view(honest, aggregate=aggregate))

    def moved(row: torch.Tensor) -> float:
        return float((aggregate(torch.cat([honest, row.expand(3, -1)])) - mean).norm())

    assert all(moved(forged[0]) >= moved(-tau * mean) for tau in (0.0, 0.5, 1.0, 2.0, 10.0))


def test_simulated_server_screens_pre_aggregates_and_leaves_the_rule_state_alone():
    rows = honest_rows(12)
    cfg = small_config(clients=12, aggregator={"name": "centered_clipping", "max_norm": 100.0, "params": {"tau": 0.5}})
    pipeline = build.pipeline(cfg)
    aggregate = simulated_server(pipeline, torch.zeros(40), 1, cfg.seed)
    far = rows.clone()
    far[0] = 1e3  # norm above max_norm: screened out, as the server would
    expected = pipeline.rule.__class__(pipeline.rule.params, 11).aggregate(
        RoundView(rows[1:], torch.ones(11, dtype=torch.bool), torch.zeros(40), 1)).direction
    for _ in range(2):  # the real rule's centre stays at None: every call starts from the same state
        torch.testing.assert_close(aggregate(far.clone()), expected)  # a copy: the rows are screened in place
    assert pipeline.rule.state_dict() == {}


def test_simulated_server_is_none_where_it_cannot_reproduce_the_server():
    assert server_of({"name": "diversefl"}) is None
    assert server_of({"name": "oracle"}) is None
    assert server_of({"name": "krum", "params": {"f": 4}})(honest_rows(9)) is None  # Krum would skip: too few rows


def test_optimal_attacks_are_refused_where_the_server_cannot_be_simulated():
    with pytest.raises(ConfigError, match="optimal_ipm simulates the server"):
        small_config(clients=6, attack={"name": "optimal_ipm"}, aggregator={"name": "diversefl"})
    small_config(clients=6, attack={"name": "optimal_alie"}, aggregator={"name": "trmean"})
    with pytest.raises(ConfigError, match="ratio"):
        small_config(clients=6, attack={"name": "optimal_alie", "params": {"ratio": 0.5}}, aggregator={"name": "mean"})


def test_adversary_hands_the_attack_the_simulated_server():
    cfg = small_config(clients=6, attack={"name": "optimal_ipm"}, aggregator={"name": "median"},
                       byzantine={"model": "fixed", "k": 2})
    pipeline = build.pipeline(cfg)
    z = honest_rows(6)
    byzantine = torch.tensor([True, False, False, True, False, False])
    before = z.clone()
    Adversary(pipeline, "median", cfg.seed, None).corrupt(z, torch.zeros(40), byzantine, torch.ones(6, dtype=bool), 1)
    assert torch.equal(z[~byzantine], before[~byzantine])
    honest = before[~byzantine]
    expected = byz.Optimal_InnerProductManipulation(agg=byz_agg.Median(), pre_agg_list=[], f=2)(honest)
    torch.testing.assert_close(z[byzantine], expected.expand(2, -1), rtol=1e-5, atol=1e-5)
