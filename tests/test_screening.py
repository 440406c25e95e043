"""The server survives anything a client sends: fuzzed update matrices through screening and every rule."""

import dataclasses
import math

import torch
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.errors import ConfigError
from mpifl.screening import INVALID, NON_FINITE, NORM_BOUND, row_bands, row_norms, screen

from .conftest import server_with, small_config


def test_screen_flags_each_kind_of_bad_row():
    z = torch.tensor([[1.0, 2.0], [math.nan, 0.0], [math.inf, 1.0], [3e5, 3e5], [0.0, 0.0], [-4.0, 3.0]])
    received = z.clone()
    flags = screen(z, max_norm=1e5)
    assert flags.tolist() == [0, NON_FINITE, NON_FINITE, NORM_BOUND, 0, 0]
    assert torch.isfinite(z).all()  # screened in place: the receive buffer is not copied
    assert z[[1, 2, 3]].abs().sum() == 0 and torch.equal(z[[0, 4, 5]], received[[0, 4, 5]])


def test_huge_finite_entries_do_not_overflow_into_a_valid_norm():
    z = torch.full((1, 1000), 3e38)  # the float32 norm overflows to inf; the check must still see it
    assert screen(z, max_norm=1e6).tolist() == [NORM_BOUND]


def test_norms_at_the_bound_are_decided_in_float64():
    """A row whose float32 norm rounds onto max_norm is rechecked in float64: a row whose exact norm is just above
    the bound is flagged, one exactly at it is not, although their float32 norms are equal."""
    z = torch.tensor([[1.0, 1e-4], [1.0, 0.0], [0.5, 0.0]])  # exact norms: 1 + 5e-9, 1, 0.5
    assert torch.linalg.vector_norm(z, dim=1).tolist() == [1.0, 1.0, 0.5]
    assert screen(z.clone(), 1.0).tolist() == [NORM_BOUND, 0, 0]


def test_long_rows_just_above_the_bound_are_flagged():
    """A whole-row float32 norm of 1e6 equal entries comes out 4e-4 low (999,782 for an exact 1,000,200); the
    screening norms are summed from bands and decide like float64."""
    z = torch.full((3, 10**6), 1000.2)
    z[1] = 1000.1  # exact norm 1,000,100
    z[2] = 999.8  # exact norm 999,800
    assert float(torch.linalg.vector_norm(z[0])) < 1e6  # the whole-row float32 norm would let row 0 through
    assert screen(z, 1e6).tolist() == [NORM_BOUND, NORM_BOUND, 0]
    assert z[:2].abs().sum() == 0 and bool((z[2] == 999.8).all())


def test_bounds_outside_float32s_range():
    """An infinite bound flags only non-finite rows; a bound below what float32 squares resolve is decided in
    float64 (1e-25 entries square to 0 in float32)."""
    z = torch.tensor([[1e30, 0.0], [math.inf, 0.0], [1e-25, 1e-25], [0.0, 0.0]])
    assert screen(z.clone(), math.inf).tolist() == [0, NON_FINITE, 0, 0]
    assert screen(z.clone(), 1e-30).tolist() == [NORM_BOUND, NON_FINITE, NORM_BOUND, 0]


def test_row_norms_in_bands_equal_whole_matrix_norms():
    z = torch.randn(37, 11, generator=torch.Generator().manual_seed(2))
    z[5, 3] = math.inf
    assert row_bands(z, elements=50) == [slice(i, min(i + 4, 37)) for i in range(0, 37, 4)]
    norms = row_norms(z)
    expected = torch.linalg.vector_norm(z, dim=1)
    assert torch.equal(norms, expected) and math.isinf(norms[5])


entries = st.one_of(st.floats(-10, 10, width=32), st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0]))


@st.composite
def rounds(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(1, 7))
    d = draw(st.integers(1, 5))
    z = torch.tensor(draw(st.lists(st.lists(entries, min_size=d, max_size=d), min_size=n, max_size=n)),
                     dtype=torch.float32)
    zero_rows = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    z[torch.tensor(zero_rows)] = 0.0
    g = torch.tensor(draw(st.lists(st.lists(st.floats(-5, 5, width=32), min_size=d, max_size=d), min_size=n,
                                   max_size=n)), dtype=torch.float32)
    byzantine = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return z, g, byzantine


ALWAYS_STEP = ("mean", "median", "trmean", "noisy_median", "rsa", "geomed", "centered_clipping")


@settings(max_examples=150, deadline=None)
@given(rounds(), st.sampled_from(registry.names("rule")))
def test_every_rule_keeps_theta_finite_and_flags_exactly_the_invalid_rows(case, rule):
    z, g, byzantine = case
    n = z.shape[0]
    # f = 0 where a rule has it, so that small n stay possible; what no round could run is refused at load time
    fields = {f.name for f in dataclasses.fields(registry.get("rule", rule).Params)}
    params = {"f": 0} if "f" in fields else {}
    try:
        cfg = small_config(clients=n, byzantine={"model": "none"},
                           aggregator={"name": rule, "max_norm": 1e3, "params": params})
    except ConfigError:
        reject()
    guided = registry.get("rule", rule).needs.filter == "diversefl"
    server = server_with(cfg, g, lambda theta: g[0])
    theta = torch.linspace(-1, 1, z.shape[1])
    screened = server.examine(z.clone(), theta)  # screened in place
    decision = server.decide(screened, theta, byzantine, 1)

    finite = torch.isfinite(z).all(dim=1)
    norms = torch.linalg.vector_norm(torch.where(finite.unsqueeze(1), z, 0).double(), dim=1)
    expected_invalid = ~finite | (norms > 1e3)
    assert torch.equal((screened.flags & INVALID) != 0, expected_invalid)
    assert not (decision.accepted & expected_invalid).any()
    if decision.direction is not None:
        new_theta = theta - 0.1 * (decision.direction + 0.01 * theta)
        assert torch.isfinite(new_theta).all()
    else:  # only rules that reject clients (or need more usable rows than were left) may skip a step
        assert rule not in ALWAYS_STEP or expected_invalid.all()
    if guided:  # invalid rows get no criteria: they never reach the similarity test
        assert (screened.c1[expected_invalid] == 0).all() and screened.c2[expected_invalid].isnan().all()
