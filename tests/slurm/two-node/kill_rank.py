"""Runs `mpifl`, except that the job's last task (on the last node under SLURM's block distribution) kills itself
with SIGKILL when its clients start round 4: a client rank on node 2 dying without a word.

    srun --mpi=pmix python tests/slurm/two-node/kill_rank.py train -c CONFIG --out run.h5
"""

import os
import signal
import socket
import sys

from mpifl.clients import GradientClients
from mpifl.cli import main

honest_messages = GradientClients.messages
victim = os.environ.get("SLURM_PROCID") == str(int(os.environ.get("SLURM_NTASKS", "0")) - 1)


def dying_messages(self, theta, round_, byzantine, lr, sampled=None):  # type: ignore[no-untyped-def]
    if round_ == 4 and victim:
        print(f"[kill_rank] rank {os.environ['SLURM_PROCID']} on {socket.gethostname()} sends itself SIGKILL in "
              "round 4", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return honest_messages(self, theta, round_, byzantine, lr, sampled)


GradientClients.messages = dying_messages  # type: ignore[method-assign]
sys.exit(main())
