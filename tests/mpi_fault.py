"""Runs `mpifl` with one fault injected; test_mpi.py launches it as one MPMD part of an mpirun job.

    python tests/mpi_fault.py raise   train ...   # this rank's clients raise in round 4
    python tests/mpi_fault.py sigterm train ...   # this rank receives SIGTERM in round 4 (like a SLURM time limit)
    python tests/mpi_fault.py nopickle train ...  # any pickle use on this rank raises
    python tests/mpi_fault.py diverge train ...   # the server's step is NaN in round 4 (give this part rank 0)
"""

import os
import signal
import sys

from mpi4py import MPI

from mpifl.clients import GradientClients
from mpifl.cli import main
from mpifl.server import Server

FAULT = sys.argv.pop(1)
honest_messages = GradientClients.messages


def faulty_messages(self, theta, round_, byzantine, lr, sampled=None):  # type: ignore[no-untyped-def]
    if round_ == 4 and FAULT == "raise":
        raise RuntimeError("injected client failure in round 4")
    if round_ == 4 and FAULT == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    return honest_messages(self, theta, round_, byzantine, lr, sampled)


honest_decide = Server.decide


def diverging_decide(self, screened, theta, byzantine, r):  # type: ignore[no-untyped-def]
    decision = honest_decide(self, screened, theta, byzantine, r)
    if r == 4:
        decision.direction[0] = float("nan")
    return decision


def no_pickle(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("pickle used on an MPI path")


if FAULT == "nopickle":
    MPI.pickle.__init__(no_pickle, no_pickle)
if FAULT == "diverge":
    Server.decide = diverging_decide  # type: ignore[method-assign]
GradientClients.messages = faulty_messages  # type: ignore[method-assign]
sys.exit(main())
