"""Nearest neighbour mixing and bucketing against ByzFL 0.0.11, with hand-computed cases and bucketing's invariants."""

import pytest
import torch

from mpifl.config import ConfigError
from mpifl.rng import Purpose, seed_for
from mpifl.rules.preaggregators import Bucketing, BucketingParams, NearestNeighborMixing, NnmParams
from mpifl.registry import get

from .rule_matrices import D, K, rows

byzfl = pytest.importorskip("byzfl")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


CASES = [(seed, attack) for seed in range(3) for attack in ("none", "scaled", "far")]


def test_registered_under_their_names():
    assert get("pre", "nnm") is NearestNeighborMixing and get("pre", "bucketing") is Bucketing


# ---------------------------------------------------------------- NNM


@pytest.mark.parametrize("seed,attack", CASES)
@pytest.mark.parametrize("f", [0, 1, 3, 5])
def test_nnm_is_byzfl(seed: int, attack: str, f: int):
    x = rows(seed, attack)
    out = NearestNeighborMixing(NnmParams(f=f), K).transform(x, 1, 0)
    torch.testing.assert_close(out, byzfl.NNM(f=f)(x), rtol=1e-5, atol=1e-5)


def test_nnm_mixes_each_row_with_its_k_minus_f_nearest_including_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    out = NearestNeighborMixing(NnmParams(f=1), 4).transform(x, 1, 0)
    # 0 → {0, 1, 3}; 1 → {1, 0, 3}; 3 → {3, 1, 0}; 10 → {10, 3, 1}
    torch.testing.assert_close(out, torch.tensor([[4 / 3], [4 / 3], [4 / 3], [14 / 3]]))


def test_nnm_ties_go_to_the_lower_row():
    x = torch.tensor([[0.0], [-1.0], [1.0]])  # rows 1 and 2 are both at distance 1 from row 0
    out = NearestNeighborMixing(NnmParams(f=1), 3).transform(x, 1, 0)
    assert out[0].tolist() == [-0.5]


def test_nnm_refuses_f_at_least_k_and_passes_no_rows_through():
    with pytest.raises(ValueError, match=r"aggregator\.params\.f=4 needs more than 4 usable updates, this round has 4"):
        NearestNeighborMixing(NnmParams(f=4), 4).transform(torch.ones(4, 3), 1, 0)
    assert NearestNeighborMixing(NnmParams(f=1), 4).transform(torch.ones(0, 3), 1, 0).shape == (0, 3)
    with pytest.raises(ConfigError, match=r"aggregator\.params\.f=-1"):
        NnmParams(f=-1)


# ---------------------------------------------------------------- bucketing


@pytest.mark.parametrize("s", [1, 2, 3, 4, 11, 20])
@pytest.mark.parametrize("round_", [1, 7])
def test_bucketing_is_byzfl_given_the_same_permutation(s: int, round_: int):
    """ByzFL permutes with torch's global generator: seeded with our key it draws our permutation."""
    x = rows(round_, "scaled")
    out = Bucketing(BucketingParams(s=s), K).transform(x, round_, seed=5)
    with torch.random.fork_rng():
        torch.manual_seed(seed_for(5, Purpose.RULE, round_))
        expected = byzfl.Bucketing(s=s)(x)
    assert out.shape == (-(-K // s), D)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def membership(out: torch.Tensor) -> list[list[int]]:
    """The rows of the identity that each output row averages (its non-zero columns)."""
    return [torch.nonzero(row).squeeze(1).tolist() for row in out]


@pytest.mark.parametrize("s,sizes", [(2, [2, 2, 2, 2, 2, 1]), (3, [3, 3, 3, 2]), (4, [4, 4, 3]), (1, [1] * 11)])
def test_bucketing_averages_every_row_once_in_buckets_of_s(s: int, sizes: list[int]):
    eye = torch.eye(K)  # row i = e_i, so an output row shows which inputs it averages
    out = Bucketing(BucketingParams(s=s), K).transform(eye, 3, seed=1)
    buckets = membership(out)
    assert [len(b) for b in buckets] == sizes  # full buckets first, the leftover last
    assert sorted(i for b in buckets for i in b) == list(range(K))  # every row exactly once
    for bucket, row in zip(buckets, out):
        torch.testing.assert_close(row[bucket], torch.full((len(bucket),), 1 / len(bucket)))


def test_bucketing_permutation_depends_on_seed_and_round_only():
    x = torch.eye(K)
    rule = Bucketing(BucketingParams(s=2), K)
    same = membership(rule.transform(x, 3, seed=1))
    assert membership(Bucketing(BucketingParams(s=2), K).transform(x, 3, seed=1)) == same
    assert membership(rule.transform(x, 4, seed=1)) != same
    assert membership(rule.transform(x, 3, seed=2)) != same


def test_bucketing_params_are_checked():
    with pytest.raises(ConfigError, match=r"aggregator\.params\.s=0"):
        BucketingParams(s=0)


# ---------------------------------------------------------------- both


@pytest.mark.parametrize("step", [NearestNeighborMixing(NnmParams(f=2), K), Bucketing(BucketingParams(s=3), K)])
@pytest.mark.parametrize("device", DEVICES)
def test_output_stays_on_the_device_and_matches_the_cpu(step, device: str):
    x = rows(0, "far")
    out = step.transform(x.to(device), 2, seed=0)
    assert out.device == x.to(device).device and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), step.transform(x, 2, seed=0), rtol=1e-5, atol=1e-5)
