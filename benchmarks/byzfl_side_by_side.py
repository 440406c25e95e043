"""ByzFL's own run_benchmark and `mpifl byzfl run` on the same ByzFL JSON, same machine, same threads.

    python benchmarks/byzfl_side_by_side.py --data-root /work/shared/data --steps 200 --seeds 3

The grid: 10 honest clients, f in {1, 3}, gamma_similarity_niid at two levels, TrMean and GeometricMedian behind NNM,
SignFlipping and Optimal_ALittleIsEnough (``--attacks``), fc_mnist on MNIST, one learning rate. ByzFL reads MNIST through torchvision from
data_folder (the torchvision layout, MNIST/raw/*-ubyte: no download when the files are there). Both run one process
with one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)); wall times are whole processes (start-up and data
loading included). Per cell: the final test accuracy, mean ± std over seeds, of each; then both wall and CPU times, and
mpifl's seconds per run in each phase of its rounds (from the run files' ``time/*``; a rank-0 attack such as
Optimal_ALittleIsEnough runs in ``gather``, where the Byzantine rows are forged).

The seeds are ByzFL's data-distribution seeds (one training seed): in ByzFL that seed draws the partition and the
initial model, the training seed only the batches, so seeds of one data-distribution seed share one draw of the
partition and initial model, and the two tools can only agree in distribution over those draws (ByzFL's own draws
spread f = 3 SignFlipping under TrMean over 6 points; see docs/byzfl.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


ATTACKS = ("SignFlipping", "Optimal_ALittleIsEnough")
PHASES = ("client_compute", "gather", "aggregation", "evaluation")  # the others are ~0 in one process


def config(data_root: str, steps: int, seeds: int, results: str, gammas: tuple[float, ...] = (1.0, 0.5),
           attacks: tuple[str, ...] = ATTACKS) -> dict:
    return {
        "benchmark_config": {
            "training_algorithm": {"name": "DSGD", "parameters": {}},
            "nb_steps": steps, "device": "cpu", "training_seed": 0, "nb_training_seeds": 1,
            "nb_honest_clients": 10, "f": [1, 3], "size_train_set": 1.0,
            "data_distribution_seed": 0, "nb_data_distribution_seeds": seeds,
            "data_distribution": [{"name": "gamma_similarity_niid", "distribution_parameter": list(gammas)}],
        },
        "model": {"name": "fc_mnist", "dataset_name": "mnist", "nb_labels": 10, "loss": "NLLLoss",
                  "learning_rate": 0.1, "learning_rate_decay": 1.0, "milestones": []},
        "aggregator": [{"name": "TrMean", "parameters": {}}, {"name": "GeometricMedian", "parameters": {}}],
        "pre_aggregators": [{"name": "NNM", "parameters": {}}],
        "honest_clients": {"momentum": 0.9, "weight_decay": 0.0001, "batch_size": 25},
        "attack": [{"name": attack, "parameters": {}} for attack in attacks],
        "evaluation_and_results": {"evaluation_delta": 50, "batch_size_evaluation": 128, "evaluate_on_test": True,
                                   "store_per_client_metrics": False, "store_models": False,
                                   "data_folder": data_root, "results_directory": results},
    }


def timed(argv: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of a whole child process. CPU time (user + system) is the fair measure on a machine that
    other jobs share: wall time grows with the load, CPU time hardly."""
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{argv[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - start, (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)


def cell(f: int, gamma: float, agg: str, attack: str) -> tuple:
    return f, gamma, agg, attack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("MPIFL_DATA_ROOT", "/work/shared/data"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3, help="data-distribution seeds (each its partition and initial "
                    "model), one training seed.")
    ap.add_argument("--gammas", default="1.0,0.5", help="gamma_similarity_niid levels, comma-separated.")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="ByzFL attack names, comma-separated.")
    ap.add_argument("--work", default="byzfl_side_by_side")
    ap.add_argument("--skip-byzfl", action="store_true", help="Reuse ByzFL's results in WORK/byzfl.")
    args = ap.parse_args()
    gammas = tuple(float(g) for g in args.gammas.split(","))
    attacks = tuple(args.attacks.split(","))
    work = Path(args.work).resolve()
    (work / "byzfl").mkdir(parents=True, exist_ok=True)
    (work / "mpifl").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}

    spec = config(args.data_root, args.steps, args.seeds, str(work / "byzfl" / "results"), gammas, attacks)
    (work / "byzfl" / "config.json").write_text(json.dumps(spec, indent=2))
    byzfl_code = ("import torch; torch.set_num_threads(1); "
                  "from byzfl.benchmark.benchmark import run_benchmark; run_benchmark(1)")
    t_byzfl = tuple(float(t) for t in (work / "byzfl" / "time.txt").read_text().split()[:2]) if args.skip_byzfl \
        else timed([sys.executable, "-c", byzfl_code], work / "byzfl", env)
    (work / "byzfl" / "time.txt").write_text(" ".join(str(t) for t in t_byzfl))

    mspec = config(args.data_root, args.steps, args.seeds, str(work / "mpifl" / "results"), gammas, attacks)
    (work / "mpifl" / "config.json").write_text(json.dumps(mspec, indent=2))
    t_mpifl = timed([sys.executable, "-m", "mpifl", "byzfl", "run", str(work / "mpifl" / "config.json"), "--local",
                     "--quiet"], work / "mpifl", env)

    rows, times = [], []
    for f in (1, 3):
        for gamma in gammas:
            for agg in ("TrMean", "GeometricMedian"):
                for attack in attacks:
                    name = (f"mnist_fc_mnist_n_{10 + f}_f_{f}_d_{f}_gamma_similarity_niid_{gamma}_{agg}_NNM_{attack}_"
                            f"lr_0.1_mom_0.9_wd_0.0001")
                    b = [np.atleast_1d(np.genfromtxt(work / "byzfl" / "results" / name /
                                                     f"test_accuracy_tr_seed_0_dd_seed_{s}.txt", delimiter=","))[-1]
                         for s in range(args.seeds)]
                    m, spent = [], []
                    for s in range(args.seeds):
                        with h5py.File(work / "mpifl" / "results" / f"{name}_tr_seed_0_dd_seed_{s}.h5") as fh:
                            acc = fh["test_accuracy"][:]
                            m.append(float(acc[~np.isnan(acc)][-1]))
                            spent.append([float(fh["time"][phase][:].sum()) for phase in PHASES])
                    rows.append((f, gamma, agg, attack, np.mean(b), np.std(b), np.mean(m), np.std(m)))
                    times.append((f, gamma, agg, attack, np.mean(spent, axis=0)))
    print(f"{args.steps} steps, {args.seeds} seeds, 10 honest clients, fc_mnist on MNIST, NNM in front, batch 25, "
          f"lr 0.1, momentum 0.9, 1 thread each")
    print("| f | gamma | aggregator | attack | ByzFL acc | mpifl acc | |diff| | target max(2 pts, 2 std) | ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f, gamma, agg, attack, bm, bs, mm, ms in rows:
        target = max(0.02, 2 * max(bs, ms))
        ok = "yes" if abs(bm - mm) <= target else "NO"
        print(f"| {f} | {gamma} | {agg} | {attack} | {bm:.4f} ± {bs:.4f} | {mm:.4f} ± {ms:.4f} | {abs(bm - mm):.4f} "
              f"| {target:.4f} | {ok} |")
    runs = len(rows) * args.seeds
    print(f"whole grid ({runs} runs each): wall ByzFL {t_byzfl[0]:.1f} s, mpifl {t_mpifl[0]:.1f} s, "
          f"{t_byzfl[0] / t_mpifl[0]:.1f}x; CPU ByzFL {t_byzfl[1]:.1f} s, mpifl {t_mpifl[1]:.1f} s, "
          f"{t_byzfl[1] / t_mpifl[1]:.1f}x")
    print("\nmpifl, seconds per run by phase (mean over seeds; gather holds the rank-0 attack)")
    print("| f | gamma | aggregator | attack | " + " | ".join(PHASES) + " | sum |")
    print("|---|---|---|---|" + "---|" * (len(PHASES) + 1))
    for f, gamma, agg, attack, spent in times:
        print(f"| {f} | {gamma} | {agg} | {attack} | " + " | ".join(f"{t:.2f}" for t in spent) + f" | {spent.sum():.2f} |")


if __name__ == "__main__":
    main()
