"""Cross-device rounds (``train.clients_per_round``): m of n clients take part, the rest are neither computed nor
judged, and the same clients are drawn on every rank."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mpifl.config import ConfigError
from mpifl.participation import sampled
from mpifl.report import detection_rates, load_run
from mpifl.screening import NOT_SAMPLED
from mpifl.train import run

from .conftest import small_config


def test_draw_takes_m_clients_keyed_by_round():
    draws = [sampled(0, 10, 3, r) for r in range(1, 6)]
    assert all(int(d.sum()) == 3 for d in draws)
    assert torch.equal(draws[0], sampled(0, 10, 3, 1))  # the same on every rank and every call
    assert len({tuple(d.nonzero().flatten().tolist()) for d in draws}) > 1  # a new draw each round
    assert sampled(0, 10, None, 1).all() and sampled(0, 10, 10, 1).all()


def test_only_sampled_clients_are_computed_judged_and_averaged(tmp_path: Path):
    cfg = small_config(clients=6, rounds=5, train={"clients_per_round": 3})
    run(cfg, tmp_path / "run.h5", progress=None)
    with h5py.File(tmp_path / "run.h5") as f:
        part, accepted, flags = f["clients/sampled"][:], f["clients/accepted"][:], f["clients/flags"][:]
        norms, c2, guiding = f["clients/update_norm"][:], f["clients/c2"][:], f["clients/guiding_norm"][:]
        invalid = f["clients/invalid"][:]
        assert part.sum(axis=1).tolist() == [3] * 5
        for r in range(5):
            assert part[r].tolist() == sampled(cfg.seed, 6, 3, r + 1).tolist()
        assert not (accepted & ~part).any() and (flags[~part] == NOT_SAMPLED).all()
        assert (norms[~part] == 0).all() and (norms[part] > 0).all()  # absent clients computed nothing
        assert np.isnan(c2[~part]).all() and np.isnan(guiding[~part]).all() and not np.isnan(guiding[part]).any()
        assert not invalid.any()  # not taking part is not a screening verdict
        assert f["n_accepted"][:].max() <= 3
    tpr, fpr = detection_rates(load_run(tmp_path / "run.h5"))
    assert tpr == 1.0 and fpr < 0.5  # judged over the sampled client-rounds only


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
