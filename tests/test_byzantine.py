import torch

from mpifl.byzantine import ByzantineSchedule
from mpifl.config import ByzantineConfig


def schedule(seed: int = 0, **kw) -> ByzantineSchedule:  # type: ignore[no-untyped-def]
    classes = [{j % 10} for j in range(20)]
    return ByzantineSchedule(ByzantineConfig(**kw), 20, seed, classes.__getitem__)


def test_random_draws_k_per_round_reproducibly():
    a, b = schedule(seed=7), schedule(seed=7)
    masks = [a.mask(r) for r in range(1, 51)]
    assert all(int(m.sum()) == 5 for m in masks)
    assert all(torch.equal(m, b.mask(r)) for r, m in enumerate(masks, start=1))
    assert len({tuple(m.tolist()) for m in masks}) > 40  # the set changes from round to round
    other = schedule(seed=8)
    assert any(not torch.equal(m, other.mask(r)) for r, m in enumerate(masks, start=1))


def test_random_membership_is_roughly_uniform():
    s = schedule(seed=1)
    counts = torch.stack([s.mask(r) for r in range(1, 2001)]).sum(dim=0).float()
    assert torch.allclose(counts / 2000, torch.full((20,), 0.25), atol=0.04)


def test_fixed_set_every_round():
    s = schedule(model="fixed", clients=[2, 5])
    assert all(torch.nonzero(s.mask(r)).flatten().tolist() == [2, 5] for r in (1, 2, 99))


def test_none_means_nobody():
    assert not schedule(model="none").mask(3).any()


def test_markov_only_eligible_clients_and_states_last_markov_rounds():
    s = schedule(seed=2, model="markov", markov_p=0.5, markov_rounds=5, markov_class=4)
    masks = torch.stack([s.mask(r) for r in range(1, 301)])
    eligible = [4, 14]  # client j holds class j % 10
    assert set(torch.nonzero(masks.any(dim=0)).flatten().tolist()) == set(eligible)
    for j in eligible:
        runs, length = [], 0
        for flag in masks[:, j].tolist() + [False]:
            if flag:
                length += 1
            elif length:
                runs.append(length)
                length = 0
        assert runs and all(r % 5 == 0 for r in runs[:-1])  # back-to-back states merge into multiples of 5
    # p = 0.5 per normal round with 5-round states: about 5/6 of rounds are Byzantine
    assert 0.7 < masks[:, eligible].float().mean() < 0.95


def test_markov_replays_history_when_asked_for_an_earlier_round():
    s = schedule(seed=3, model="markov")
    forward = [s.mask(r) for r in range(1, 40)]
    assert torch.equal(s.mask(10), forward[9])
    assert torch.equal(s.mask(39), forward[38])
