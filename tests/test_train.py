"""The single-process round loop: HDF5 contents, reproducibility, and the rules' observable behaviour."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mpifl import __version__
from mpifl.config import from_tree
from mpifl.data import datasets
from mpifl.data.partition import partition
from mpifl.metrics import PHASES, SCHEMA_VERSION
from mpifl.models import FlatModel, build, initialize
from mpifl.rng import Purpose, generator
from mpifl.train import SetupError, run

from .conftest import small_config


def test_hdf5_holds_config_and_one_row_per_round(tmp_path: Path):
    cfg = small_config()
    result = run(cfg, tmp_path / "run.h5", progress=None)
    with h5py.File(result.path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION and f.attrs["mpifl_version"] == __version__
        assert from_tree(yaml.safe_load(f.attrs["config"])) == cfg
        assert f["round"][:].tolist() == [1, 2, 3, 4, 5, 6]
        assert f["clients/byzantine"].shape == (6, 4) and f["clients/byzantine"][:].sum(axis=1).tolist() == [1] * 6
        acc = f["test_accuracy"][:]
        assert np.isnan(acc[[0, 2, 4]]).all() and not np.isnan(acc[[1, 3, 5]]).any()  # eval_every = 2
        assert acc[-1] == pytest.approx(result.final.accuracy)
        assert set(f["time"]) == set(PHASES) and (f["time/client_compute"][:] > 0).all()
        c1, c2, accepted = f["clients/c1"][:], f["clients/c2"][:], f["clients/accepted"][:]
        assert np.array_equal(accepted, (c1 > 0) & (c2 > 0.5) & (c2 < 2.0))
        assert np.array_equal(f["n_accepted"][:], accepted.sum(axis=1))
        assert f["lr"][:].tolist() == [0.3] * 6


def test_diversefl_flags_sign_flippers_and_learns(tmp_path: Path):
    result = run(small_config(rounds=20), tmp_path / "run.h5", progress=None)
    with h5py.File(result.path, "r") as f:
        byz, accepted = f["clients/byzantine"][:], f["clients/accepted"][:]
        assert not (accepted & byz).any()  # every sign-flipped update rejected
        assert accepted[~byz].mean() > 0.8
    assert result.final.accuracy > 0.9  # the synthetic task is easy when the flips are filtered


def test_same_seed_same_run_different_seed_different_run(tmp_path: Path):
    a = run(small_config(), tmp_path / "a.h5", progress=None)
    b = run(small_config(), tmp_path / "b.h5", progress=None)
    c = run(small_config(seed=4), tmp_path / "c.h5", progress=None)
    assert torch.equal(a.theta, b.theta)
    assert not torch.equal(a.theta, c.theta)


def initial_theta(seed: int, hidden: int = 16) -> torch.Tensor:
    module = build("mlp", (1, 28, 28), 10, hidden=hidden)
    initialize(module, "glorot", generator(seed, Purpose.INIT))
    return FlatModel(module).flatten()


def test_no_accepted_client_leaves_the_model_unchanged(tmp_path: Path):
    cfg = small_config(aggregator={"params": {"eps1": 1e6, "eps2": 2e6}}, rounds=3, train={"weight_decay": 0.1})
    result = run(cfg, tmp_path / "run.h5", progress=None)
    assert torch.equal(result.theta, initial_theta(cfg.seed))
    with h5py.File(result.path, "r") as f:
        assert f["applied"][:].tolist() == [False] * 3 and f["n_accepted"][:].tolist() == [0] * 3


RULE_PARAMS = {"trmean": {"beta": 0.25}, "rsa": {"delta": 0.01}}


@pytest.mark.parametrize("rule", ["oracle", "mean", "median", "trmean", "noisy_median", "rsa"])
def test_every_rule_trains_without_attack(tmp_path: Path, rule: str):
    # RSA is built for convex losses (the paper drops it for networks): give it softmax regression.
    model = {"name": "softmax"} if rule == "rsa" else {}
    cfg = small_config(rounds=15, aggregator={"name": rule, "params": RULE_PARAMS.get(rule, {})}, model=model,
                       attack={"name": "none"}, byzantine={"model": "none"})
    result = run(cfg, tmp_path / "run.h5", progress=None)
    assert result.final.accuracy > 0.6, rule


def test_oracle_accepts_exactly_the_honest_clients(tmp_path: Path):
    result = run(small_config(aggregator={"name": "oracle"}), tmp_path / "run.h5", progress=None)
    with h5py.File(result.path, "r") as f:
        assert np.array_equal(f["clients/accepted"][:], ~f["clients/byzantine"][:])
        assert np.isnan(f["clients/c2"][:]).all()  # no guiding gradients unless asked for


def test_record_similarity_gives_c1_c2_for_other_rules(tmp_path: Path):
    cfg = small_config(aggregator={"name": "oracle", "record_similarity": True})
    with h5py.File(run(cfg, tmp_path / "run.h5", progress=None).path, "r") as f:
        assert not np.isnan(f["clients/c2"][:]).any()
        assert (f["clients/c1"][:][f["clients/byzantine"][:]] < 0).all()  # sign flips point the other way


def test_backdoor_records_backdoor_accuracy_and_markov_byzantines(tmp_path: Path):
    cfg = small_config(attack={"name": "backdoor"}, byzantine={"model": "markov", "markov_class": 1},
                       data={"partition": "two_class"}, aggregator={"name": "mean"})
    with h5py.File(run(cfg, tmp_path / "run.h5", progress=None).path, "r") as f:
        evaluated = f["backdoor_accuracy"][1::2]
        assert ((evaluated >= 0) & (evaluated <= 1)).all()
        assert f["clients/byzantine"][:].any()


def test_one_round_of_mean_is_eq_4_computed_independently(tmp_path: Path):
    """theta^1 = theta^0 − mu (1/n sum_j g_j + lambda theta^0), each g_j by plain autograd on client j's batch."""
    cfg = small_config(rounds=1, aggregator={"name": "mean"}, attack={"name": "none"}, byzantine={"model": "none"},
                       train={"weight_decay": 0.01})
    ds = datasets.load("synthetic", None, False, (400, 200))
    mean, std = ds.channel_stats()
    flat = FlatModel(build("mlp", ds.input_shape, 10, hidden=16))
    theta0 = initial_theta(cfg.seed)
    grads = []
    for j, idx in enumerate(partition("shards", ds.train_y, 4, 0.5, cfg.seed)):
        pick = torch.randperm(len(idx), generator=generator(cfg.seed, Purpose.BATCH, 1, j))[:20]  # 20 % of 100
        x = datasets.to_float(ds.train_x[idx][pick], "standardize", mean, std)
        t = theta0.clone().requires_grad_(True)
        F.cross_entropy(flat.forward(t, x), ds.train_y[idx][pick]).backward()
        grads.append(t.grad)
    expected = theta0 - 0.3 * (torch.stack(grads).mean(dim=0) + 0.01 * theta0)
    torch.testing.assert_close(run(cfg, tmp_path / "run.h5", progress=None).theta, expected)


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path):
    out = tmp_path / "run.h5"
    out.write_bytes(b"keep me")
    with pytest.raises(SetupError, match="already exists; pass --overwrite"):
        run(small_config(), out, progress=None)
    assert out.read_bytes() == b"keep me"
    assert run(small_config(), out, progress=None, overwrite=True).rounds == 6


def test_setup_errors_carry_the_data_dependent_message(tmp_path: Path):
    cfg = small_config(aggregator={"params": {"sample_size": 500, "sample_fraction": None}})
    with pytest.raises(SetupError, match="aggregator.params.sample_size=500 exceeds the smallest client's 100 points"):
        run(cfg, tmp_path / "run.h5", progress=None)


def test_progress_line(tmp_path: Path, capsys):
    import sys

    run(small_config(output={"progress_every": 3}), tmp_path / "run.h5", progress=sys.stderr)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("[mpifl] round 6/6  acc ")
    assert "flagged" in lines[1] and "rounds/s" in lines[1]


def test_progress_between_evaluations_shows_the_last_accuracy_and_its_round(tmp_path: Path, capsys):
    import sys

    run(small_config(rounds=7, train={"eval_every": 2}, output={"progress_every": 3}), tmp_path / "run.h5",
        progress=sys.stderr)
    lines = capsys.readouterr().err.strip().splitlines()
    with h5py.File(tmp_path / "run.h5", "r") as f:
        acc = f["test_accuracy"][:]
    assert lines[0].startswith(f"[mpifl] round 3/7  acc {acc[1]:.4f} (round 2)  flagged ")
    assert lines[1].startswith(f"[mpifl] round 6/7  acc {acc[5]:.4f}  flagged ")
    assert lines[2].startswith(f"[mpifl] round 7/7  acc {acc[6]:.4f}  flagged ")
    assert "nan" not in "".join(lines)
