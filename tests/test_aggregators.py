import math

import pytest
import torch

from mpifl.rules import columns as agg
from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl import rules
from mpifl.filters import diversefl as dfl
from mpifl.screening import DIRECTION, LENGTH, ZERO_GUIDING

Z = torch.tensor([[1.0, 10.0], [2.0, -4.0], [7.0, 0.0], [3.0, 2.0]])
ALL = torch.ones(4, dtype=torch.bool)


def test_median_of_even_count_is_mean_of_the_two_middle_values():
    # column 0 sorted: 1 2 3 7 → (2+3)/2; column 1 sorted: -4 0 2 10 → (0+2)/2
    assert torch.equal(agg.coordinate_median(Z), torch.tensor([2.5, 1.0]))


def test_median_of_odd_count_is_the_middle_value():
    assert torch.equal(agg.coordinate_median(Z[:3]), torch.tensor([2.0, 0.0]))


def test_trimmed_mean_drops_floor_beta_n_from_each_end():
    z = torch.arange(20, dtype=torch.float32).unsqueeze(1) ** 2  # 0, 1, 4, ..., 361
    kept = torch.arange(2, 18, dtype=torch.float32) ** 2  # beta n = 2 trimmed each side
    assert torch.allclose(agg.trimmed_mean(z, 0.1), kept.mean().unsqueeze(0))


def test_trimmed_mean_with_nothing_to_trim_is_the_mean():
    assert torch.equal(agg.trimmed_mean(Z, 0.1), Z.mean(dim=0))  # floor(0.4) = 0


def similarity(z: torch.Tensor, guiding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C1, C2 from whole update and guiding matrices (the server computes the dots and norms band by band)."""
    norm = torch.linalg.vector_norm
    return dfl.similarity((guiding * z).sum(dim=1), norm(z, dim=1), norm(guiding, dim=1))


def test_similarity_values():
    guiding = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [1.0, 1.0]])
    c1, c2 = similarity(Z, guiding)
    assert c1.tolist() == [1, -1, 1, 1]  # dots: 1, -8, 21, 5
    assert torch.allclose(c2, torch.tensor([math.sqrt(101), math.sqrt(20) / 2, 7 / 5, math.sqrt(13) / math.sqrt(2)]))


def accept(c1: torch.Tensor, c2: torch.Tensor, guiding_norm: torch.Tensor | None = None) -> list[bool]:
    norm = torch.ones(len(c1)) if guiding_norm is None else guiding_norm
    return (dfl.diversefl_flags(c1, c2, norm, 0.5, 2.0) == 0).tolist()


def test_diversefl_boundaries_are_strict():
    c1 = torch.tensor([1, 1, 1, 1, 0, -1, 1], dtype=torch.int8)
    c2 = torch.tensor([0.5, 2.0, 0.5001, 1.9999, 1.0, 1.0, math.nan])
    assert accept(c1, c2) == [False, False, True, True, False, False, False]


def test_diversefl_records_every_reason():
    c1 = torch.tensor([1, -1, -1, 1, 0], dtype=torch.int8)
    c2 = torch.tensor([1.0, 1.0, 7.0, math.inf, math.nan])
    norm = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    flags = dfl.diversefl_flags(c1, c2, norm, 0.5, 2.0).tolist()
    assert flags == [0, DIRECTION, DIRECTION | LENGTH, ZERO_GUIDING, DIRECTION | ZERO_GUIDING]


def test_diversefl_rejects_scaled_and_flipped_updates_of_the_guiding_gradient():
    g = torch.tensor([[0.3, -0.2, 0.5]]).repeat(5, 1)
    z = torch.stack([g[0], -g[0], 3 * g[0], 0.4 * g[0], 1.9 * g[0]])
    c1, c2 = similarity(z, g)
    assert accept(c1, c2) == [True, False, False, False, True]


def test_zero_guiding_gradient_is_flagged_explicitly():
    c1, c2 = similarity(torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.zeros(2, 2))
    assert c1.tolist() == [0, 0] and math.isinf(c2[0]) and math.isnan(c2[1])
    assert accept(c1, c2, torch.zeros(2)) == [False, False]


def decide(name: str, z: torch.Tensor, usable: torch.Tensor, byzantine: torch.Tensor | None = None,
           **fields: object) -> rules.Decision:
    """One round of the registered rule ``name`` on ``z`` (``usable`` rows: screening and filter already applied)."""
    cls = registry.get("rule", name)
    rule = cls(cls.Params(**fields), len(z))
    return rule.aggregate(rules.RoundView(z, usable, torch.zeros(z.shape[1]), 1, 0, None,
                                          byzantine if cls.needs.truth else None))


def test_diversefl_averages_only_accepted_and_returns_none_when_nobody_is():
    accepted = torch.tensor([True, False, True, False])
    decision = decide("diversefl", Z, accepted)
    assert torch.equal(decision.direction, torch.tensor([4.0, 5.0]))
    assert decision.weight.tolist() == [0.5, 0.0, 0.5, 0.0]
    nobody = decide("diversefl", Z, torch.zeros(4, dtype=torch.bool))
    assert nobody.direction is None and not nobody.accepted.any()


def test_oracle_uses_the_ground_truth_honest_set():
    honest = torch.tensor([False, True, True, False])
    decision = decide("oracle", Z, ALL, byzantine=~honest)
    assert torch.equal(decision.direction, torch.tensor([4.5, -2.0]))
    assert decision.accepted.tolist() == honest.tolist()


def test_rsa_server_step_by_hand():
    theta = torch.tensor([1.0, -1.0, 0.0])
    models = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 1.0], [5.0, -3.0, -2.0]])
    # sign(theta - theta_j): [1,-1,0], [-1,0,-1], [-1,1,1] → sums [-1, 0, 0]; times delta 0.5
    assert torch.equal(agg.rsa_direction(theta, models, 0.5), torch.tensor([-0.5, 0.0, 0.0]))


@pytest.mark.parametrize(("name", "expected"), [("mean", [3.25, 2.0]), ("median", [2.5, 1.0]),
                                                ("noisy_median", [2.5, 1.0]), ("trmean", [3.25, 2.0])])
def test_dispatch_accepts_everyone_for_rules_without_a_filter(name, expected):
    decision = decide(name, Z, ALL)
    assert decision.direction.tolist() == expected and decision.accepted.all()


@pytest.mark.parametrize(("name", "expected"), [("mean", [4.0, -2 / 3]), ("median", [3.0, 0.0]),
                                                ("trmean", [4.0, -2 / 3]), ("diversefl", [4.0, -2 / 3]),
                                                ("oracle", [2.0, -4.0])])
def test_rules_only_see_valid_rows(name, expected):
    valid = torch.tensor([False, True, True, True])  # row 0 was screened out
    honest = torch.tensor([True, True, False, False])
    decision = decide(name, Z, valid, byzantine=~honest)
    assert decision.direction.tolist() == pytest.approx(expected)
    assert not decision.accepted[0]


def test_nothing_valid_means_no_step():
    none = torch.zeros(4, dtype=torch.bool)
    assert decide("median", Z, none).direction is None


@pytest.mark.parametrize(("rule", "exact"), [
    (lambda rows, cols: rows.mean(dim=0), False),  # a vectorised sum's order depends on the band width
    (lambda rows, cols: agg.trimmed_mean(rows, 0.2), False),
    (lambda rows, cols: agg.coordinate_median(rows), True),
    (lambda rows, cols: agg.rsa_direction(torch.linspace(-1, 1, 50)[cols], rows, 0.5), True),
], ids=["mean", "trmean", "median", "rsa"])
def test_rules_in_column_bands_give_the_same_numbers(rule, exact: bool):
    z = torch.randn(9, 50, generator=torch.Generator().manual_seed(4))
    rows = torch.tensor([True, False, True, True, True, False, True, True, True])
    whole = agg.by_columns(z, rows, rule)
    banded = agg.by_columns(z, rows, rule, elements=7 * 7)  # 7 rows picked: bands of 7 columns, the last of 1
    assert whole.shape == (50,) and torch.equal(whole, rule(z[rows], slice(0, 50)))
    torch.testing.assert_close(banded, whole, rtol=1e-6, atol=1e-7)
    if exact:
        assert torch.equal(whole, banded)
