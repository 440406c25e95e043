"""Cross-device rounds (``train.clients_per_round``): m of n clients take part, the rest are neither computed nor
judged, and the same clients are drawn on every rank."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mpifl.config import ConfigError
from mpifl.participation import as_mask, cohort, worker_slots
from mpifl.report import detection_rates, load_run
from mpifl.screening import NOT_SAMPLED
from mpifl.train import run

from .conftest import small_config


def sampled(seed: int, n: int, per_round: int | None, round_: int) -> torch.Tensor:
    return as_mask(cohort(seed, n, per_round, round_), n)


def test_draw_takes_m_clients_keyed_by_round():
    draws = [sampled(0, 10, 3, r) for r in range(1, 6)]
    assert all(int(d.sum()) == 3 for d in draws)
    assert torch.equal(draws[0], sampled(0, 10, 3, 1))  # the same on every rank and every call
    assert len({tuple(d.nonzero().flatten().tolist()) for d in draws}) > 1  # a new draw each round
    assert sampled(0, 10, None, 1).all() and sampled(0, 10, 10, 1).all()


def test_a_round_is_its_cohort_computed_judged_and_recorded(tmp_path: Path):
    cfg = small_config(clients=6, rounds=5, train={"clients_per_round": 3})
    run(cfg, tmp_path / "run.h5", progress=None)
    with h5py.File(tmp_path / "run.h5") as f:
        ids, part, accepted = f["clients/id"][:], f["clients/sampled"][:], f["clients/accepted"][:]
        norms, c2, guiding = f["clients/update_norm"][:], f["clients/c2"][:], f["clients/guiding_norm"][:]
        byzantine, flags = f["clients/byzantine"][:], f["clients/flags"][:]
        assert f.attrs["cohort"] == 3 and ids.shape == part.shape == (5, 3) and part.all()
        for r in range(5):
            assert ids[r].tolist() == cohort(cfg.seed, 6, 3, r + 1).tolist() == sorted(ids[r].tolist())
        assert (norms > 0).all() and not np.isnan(c2).any() and not np.isnan(guiding).any()
        assert not (flags & NOT_SAMPLED).any() and f["n_accepted"][:].max() <= 3
        assert not (accepted & byzantine).any()  # the sign flippers of each cohort are caught
    tpr, fpr = detection_rates(load_run(tmp_path / "run.h5"))
    assert tpr == 1.0 and fpr < 0.5  # judged over the client-rounds that took part


def test_a_cohort_is_spread_evenly_over_the_workers():
    for m, size in ((100, 5), (7, 3), (4, 5), (10, 1)):
        shares = [len(worker_slots(m, size, rank)) for rank in range(size)]
        assert sum(shares) == m and (size == 1 or shares[0] == 0)  # rank 0 serves unless it is alone
        workers = shares[1:] if size > 1 else shares
        assert max(workers) - min(workers) <= 1
        assert [j for rank in range(size) for j in worker_slots(m, size, rank)] == list(range(m))


def test_every_client_every_round_gives_the_usual_run(tmp_path: Path):
    a = run(small_config(rounds=3), tmp_path / "a.h5", progress=None)
    b = run(small_config(rounds=3, train={"clients_per_round": 4}), tmp_path / "b.h5", progress=None)
    assert torch.equal(a.theta, b.theta)


@pytest.mark.parametrize(("train", "aggregator", "message"), [
    ({"clients_per_round": 9}, {}, "clients_per_round=9 exceeds clients=4"),
    ({"clients_per_round": 0}, {}, "clients_per_round=0 must be > 0"),
    ({"clients_per_round": 2}, {"name": "rsa"}, "clients update their model copies every round"),
])
def test_impossible_participation_is_refused(train: dict, aggregator: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        small_config(train=train, aggregator=aggregator)


def test_a_stopped_and_resumed_cross_device_run_equals_the_uninterrupted_one(tmp_path: Path):
    def config(rounds: int):  # type: ignore[no-untyped-def]
        return small_config(clients=8, rounds=rounds, train={"clients_per_round": 3}, output={"checkpoint_every": 3})

    whole = run(config(6), tmp_path / "whole.h5", progress=None)
    out = tmp_path / "run.h5"
    run(config(3), out, progress=None)
    resumed = run(config(6), out, progress=None, resume=True)
    assert torch.equal(resumed.theta, whole.theta)
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(out) as b:
        for name in ("clients/id", "clients/accepted", "clients/c2"):
            assert np.array_equal(a[name][:], b[name][:], equal_nan=True), name
