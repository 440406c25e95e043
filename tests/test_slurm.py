"""The SLURM templates against a real single-node SLURM (slurmctld, slurmd, munge, PMIx from Debian), via sbatch."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mpifl.train import run

from .conftest import REPO, small_config, small_tree
from .mpi_helpers import mpirun, train_cmd, wait_for_rounds, write_config

SLURM = Path(__file__).resolve().parent / "slurm"
JOBS = REPO / "jobs" / "slurm"

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster is started as root; not root here")
    if shutil.which("slurmctld") is None:
        pytest.skip("SLURM not installed "
                    "(apt-get install slurmctld slurmd slurm-client munge libpmix-dev; .ci/run does)")
    up = subprocess.run(["bash", str(SLURM / "up.sh")], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    yield
    subprocess.run(["bash", str(SLURM / "down.sh")], capture_output=True, timeout=60)


def sbatch(cwd: Path, *args: str) -> str:
    done = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def wait(job: str, timeout: float = 240) -> int:
    """Wait for a job (all tasks of an array) to leave the queue; its exit code."""
    done = subprocess.run(["bash", str(SLURM / "wait.sh"), job], capture_output=True, text=True, timeout=timeout)
    return done.returncode


def job_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def test_train_job_equals_a_local_mpirun(cluster, real_mnist: Path, tmp_path: Path):
    extra = ["--rounds", "4", "--data-root", str(real_mnist), "--set", "train.eval_every=2"]
    config = str(REPO / "configs" / "fig3_mnist_mlp.yaml")
    job = sbatch(tmp_path, "--ntasks=3", str(JOBS / "train.sbatch"), config, *extra, "--quiet")
    assert wait(job) == 0, (tmp_path / f"slurm-mpifl-{job}.out").read_text()
    local = tmp_path / "local.h5"
    done = mpirun(train_cmd(3, Path(config), local, *extra))
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(tmp_path / "runs" / f"mpifl-{job}" / "run.h5", "r") as a, h5py.File(local, "r") as b:
        assert a.attrs["config"] == b.attrs["config"] and a.attrs["ranks"] == 3
        for name in ("round", "test_accuracy", "clients/byzantine", "clients/accepted", "clients/flags"):
            assert np.array_equal(a[name][:], b[name][:], equal_nan=True), name
        assert np.array_equal(a["model/theta"][:], b["model/theta"][:])


def test_sweep_array_writes_one_file_per_point(cluster, tmp_path: Path):
    base = write_config(tmp_path, small_tree(rounds=3, aggregator={"name": "median"}))  # no DiverseFL params
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": base.name, "out_dir": str(tmp_path / "grid"),
                                     "grid": [{"aggregator.name": ["diversefl", "median"], "seed": [1]},
                                              {"aggregator.name": ["trmean"], "attack.name": ["class_flip"]}]}))
    job = sbatch(tmp_path, "--array=0-2", "--ntasks=2", str(JOBS / "sweep.sbatch"), str(sweep), "--quiet")
    assert wait(job) == 0
    files = sorted((tmp_path / "grid").glob("*.h5"))
    assert [f.name for f in files] == ["test_000_diversefl_1_s1.h5", "test_001_median_1_s1.h5",
                                       "test_002_trmean_class_flip_s3.h5"]
    expected = [("diversefl", "sign_flip", 1), ("median", "sign_flip", 1), ("trmean", "class_flip", 3)]
    for f, (rule, attack, seed) in zip(files, expected):
        with h5py.File(f, "r") as h:
            cfg = yaml.safe_load(h.attrs["config"])
            assert (cfg["aggregator"]["name"], cfg["attack"]["name"], cfg["seed"]) == (rule, attack, seed)
            assert h["model/round"][0] == 3 and h.attrs["ranks"] == 2


def test_byzfl_json_runs_as_a_job_array_one_file_per_point(cluster, tmp_path: Path):
    import json

    spec = {"benchmark_config": {"nb_steps": 3, "training_seed": 0, "nb_training_seeds": 1, "nb_honest_clients": 4,
                                 "f": [1], "data_distribution": [{"name": "iid"}]},
            "model": {"name": "fc_mnist", "dataset_name": "mnist", "learning_rate": [0.1, 0.05]},
            "aggregator": [{"name": "TrMean"}], "pre_aggregators": [{"name": "NNM"}],
            "honest_clients": {"momentum": 0.9, "weight_decay": 0.0001, "batch_size": 8},
            "attack": [{"name": "SignFlipping"}],
            "evaluation_and_results": {"evaluation_delta": 3, "data_folder": "/data", "results_directory": "res"}}
    (tmp_path / "c.json").write_text(json.dumps(spec))
    extra = ["--out-dir", str(tmp_path / "runs"), "--set", "data.dataset=synthetic", "--set", "model.name=mlp",
             "--set", "model.hidden=8", "--quiet"]
    job = sbatch(tmp_path, "--array=0-1", "--ntasks=2", str(JOBS / "byzfl.sbatch"), str(tmp_path / "c.json"), *extra)
    assert wait(job) == 0
    files = sorted((tmp_path / "runs").glob("*.h5"))
    assert len(files) == 2 and {"lr_0.1", "lr_0.05"} == {re.search(r"lr_0\.\d+", f.name).group() for f in files}
    for f in files:
        with h5py.File(f) as h:
            assert h["model/round"][0] == 3 and h.attrs["ranks"] == 2
            assert yaml.safe_load(h.attrs["config"])["train"]["momentum"] == 0.9


@pytest.mark.parametrize(("request_gpus", "expected"), [
    (["--ntasks=3", "--gpus-per-task=1"], ["cuda:0 = GPU 0", "cuda:0 = GPU 1", "cuda:0 = GPU 2"]),
    (["--ntasks=2", "--gres=gpu:2"], ["cuda:0 = GPU 0", "cuda:1 = GPU 1"]),
])
def test_each_rank_reports_its_gpu(cluster, tmp_path: Path, request_gpus: list[str], expected: list[str]):
    job = sbatch(tmp_path, *request_gpus, "--output=info.out", "--wrap",
                 "PMIX_MCA_psec=native srun --mpi=pmix mpifl info")
    assert wait(job) == 0
    text = (tmp_path / "info.out").read_text()
    bindings = dict(re.findall(r"^rank (\d+)/\d+ .* gpu binding (cuda:\d+ = GPU \d+)", text, flags=re.M))
    assert [bindings[str(r)] for r in range(len(expected))] == expected, text


def test_time_limit_signal_checkpoints_and_the_requeued_job_finishes(cluster, tmp_path: Path):
    tree = small_tree(clients=4, rounds=400, output={"checkpoint_every": 0})
    config = write_config(tmp_path, tree)
    job = sbatch(tmp_path, "--ntasks=3", str(JOBS / "train.sbatch"), str(config), "--quiet")
    out = tmp_path / "runs" / f"mpifl-{job}" / "run.h5"
    deadline = time.monotonic() + 120
    wait_for_rounds(out, 2, deadline)
    # what --signal=TERM@120 does near the time limit: SIGTERM to every task of the job's steps
    subprocess.run(["scancel", "--signal=TERM", job], check=True)
    while job_state(job) not in ("PENDING", "") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_state(job) == "PENDING"  # requeued by the script; starts again when its credential expires (up.sh)
    assert wait(job) == 0
    log = (tmp_path / f"slurm-mpifl-{job}.out").read_text()
    assert "requeueing job" in log and f"job {job} restart 1: mpifl train --resume" in log
    assert log.count("stopped by signal after round") == 1  # rank 0 only
    single = run(small_config(**tree), tmp_path / "single.h5", progress=None)
    with h5py.File(out, "r") as f:
        assert f["round"][:].tolist() == list(range(1, 401))
        np.testing.assert_allclose(f["model/theta"][:], single.theta.numpy(), rtol=1e-5, atol=1e-6)


def test_bad_config_fails_the_job_with_the_message(cluster, tmp_path: Path):
    config = write_config(tmp_path, small_tree(aggregator={"params": {"eps1": 5.0}}))
    job = sbatch(tmp_path, "--ntasks=2", str(JOBS / "train.sbatch"), str(config))
    assert wait(job) != 0
    log = (tmp_path / f"slurm-mpifl-{job}.out").read_text()
    assert "Error: aggregator.params.eps1=5.0 must be smaller than aggregator.params.eps2=2.0" in log
