"""A client rank that raises in round 4: launched by test_mpi.py as one MPMD part of an mpirun job."""

import sys

from mpifl.algorithms.gradient import GradientClients
from mpifl.cli import main

honest_messages = GradientClients.messages


def failing_messages(self, theta, round_, byzantine, lr):  # type: ignore[no-untyped-def]
    if round_ == 4:
        raise RuntimeError("injected client failure in round 4")
    return honest_messages(self, theta, round_, byzantine, lr)


GradientClients.messages = failing_messages  # type: ignore[method-assign]
sys.exit(main())
