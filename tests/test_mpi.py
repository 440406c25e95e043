"""The MPI runtime against the single-process run: same config and seed, same results (DESIGN.md)."""

import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpifl import checkpoint
from mpifl.config import from_tree
from mpifl.screening import NON_FINITE
from mpifl.train import run

from .conftest import small_config, small_tree
from .mpi_helpers import fault_cmd, mpirun, needs_mpirun, train_cmd, write_config

pytestmark = [pytest.mark.mpi,
              needs_mpirun]

TREE = small_tree(clients=6, rounds=6)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run.h5"
    run(small_config(clients=6, rounds=6), out, progress=None)
    return out


@pytest.mark.parametrize("ranks", [3, 5])  # blocks of 3+3, and 2+2+1+1 clients
def test_mpi_run_equals_single_process_run(tmp_path: Path, single: Path, ranks: int):
    out = tmp_path / "mpi.h5"
    done = mpirun(train_cmd(ranks, write_config(tmp_path, TREE), out))
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(single, "r") as a, h5py.File(out, "r") as b:
        for name in ("clients/byzantine", "clients/accepted", "clients/c1", "round"):
            assert np.array_equal(a[name][:], b[name][:]), name
        np.testing.assert_allclose(a["test_accuracy"][:], b["test_accuracy"][:], atol=1e-12)
        np.testing.assert_allclose(a["clients/c2"][:], b["clients/c2"][:], rtol=1e-5)
        np.testing.assert_allclose(a["model/theta"][:], b["model/theta"][:], rtol=1e-5, atol=1e-6)
        assert b["model/round"][0] == 6


@pytest.mark.parametrize("ranks", [3, 5])
def test_a_cohort_under_mpi_equals_one_process(tmp_path: Path, ranks: int):
    tree = small_tree(clients=8, rounds=4, train={"clients_per_round": 4})
    single = run(from_tree(tree), tmp_path / "single.h5", progress=None)
    # each round's 4 clients spread over the 2 or 4 client ranks, whichever clients they are
    done = mpirun(train_cmd(ranks, write_config(tmp_path, tree), tmp_path / "mpi.h5"))
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(tmp_path / "single.h5") as a, h5py.File(tmp_path / "mpi.h5") as b:
        for name in ("clients/id", "clients/byzantine", "clients/accepted", "clients/flags", "clients/c1"):
            assert np.array_equal(a[name][:], b[name][:]), name
        assert a["clients/id"].shape == (4, 4)
        np.testing.assert_allclose(b["clients/c2"][:], a["clients/c2"][:], rtol=1e-5)
        np.testing.assert_allclose(b["model/theta"][:], single.theta.numpy(), rtol=1e-5, atol=1e-6)


def test_rsa_client_models_live_on_client_ranks(tmp_path: Path):
    tree = small_tree(clients=6, rounds=4, aggregator={"name": "rsa", "params": {"delta": 0.01}}, model={"name": "softmax"})
    single = run(small_config(clients=6, rounds=4, aggregator={"name": "rsa", "params": {"delta": 0.01}},
                              model={"name": "softmax"}), tmp_path / "single.h5", progress=None)
    done = mpirun(train_cmd(3, write_config(tmp_path, tree), tmp_path / "mpi.h5"))
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(tmp_path / "mpi.h5", "r") as f:
        np.testing.assert_allclose(f["model/theta"][:], single.theta.numpy(), rtol=1e-5, atol=1e-6)


def test_setup_failure_on_one_rank_stops_every_rank_with_its_message(tmp_path: Path):
    config = write_config(tmp_path, TREE)
    out = tmp_path / "run.h5"
    started = time.monotonic()
    done = mpirun(train_cmd(2, config, out),
                  train_cmd(1, config, out, "--set", "data.dataset=mnist", "--set", "data.download=false",
                            "--data-root", str(tmp_path / "empty")))
    assert done.returncode != 0 and time.monotonic() - started < 60
    assert done.stderr.count("Error: rank 2: mnist not found under") == 3, done.stderr[-3000:]
    assert not out.exists()


def test_more_client_ranks_than_clients_is_refused_on_every_rank(tmp_path: Path):
    done = mpirun(train_cmd(4, write_config(tmp_path, small_tree(clients=2)), tmp_path / "run.h5"))
    assert done.returncode != 0
    assert done.stderr.count("clients=2 is fewer than the 3 client ranks of this 4-rank job") == 4, done.stderr


def test_client_failing_mid_run_aborts_the_job_and_keeps_finished_rounds(tmp_path: Path):
    config = write_config(tmp_path, small_tree(clients=6, rounds=50))
    out = tmp_path / "run.h5"
    done = mpirun(train_cmd(2, config, out), fault_cmd("raise", 1, config, out))
    assert done.returncode != 0
    assert "injected client failure in round 4" in done.stderr and "aborting every rank" in done.stderr
    with h5py.File(out, "r", swmr=True) as f:  # a killed SWMR writer leaves the file open-for-write flagged
        assert f["round"][:].tolist() == [1, 2, 3]
        assert f["clients/accepted"].shape == (3, 6)
        assert f["model/round"][0] == 0  # never finished


def test_non_finite_theta_stops_every_rank_with_one_line_not_an_abort(tmp_path: Path):
    config = write_config(tmp_path, small_tree(clients=6, rounds=50, aggregator={"name": "mean"},
                                               output={"checkpoint_every": 1}))
    out = tmp_path / "run.h5"
    done = mpirun(fault_cmd("diverge", 1, config, out), train_cmd(2, config, out))
    assert done.returncode == 1, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if "non-finite" in line]
    assert said == [f"Error: θ became non-finite (NaN or inf) in round 4, so the run stops: {out} keeps rounds 1..3 "
                    f"and {out}.ckpt (if written) an earlier round. Lower train.lr or choose a more robust "
                    "aggregator."]
    assert "MPI_ABORT" not in done.stderr and "Traceback" not in done.stderr
    with h5py.File(out, "r") as f:  # closed cleanly: plain readers work
        assert f["round"][:].tolist() == [1, 2, 3]
    assert checkpoint.load(checkpoint.path_for(out)).round == 3


def test_no_rank_ever_unpickles(tmp_path: Path):
    """Every rank runs with mpi4py's pickle replaced by a function that raises: the job must not notice."""
    config = write_config(tmp_path, small_tree(clients=4, rounds=3, aggregator={"name": "rsa", "params": {"delta": 0.01}},
                                               output={"checkpoint_every": 2}))
    done = mpirun(fault_cmd("nopickle", 3, config, tmp_path / "run.h5"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pickle used" not in done.stderr


def test_signal_on_one_client_rank_checkpoints_the_whole_job(tmp_path: Path):
    config = write_config(tmp_path, small_tree(clients=6, rounds=30, output={"checkpoint_every": 0}))
    out = tmp_path / "run.h5"
    done = mpirun(train_cmd(2, config, out), fault_cmd("sigterm", 1, config, out))
    assert done.returncode == 75, done.stderr[-3000:]
    assert f"stopped by signal after round 4; checkpoint {out}.ckpt written" in done.stderr
    resumed = mpirun(["-n", "3", sys.executable, "-m", "mpifl", "train", "--resume", str(out), "--quiet"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    single = run(small_config(clients=6, rounds=30), tmp_path / "single.h5", progress=None)
    with h5py.File(out, "r") as f:
        assert f["round"][:].tolist() == list(range(1, 31))
        np.testing.assert_allclose(f["model/theta"][:], single.theta.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["median", "diversefl"])
def test_byzantine_rank_sending_nan_every_round(tmp_path: Path, rule: str):
    tree = small_tree(clients=3, rounds=8, aggregator={"name": rule}, attack={"name": "nan"},
                      byzantine={"model": "fixed", "clients": [1]})
    out = tmp_path / "run.h5"
    done = mpirun(train_cmd(4, write_config(tmp_path, tree), out))
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(out, "r") as f:
        assert f["clients/invalid"][:].tolist() == [[False, True, False]] * 8
        assert (f["clients/flags"][:, 1] == NON_FINITE).all()
        assert not f["clients/accepted"][:, 1].any()
        assert np.isfinite(f["model/theta"][:]).all()
        assert f["test_accuracy"][-1] > 0.5
