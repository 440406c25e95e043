import numpy as np
import pytest
import torch

from mpifl.data import partition as part


def labels(per_class: int = 60, classes: int = 10) -> torch.Tensor:
    y = torch.arange(classes).repeat_interleave(per_class)
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]


def classes_of(y: torch.Tensor, parts: list[np.ndarray]) -> list[set[int]]:
    return [set(y.numpy()[p].tolist()) for p in parts]


def assert_disjoint_cover(parts: list[np.ndarray], total: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == total and len(np.unique(joined)) == total


def test_shards_give_each_client_one_or_two_classes_and_equal_sizes():
    y = labels()
    parts = part.shards(y, 20)
    assert [len(p) for p in parts] == [30] * 20
    assert all(len(c) in (1, 2) for c in classes_of(y, parts))
    assert classes_of(y, parts)[0] == {0} and classes_of(y, parts)[19] == {9}
    assert_disjoint_cover(parts, 600)


def test_shards_with_a_straddling_cut():
    y = labels(per_class=60)
    parts = part.shards(y, 8)  # 75 points per shard: shard 0 = 60 of class 0 + 15 of class 1
    assert classes_of(y, parts)[0] == {0, 1}
    assert max(len(c) for c in classes_of(y, parts)) == 2


def test_two_class_gives_every_client_at_least_two_classes():
    y = labels()
    parts = part.two_class(y, 20)
    assert all(len(c) >= 2 for c in classes_of(y, parts))
    assert [len(p) for p in parts] == [30] * 20
    assert_disjoint_cover(parts, 600)


def test_dirichlet_is_a_seeded_disjoint_cover():
    y = labels()
    a = part.dirichlet(y, 5, 0.3, seed=1)
    assert_disjoint_cover(a, 600)
    assert all(np.array_equal(p, q) for p, q in zip(a, part.dirichlet(y, 5, 0.3, seed=1)))
    assert not all(np.array_equal(p, q) for p, q in zip(a, part.dirichlet(y, 5, 0.3, seed=2)))


def test_small_alpha_concentrates_classes():
    y = labels(per_class=200)
    skewed = classes_of(y, part.dirichlet(y, 10, 0.01, seed=0))
    spread = classes_of(y, part.dirichlet(y, 10, 100.0, seed=0))
    assert np.mean([len(c) for c in skewed]) < 3 and all(len(c) == 10 for c in spread)


def test_iid_sizes_and_cover():
    parts = part.iid(labels(), 7, seed=0)
    assert sorted(len(p) for p in parts) == [85] * 2 + [86] * 5
    assert_disjoint_cover(parts, 600)


def test_fraction_size():
    assert part.fraction_size(3000, None, 0.01) == 30
    assert part.fraction_size(3000, None, 0.03) == 90
    assert part.fraction_size(10, None, 0.01) == 1
    assert part.fraction_size(3000, 300, None) == 300


def test_more_clients_than_points_is_rejected():
    with pytest.raises(ValueError, match="clients=700 exceeds the 600 training points"):
        part.partition("shards", labels(), 700, 0.5, 0)
