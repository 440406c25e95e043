"""Attacks built against DiverseFL's test, the rank-0 adversary that applies colluding attacks, and diversefl_plus
against them: hand-checked constructions on small matrices."""

import math

import pytest
import torch

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.attacks import AttackView, RuleFacts
from mpifl.attacks.adaptive import AdaptiveDiverseFL, Params, construct
from mpifl.attacks.adversary import Adversary
from mpifl.config import ConfigError
from mpifl.build import pipeline
from mpifl.filters.diversefl import client_test

from .conftest import small_config


def passes(z: torch.Tensor, guiding: torch.Tensor) -> torch.Tensor:
    """DiverseFL's published test with eps = (0.5, 2)."""
    diversefl = registry.get("rule", "diversefl")
    return client_test(diversefl(diversefl.Params(), len(z)), z, guiding, 0.5, 2.0)[0]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=1) / (torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1))


def view(guiding: torch.Tensor, honest: torch.Tensor, client_test=None) -> AttackView:  # type: ignore[no-untyped-def]
    facts = RuleFacts("diversefl", len(honest) + len(guiding), len(guiding), None, client_test)
    return AttackView(honest, guiding.clone(), guiding, torch.zeros(guiding.shape[1]), 1, torch.Generator(), facts)


def test_construction_passes_diversefl_with_the_chosen_cosine_and_length_and_opposes_the_mean():
    guiding = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    mean = torch.tensor([1.0, 1.0, 1.0])
    z = construct(guiding, mean, cosine=0.1, ratio=1.5)
    torch.testing.assert_close(cosine(z, guiding), torch.tensor([0.1, 0.1]))
    torch.testing.assert_close(torch.linalg.vector_norm(z, dim=1), torch.tensor([4.5, 3.0]))
    assert passes(z, guiding).tolist() == [True, True]  # C1 = 1 and eps1 < C2 = 1.5 < eps2
    # row 0: u = e1, m - (m.u)u = (0, 1, 1) → v = -(0, 1, 1)/sqrt(2); z = 4.5 (0.1 e1 + sqrt(0.99) v)
    s = 4.5 * math.sqrt(0.99) / math.sqrt(2)
    torch.testing.assert_close(z[0], torch.tensor([0.45, -s, -s]))
    torch.testing.assert_close(z @ mean, torch.tensor([0.45 - 2 * s, 0.3 - 2 * 3.0 * math.sqrt(0.99) / math.sqrt(2)]))


def test_construction_is_the_most_harmful_row_of_its_cosine_and_length():
    torch.manual_seed(0)
    guiding, mean = torch.randn(1, 50), torch.randn(50)
    z = construct(guiding, mean, 0.2, 1.0)
    u = guiding / guiding.norm()
    for _ in range(200):  # any other row with the same cosine and length is at least as aligned with the mean
        w = torch.randn(1, 50)
        w = w - (w @ u.T) * u
        other = guiding.norm() * (0.2 * u + math.sqrt(1 - 0.04) * w / w.norm())
        assert float(other @ mean) >= float(z @ mean) - 1e-4


def test_published_diversefl_accepts_the_adaptive_rows_and_diversefl_plus_bounds_them():
    torch.manual_seed(1)
    guiding, honest = torch.randn(3, 40), torch.randn(6, 40) + 1.0
    plus = registry.get("rule", "diversefl_plus")(registry.get("rule", "diversefl_plus").Params(), 9)
    rows = AdaptiveDiverseFL(Params()).forge(view(guiding, honest))
    assert passes(rows, guiding).all()
    accepted, used = client_test(plus, rows, guiding, 0.5, 2.0)
    assert accepted.all()
    # the cone (kappa = 1): what is left of each row lies within 45 degrees of its guiding gradient
    assert (cosine(used, guiding) >= 1 / math.sqrt(2) - 1e-5).all()
    assert (torch.linalg.vector_norm(used, dim=1) <= torch.linalg.vector_norm(guiding, dim=1) * 2 + 1e-5).all()


def test_search_finds_a_row_the_rule_accepts_and_that_hurts_at_least_as_much_as_the_fixed_one():
    torch.manual_seed(2)
    guiding, honest = torch.randn(4, 30), torch.randn(8, 30) + 0.5
    plus_cls = registry.get("rule", "diversefl_plus")
    plus = plus_cls(plus_cls.Params(), 12)

    def test(z, g):  # type: ignore[no-untyped-def]
        return client_test(plus, z, g, 0.5, 2.0)

    mean = honest.mean(dim=0)
    searched = AdaptiveDiverseFL(Params(search=True)).forge(view(guiding, honest, test))
    fixed = AdaptiveDiverseFL(Params()).forge(view(guiding, honest, test))
    ok, used = test(searched, guiding)
    assert ok.all()
    assert ((used @ mean) <= (test(fixed, guiding)[1] @ mean) + 1e-5).all()
    assert ((used @ mean) < 0).all()


def test_adaptive_params_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match="attack.params.cosine=0.0 must be in"):
        small_config(attack={"name": "diversefl_adaptive", "params": {"cosine": 0.0}})
    with pytest.raises(ConfigError, match="attack.knowledge='grey' is not one of realistic, white_box"):
        small_config(attack={"name": "diversefl_adaptive", "knowledge": "grey"})
    with pytest.raises(ConfigError, match="sleeper needs byzantine.model=fixed"):
        small_config(attack={"name": "sleeper"})
    with pytest.raises(ConfigError, match="unknown key attack.params.z. It takes no parameters."):
        small_config(attack={"name": "sign_flip", "params": {"z": 1}})


class SpyGuiding:
    """The server's guiding gradients as a white-box attacker reads them: row j is (j + 1) * ones."""

    def __init__(self) -> None:
        self.asked: list[list[int]] = []

    def gradients(self, theta: torch.Tensor, clients: torch.Tensor) -> torch.Tensor:
        self.asked.append(clients.tolist())
        return (clients.to(torch.float32) + 1)[:, None] * torch.ones(1, len(theta))


@pytest.mark.parametrize("knowledge", ["white_box", "realistic"])
def test_adversary_replaces_only_the_byzantine_rows_that_take_part(knowledge: str):
    cfg = small_config(clients=5, attack={"name": "diversefl_adaptive", "knowledge": knowledge})
    spy = SpyGuiding()
    adversary = Adversary(pipeline(cfg), cfg.aggregator.name, cfg.seed, spy if knowledge == "white_box" else None)
    z = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    original = z.clone()
    byzantine = torch.tensor([False, True, False, True, True])
    sampled = torch.tensor([True, True, True, True, False])  # client 4 is Byzantine but sits this round out
    adversary.corrupt(z, torch.zeros(3), byzantine, sampled, 7)
    assert torch.equal(z[[0, 2, 4]], original[[0, 2, 4]]) and not torch.equal(z[[1, 3]], original[[1, 3]])
    assert spy.asked == ([[1, 3]] if knowledge == "white_box" else [])  # realistic: its own gradients only
    guiding = torch.tensor([[2.0] * 3, [4.0] * 3]) if knowledge == "white_box" else original[[1, 3]]
    torch.testing.assert_close(z[[1, 3]], construct(guiding, original[[0, 2]].mean(dim=0), 0.05, 1.0))


def test_adversary_draws_are_keyed_by_seed_and_round():
    cfg = small_config(clients=4, attack={"name": "random"})
    z = torch.zeros(4, 6)
    byzantine, sampled = torch.tensor([True, False, True, False]), torch.ones(4, dtype=torch.bool)
    runs = []
    for round_ in (3, 3, 4):
        rows = z.clone()
        Adversary(pipeline(cfg), cfg.aggregator.name, cfg.seed, None).corrupt(rows, torch.zeros(6), byzantine, sampled, round_)
        runs.append(rows)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0][0], runs[0][2])  # each Byzantine client draws its own row
