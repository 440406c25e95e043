"""Cross-device scale: what a round costs as the population grows with the cohort fixed; prints a Markdown table.

    python benchmarks/cross_device.py --data-root ../shared/data            # every case (a few minutes on 2 cores)
    python benchmarks/cross_device.py --skip-before --skip-mnist             # LEAF cases only

Cases, each in its own process (peak resident memory is that process's ``ru_maxrss``; a round's time is the mean
wall time of the rounds after the first, from the HDF5 file's phase times):

- LEAF Synthetic(1, 1) (the FedProx model: softmax regression on 60 features), 10 % random sign-flipping Byzantine
  clients, 1,000 clients a round, DiverseFL (5-point samples) and the median, from populations of 1,000 (every
  client every round: their data made once, at set-up), 2,000 and 1,000,000 (a cohort of 1,000, whose data the
  workers make from (seed, client) each round).
- MNIST in 10,000 sorted shards (configs/scale_shards_10000.yaml) with 100 clients a round, on this checkout and, for
  "before", on a checkout of the commit before cohort rounds (``--before``, default cd673d8, where rank 0 still
  gathered and screened the [n, d] matrix with zero rows for absent clients).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import h5py, numpy as np
from mpifl.config import from_tree, load
spec = json.loads(sys.argv[1])
cfg = load(spec["config"], spec["set"]) if "config" in spec else from_tree(spec["tree"])
from mpifl.train import run
start = time.perf_counter()
run(cfg, Path(spec["out"]), overwrite=True, progress=None)
total = time.perf_counter() - start
with h5py.File(spec["out"]) as f:
    per_round = sum(f[f"time/{p}"][1:] for p in ("broadcast", "client_compute", "gather", "guiding", "aggregation",
                                                  "evaluation"))
    accuracy = float(f["test_accuracy"][-1])
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ms_per_round": 1000 * float(np.mean(per_round)), "total_s": total, "accuracy": accuracy}))
"""


def leaf(population: int, cohort: int, rule: str, rounds: int) -> dict:
    params = {"sample_size": 5, "sample_fraction": None} if rule == "diversefl" else {}
    return {"name": "leaf", "seed": 0, "clients": population, "rounds": rounds,
            "data": {"dataset": "leaf_synthetic", "scale": "raw", "params": {"alpha": 1.0, "beta": 1.0}},
            "model": {"name": "softmax", "init": "zeros"},
            "train": {"batch_size": 10, "batch_fraction": None, "weight_decay": 0.0, "client_chunk": 64,
                      "lr": {"schedule": "constant", "base": 0.05}, "eval_every": rounds,
                      "clients_per_round": cohort if cohort < population else None},
            "byzantine": {"model": "random", "k": cohort // 10 if cohort < population else population // 10},
            "attack": {"name": "sign_flip"}, "aggregator": {"name": rule, "params": params},
            "output": {"checkpoint_every": 0, "progress_every": 1000}}


def measure(spec: dict, src: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before", default="cd673d8", help="commit before cohort rounds, for the MNIST 'before' row")
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument("--skip-mnist", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cross_device_"))
    src = ROOT / "src"
    rows = []
    for population in (1_000, 2_000, 1_000_000):
        for rule in ("diversefl", "median"):
            spec = {"tree": leaf(population, 1_000, rule, args.rounds), "out": str(work / f"leaf_{population}.h5")}
            rows.append((f"LEAF Synthetic(1, 1), {rule}", population, 1_000, "this checkout",
                         measure(spec, src, args.threads)))
            print(rows[-1], file=sys.stderr, flush=True)
    if not args.skip_mnist:
        mnist = {"config": str(ROOT / "configs" / "scale_shards_10000.yaml"),
                 "set": [f"rounds={args.rounds}", f"train.eval_every={args.rounds}", "train.clients_per_round=100",
                         "output.checkpoint_every=0", f"data.root={args.data_root}"], "out": str(work / "m.h5")}
        rows.append(("MNIST shards, diversefl", 10_000, 100, "this checkout", measure(mnist, src, args.threads)))
        print(rows[-1], file=sys.stderr, flush=True)
        if not args.skip_before:
            before = work / "before"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
                           check=True, capture_output=True)
            try:
                rows.append(("MNIST shards, diversefl", 10_000, 100, f"before ({args.before})",
                             measure(mnist, before / "src", args.threads)))
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=True)
    print(f"{args.rounds} rounds a case, one process, {args.threads} torch thread(s); a round's time is the mean after "
          "the first.\n")
    print("| case | population | cohort | code | peak RSS (MB) | ms / round | final accuracy |")
    print("|---|---|---|---|---|---|---|")
    for name, population, cohort, code, m in rows:
        print(f"| {name} | {population:,} | {cohort:,} | {code} | {m['rss_mb']:.0f} | {m['ms_per_round']:.0f} | "
              f"{m['accuracy']:.3f} |")


if __name__ == "__main__":
    main()
