"""Per-round time split (compute vs communication) for 1 process and P MPI ranks; prints a Markdown table.

    python benchmarks/mpi_time_split.py --ranks 1 5 21 --rounds 20 --data-root ../shared/data

Every point runs the same config and seed (default: the Fig. 3 MNIST experiment), so only the timing differs. Round 1
(warm-up) is left out of the means. On rank 0, `gather` is the wait from the end of the broadcast until the [n, d]
matrix is complete, so it contains the slowest client's compute; `comm` = broadcast + gather − client_compute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

PHASES = ("broadcast", "client_compute", "gather", "guiding", "aggregation", "evaluation")
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_mpi_yield_when_idle": "1",
           "PMIX_MCA_psec": "native", "OMP_NUM_THREADS": "1"}


def launch(ranks: int, config: str, rounds: int, out: Path, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "mpifl", "train", "-c", config, "--rounds", str(rounds), "--out", str(out),
           "--quiet", *extra]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", "--bind-to", "none", *cmd]
    subprocess.run(cmd, check=True, env={**os.environ, **MPI_ENV})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/fig3_mnist_mlp.yaml")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 5, 21])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    extra = [x for o in args.overrides for x in ("--set", o)]
    extra += ["--data-root", args.data_root] if args.data_root else []

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in args.ranks:
            out = Path(tmp) / f"p{ranks}.h5"
            launch(ranks, args.config, args.rounds, out, extra)
            with h5py.File(out, "r", swmr=True) as f:
                t = {p: float(np.mean(f[f"time/{p}"][1:])) for p in PHASES}
            inside_gather = ranks > 1  # rank 0 waits for the clients' compute inside its gather
            total = sum(t[p] for p in PHASES if not (inside_gather and p == "client_compute"))
            comm = t["broadcast"] + t["gather"] - t["client_compute"] if ranks > 1 else 0.0
            rows.append((ranks, total, t, comm))
    print(f"\n{args.config}, {args.rounds} rounds, mean ms per round (round 1 excluded)\n")
    print("| ranks | round | " + " | ".join(PHASES) + " | comm |")
    print("|---" * (len(PHASES) + 3) + "|")
    for ranks, total, t, comm in rows:
        cells = " | ".join(f"{1000 * t[p]:.1f}" for p in PHASES)
        print(f"| {ranks} | {1000 * total:.1f} | {cells} | {1000 * comm:.1f} |")


if __name__ == "__main__":
    main()
