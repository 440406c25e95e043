"""The SLURM templates on two nodes: a real two-node SLURM on one machine (tests/slurm/two-node/up.sh), each slurmd in
its own network, hostname and mount namespace (hosts n1 and n2, 2 fake GPUs each), so Open MPI sees two hosts and
its traffic crosses a veth link."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mpifl.train import run

from .conftest import REPO, small_config, small_tree
from .mpi_helpers import wait_for_rounds, write_config

TWO_NODE = Path(__file__).resolve().parent / "slurm" / "two-node"
JOBS = REPO / "jobs" / "slurm"
ROOT = Path(os.environ.get("MPIFL_SLURM2_ROOT", "/tmp/mpifl-slurm2"))
# the cluster's client wrappers (bin/sbatch, ...) first: they talk to its slurmctld from inside its namespaces, also
# from batch scripts, which inherit this PATH
ENV = {**os.environ, "PATH": f"{ROOT / 'bin'}:{os.environ.get('PATH', '')}"}

# the templates ask for --ntasks=21, so a job of another size names its --ntasks beside -N and --ntasks-per-node
TWO_BY_TWO = ("-N", "2", "--ntasks-per-node=2", "--ntasks=4")

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("the two-node test SLURM cluster is started as root (network namespaces); not root here")
    missing = [b for b in ("slurmctld", "slurmd", "srun", "munged", "ip", "unshare", "nsenter") if not shutil.which(b)]
    if missing:
        pytest.skip(f"the two-node test SLURM cluster needs {', '.join(missing)} (apt-get install slurmctld slurmd "
                    "slurm-client munge libpmix-dev iproute2 util-linux; .ci/run does)")
    up = subprocess.run(["bash", str(TWO_NODE / "up.sh")], capture_output=True, text=True, timeout=60)
    if up.returncode != 0 and "Operation not permitted" in up.stderr:
        subprocess.run(["bash", str(TWO_NODE / "down.sh")], capture_output=True, timeout=60)
        pytest.skip(f"cannot make network namespaces here: {up.stderr.strip()[-300:]}")
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    subprocess.run(["bash", str(TWO_NODE / "down.sh")], capture_output=True, timeout=60)


def slurm(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(list(argv), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


def sbatch(cwd: Path, *args: str) -> str:
    return slurm("sbatch", "--parsable", *args, cwd=cwd).strip().split(";")[0]


def squeue(job: str, fmt: str = "%T") -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", fmt], env=ENV, capture_output=True, text=True,
                          timeout=30).stdout.strip()


def wait(job: str, timeout: float = 90) -> list[dict[str, str]]:
    """Wait for a job (every task of an array) to leave the queue; per task its JobState, ExitCode and NodeList.
    Past ``timeout`` the job is cancelled and the test fails: a hang never stalls CI."""
    deadline = time.monotonic() + timeout
    while squeue(job):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job], env=ENV, timeout=30)
            pytest.fail(f"job {job} still in the queue after {timeout} s")
        time.sleep(0.3)
    lines = slurm("scontrol", "show", "job", "-o", job).splitlines()
    return [dict(re.findall(r"\b(JobState|ExitCode|NodeList|ArrayTaskId)=(\S+)", line)) for line in lines if line]


def test_train_job_on_two_nodes_equals_one_process(cluster, tmp_path: Path):
    tree = small_tree(clients=6, rounds=5)
    config = write_config(tmp_path, tree)
    job = sbatch(tmp_path, *TWO_BY_TWO, str(JOBS / "train.sbatch"), str(config), "--quiet")
    (task,) = wait(job)
    log = (tmp_path / f"slurm-mpifl-{job}.out").read_text()
    assert task["JobState"] == "COMPLETED" and task["ExitCode"] == "0:0", log
    assert task["NodeList"] == "n[1-2]"
    single = tmp_path / "single.h5"
    run(small_config(**tree), single, progress=None)
    with h5py.File(single, "r") as a, h5py.File(tmp_path / "runs" / f"mpifl-{job}" / "run.h5", "r") as b:
        assert b.attrs["ranks"] == 4 and b["model/round"][0] == 5
        for name in ("round", "clients/byzantine", "clients/accepted", "clients/flags", "clients/c1"):
            assert np.array_equal(a[name][:], b[name][:]), name
        np.testing.assert_allclose(a["test_accuracy"][:], b["test_accuracy"][:], atol=1e-12)
        np.testing.assert_allclose(a["model/theta"][:], b["model/theta"][:], rtol=1e-5, atol=1e-6)


def test_each_rank_binds_a_gpu_of_its_own_node(cluster, tmp_path: Path):
    # 3 tasks on each node, 2 GPUs each: node-local ranks 0, 1, 2 bind cuda:0, cuda:1, cuda:0 of their node
    job = sbatch(tmp_path, "-N", "2", "--ntasks-per-node=3", "--gpus-per-node=2", "--output=info.out", "--wrap",
                 "PMIX_MCA_psec=native srun --mpi=pmix mpifl info")
    (task,) = wait(job)
    text = (tmp_path / "info.out").read_text()
    assert task["ExitCode"] == "0:0", text
    found = re.findall(r"^rank (\d)/6 local_rank (\d) host (\S+) device cpu gpu binding (cuda:\d = GPU \d) "
                       r"\(CUDA_VISIBLE_DEVICES=0,1\)", text, flags=re.M)
    bindings = {int(rank): (host, int(local), gpu) for rank, local, host, gpu in found}
    gpu = ["cuda:0 = GPU 0", "cuda:1 = GPU 1", "cuda:0 = GPU 0"]
    assert bindings == {r: (f"n{r // 3 + 1}", r % 3, gpu[r % 3]) for r in range(6)}, text


def test_array_on_two_nodes_writes_one_file_per_point(cluster, tmp_path: Path):
    base = write_config(tmp_path, small_tree(rounds=3, aggregator={"name": "median"}))  # no DiverseFL params
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": base.name, "out_dir": str(tmp_path / "grid"),
                                     "grid": [{"aggregator.name": ["diversefl", "median"], "seed": [1]}]}))
    job = sbatch(tmp_path, "--array=0-1", "-N", "2", "--ntasks-per-node=1", "--ntasks=2", str(JOBS / "sweep.sbatch"),
                 str(sweep), "--quiet")
    tasks = wait(job)
    assert [(t["ArrayTaskId"], t["ExitCode"], t["NodeList"]) for t in sorted(tasks, key=lambda t: t["ArrayTaskId"])] \
        == [("0", "0:0", "n[1-2]"), ("1", "0:0", "n[1-2]")]
    files = sorted((tmp_path / "grid").glob("*.h5"))
    assert [f.name for f in files] == ["test_000_diversefl_1_s1.h5", "test_001_median_1_s1.h5"]
    for f in files:
        with h5py.File(f, "r") as h:
            assert h["model/round"][0] == 3 and h.attrs["ranks"] == 2


def test_time_limit_signal_on_both_nodes_checkpoints_and_the_requeued_job_resumes(cluster, tmp_path: Path):
    tree = small_tree(clients=4, rounds=300, output={"checkpoint_every": 0})
    config = write_config(tmp_path, tree)
    job = sbatch(tmp_path, *TWO_BY_TWO, str(JOBS / "train.sbatch"), str(config), "--quiet")
    out = tmp_path / "runs" / f"mpifl-{job}" / "run.h5"
    deadline = time.monotonic() + 60
    wait_for_rounds(out, 2, deadline)
    # what --signal=TERM@120 does near the time limit: SIGTERM to every task of the job's steps, on every node
    slurm("scancel", "--signal=TERM", job)
    while squeue(job) not in ("PENDING", "") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert squeue(job) == "PENDING"  # requeued by the script; starts again when its credential expires (up.sh)
    (task,) = wait(job)
    log = (tmp_path / f"slurm-mpifl-{job}.out").read_text()
    assert task["ExitCode"] == "0:0" and task["NodeList"] == "n[1-2]", log
    assert "requeueing job" in log and f"job {job} restart 1: mpifl train --resume" in log
    assert log.count("stopped by signal after round") == 1  # rank 0 only
    for node in ("n1", "n2"):  # every task, on both nodes, checkpointed and exited 75
        assert re.search(rf"^srun: error: {node}: tasks? [0-9,-]+: Exited with exit code 75$", log, flags=re.M), log
    single = run(small_config(**tree), tmp_path / "single.h5", progress=None)
    with h5py.File(out, "r") as f:
        assert f["round"][:].tolist() == list(range(1, 301)) and f.attrs["ranks"] == 4
        np.testing.assert_allclose(f["model/theta"][:], single.theta.numpy(), rtol=1e-5, atol=1e-6)


def test_client_rank_killed_on_node_2_ends_the_job_and_keeps_finished_rounds(cluster, tmp_path: Path):
    config = write_config(tmp_path, small_tree(clients=6, rounds=50))
    out = tmp_path / "run.h5"
    job = sbatch(tmp_path, "-N", "2", "--ntasks-per-node=2", "--output=kill.out", "--wrap",
                 f"PMIX_MCA_psec=native srun --mpi=pmix {sys.executable} {TWO_NODE / 'kill_rank.py'} "
                 f"train -c {config} --out {out} --quiet")
    (task,) = wait(job, timeout=60)
    log = (tmp_path / "kill.out").read_text()
    assert task["JobState"] == "FAILED" and task["ExitCode"] != "0:0", log
    assert "[kill_rank] rank 3 on n2 sends itself SIGKILL in round 4" in log
    # srun ends the whole step as soon as a task dies of a signal: no rank waits on the dead one
    assert re.search(r"^srun: error: n2: tasks? [0-9,-]*3: Killed$", log, flags=re.M), log
    assert re.search(r"STEP \d+\.0 ON n1 CANCELLED", log), log
    with h5py.File(out, "r", swmr=True) as f:  # a killed SWMR writer leaves the file open-for-write flagged
        assert f["round"][:].tolist() == [1, 2, 3]
        assert f["clients/accepted"].shape == (3, 6)
        assert f["model/round"][0] == 0  # never finished
