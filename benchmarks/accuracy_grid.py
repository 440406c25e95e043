"""Final test accuracy of every rule under every attack for one paper config; prints a Markdown table.

    python benchmarks/accuracy_grid.py configs/fig3_mnist_mlp.yaml --rounds 300 --data-root ../shared/data

Runs one point after the other in this process (single-process transport); HDF5 files go to --out-dir.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np

from mpifl.config import load
from mpifl.train import run

RULES = ["diversefl", "oracle", "median", "trmean", "noisy_median", "rsa"]
ATTACKS = ["none", "class_flip", "sign_flip"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--rules", nargs="+", default=RULES)
    parser.add_argument("--attacks", nargs="+", default=ATTACKS)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out-dir", default="runs/grid")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    rows = []
    for rule in args.rules:
        cells = []
        for attack in args.attacks:
            extra = [f"rounds={args.rounds}", f"aggregator.name={rule}", f"attack.name={attack}"]
            extra += [f"data.root={args.data_root}"] if args.data_root else []
            if attack == "none":
                extra.append("byzantine.model=none")
            cfg = load(args.config, [*args.overrides, *extra])
            out = Path(args.out_dir) / f"{cfg.name}_{rule}_{attack}_r{args.rounds}.h5"
            started = time.perf_counter()
            result = run(cfg, out, progress=None, overwrite=True)
            with h5py.File(out, "r") as f:
                acc = f["test_accuracy"][:]
            evaluated = acc[~np.isnan(acc)]
            tail = evaluated[-max(1, len(evaluated) // 10):].mean()
            cells.append(f"{result.final.accuracy:.4f} ({tail:.4f})")
            print(f"# {rule:>12} {attack:>10}: final {result.final.accuracy:.4f}, last-10% mean {tail:.4f}, "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
        rows.append(f"| {rule} | " + " | ".join(cells) + " |")
    print(f"\n{args.config}, {args.rounds} rounds: final test accuracy (mean over the last 10 % of evaluations)\n")
    print("| rule | " + " | ".join(args.attacks) + " |")
    print("|---" * (len(args.attacks) + 1) + "|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
