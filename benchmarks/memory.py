"""Peak memory per rank, and what many clients cost in one process; prints two Markdown tables.

    python benchmarks/memory.py --data-root ../shared/data                      # both tables
    python benchmarks/memory.py --ranks 1 5 9 21 --clients                      # ranks table only
    python benchmarks/memory.py --ranks --clients 20 100 1000 10000             # many-clients table only

Ranks table (Fig. 3: MNIST, MLP 2x200, 20 clients): each rank's peak resident set as recorded in the run's HDF5 file
(``ranks/peak_rss``), and the machine's view while the job ran: the largest drop of ``MemAvailable`` below its value
before the launch (what the job really took, counting pages shared between ranks once) and the smallest
``MemAvailable`` seen (what was left to spare).

Many-clients table (one process, Fig. 3 settings with n clients; sorted shards, so n = 10,000 gives 6 points a client,
1-point batches and 1-point DiverseFL samples): peak resident memory against the dataset plus one round's n x d
float32 update matrix, and the mean round time after the first round.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
from mpi_time_split import launch

MB = 2**20


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


class LowWater:
    """The smallest MemAvailable seen while the block runs, sampled every 50 ms."""

    def __enter__(self) -> LowWater:
        self.before = self.low = mem_available()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.low = min(self.low, mem_available())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ranks_table(ranks: list[int], rounds: int, extra: list[str]) -> None:
    print(f"\nFig. 3, {rounds} rounds; MB = 2^20 bytes\n")
    print("| ranks | rank 0 peak RSS | client rank peak RSS (max) | sum of peak RSS | job's MemAvailable drop "
          "| smallest MemAvailable | wall s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for p in ranks:
            out = Path(tmp) / f"r{p}.h5"
            started = time.perf_counter()
            with LowWater() as water:
                launch(p, "configs/fig3_mnist_mlp.yaml", rounds, out, extra)
            wall = time.perf_counter() - started
            with h5py.File(out) as f:
                peaks = f["ranks/peak_rss"][-1] / MB
            client = f"{peaks[1:].max():.0f}" if p > 1 else "–"
            print(f"| {p} | {peaks[0]:.0f} | {client} | {peaks.sum():.0f} | {(water.before - water.low) / MB:.0f} "
                  f"| {water.low / MB:.0f} | {wall:.1f} |")


def clients_table(counts: list[int], rounds: int, extra: list[str]) -> None:
    print(f"\nOne process, Fig. 3 settings with n clients (k = n/4 Byzantine, sign flip, DiverseFL), {rounds} rounds\n")
    print("| clients n | points per client | n x d float32 MB | peak RSS MB | peak / (dataset + n x d) "
          "| ms per round |")
    print("|---|---|---|---|---|---|")
    dataset_mb = (60000 + 10000) * (784 + 1) / MB  # MNIST images and labels as stored (uint8)
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            out = Path(tmp) / f"n{n}.h5"
            launch(1, "configs/fig3_mnist_mlp.yaml", rounds, out,
                   [*extra, "--set", f"clients={n}", "--set", f"byzantine.k={n // 4}", "--set",
                    f"train.eval_every={rounds}", "--set", f"train.client_chunk={min(64, max(4, n // 20))}"])
            with h5py.File(out) as f:
                dim = f["model/theta"].shape[0]
                peak = f["ranks/peak_rss"][-1, 0] / MB
                wall = sum(f[f"time/{p}"][1:] for p in ("broadcast", "client_compute", "gather", "guiding",
                                                         "aggregation", "evaluation"))
            matrix = n * dim * 4 / MB
            print(f"| {n} | {60000 // n} | {matrix:.0f} | {peak:.0f} | {peak / (dataset_mb + matrix):.2f} "
                  f"| {1000 * float(np.mean(wall)):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="*", default=[1, 5, 9, 21])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, nargs="*", default=[20, 100, 1000, 10000])
    parser.add_argument("--client-rounds", type=int, default=3)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    extra = ["--data-root", args.data_root] if args.data_root else []
    if args.ranks:
        ranks_table(args.ranks, args.rounds, extra)
    if args.clients:
        clients_table(args.clients, args.client_rounds, extra)


if __name__ == "__main__":
    main()
