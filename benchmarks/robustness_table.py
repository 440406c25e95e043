"""The rules x attacks table of a sweep's HDF5 files: final test accuracy per rule and attack, and each rule's worst
case over the attacks; prints Markdown.

    mpifl sweep configs/sweeps/attacks_fig3.yaml --local
    python benchmarks/robustness_table.py "runs/attacks_fig3/*.h5"

An attack's column is its name plus what distinguishes it within the sweep (``search``, ``realistic``); a run that
has not reached ``--round`` (default: the furthest any run reached) shows its last evaluation with its round in
brackets. ``--at 100,500,1000`` prints instead one line per run that reached the last of those rounds, with its
accuracy at each (the long runs of a grid that was mostly run short), and each rule's worst attack at each round.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import h5py
import numpy as np
import yaml


def column(config: dict) -> str:
    attack = config["attack"]
    name = attack["name"]
    params = attack.get("params") or {}
    extra = [f"{k}={v}" for k, v in params.items()]
    if attack.get("knowledge", "white_box") != "white_box" and name not in ("none", "class_flip", "sign_flip"):
        extra.append(attack["knowledge"])
    return f"{name} ({', '.join(extra)})" if extra else name


def history(path: Path) -> tuple[str, str, np.ndarray, np.ndarray]:
    """(rule, attack column, test accuracy per recorded round, those rounds)."""
    with h5py.File(path, "r", swmr=True) as f:
        config = yaml.safe_load(f.attrs["config"])
        accuracy, rounds = f["test_accuracy"][:], f["round"][:]
    return config["aggregator"]["name"], column(config), accuracy, rounds


def at_round(accuracy: np.ndarray, rounds: np.ndarray, at: int | None) -> tuple[float, int]:
    """Test accuracy at round ``at`` (None: the last) or the last evaluation before it, and that round."""
    evaluated = ~np.isnan(accuracy) & (rounds <= (at if at is not None else rounds.max(initial=0)))
    last = int(np.flatnonzero(evaluated)[-1]) if evaluated.any() else -1
    return (float(accuracy[last]), int(rounds[last])) if last >= 0 else (float("nan"), 0)


def long_table(paths: list[str], at: list[int]) -> None:
    """One line per run that reached the last round of ``at``, then each rule's worst attack at each of those rounds
    (over its runs with an attack)."""
    print("| rule | attack | " + " | ".join(f"round {r:,}" for r in at) + " |")
    print("|---" * (len(at) + 2) + "|")
    worst: dict[str, list[tuple[float, str]]] = {}
    for path in paths:
        rule, attack, accuracy, rounds = history(Path(path))
        if rounds.max(initial=0) < at[-1]:
            continue
        values = [at_round(accuracy, rounds, r)[0] for r in at]
        print(f"| `{rule}` | {attack} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
        if attack != "none":
            least = worst.setdefault(rule, [(float("inf"), "")] * len(at))
            worst[rule] = [min(old, (v, attack)) for old, v in zip(least, values)]
    if worst:
        print("\n| rule: worst attack | " + " | ".join(f"round {r:,}" for r in at) + " |")
        print("|---" * (len(at) + 1) + "|")
        for rule, cells in worst.items():
            print(f"| `{rule}` | " + " | ".join(f"{v:.3f} ({attack})" for v, attack in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="+", help="quoted globs of HDF5 run files")
    parser.add_argument("--round", type=int, default=None, help="the round to tabulate (default: the last)")
    parser.add_argument("--at", default=None, help="comma-separated rounds: one line per run that reached the last")
    args = parser.parse_args()
    paths = sorted(p for pattern in args.patterns for p in glob.glob(pattern))
    if args.at:
        long_table(paths, [int(r) for r in args.at.split(",")])
        return
    cells: dict[tuple[str, str], tuple[float, int]] = {}
    rules, attacks = [], []
    for path in paths:
        rule, attack, accuracy, rounds_ = history(Path(path))
        cells[(rule, attack)] = at_round(accuracy, rounds_, args.round)
        rules += [rule] if rule not in rules else []
        attacks += [attack] if attack not in attacks else []
    rounds = args.round or max((r for _, r in cells.values()), default=0)
    print("| rule | " + " | ".join(attacks) + " | worst (attack) |")
    print("|---" * (len(attacks) + 2) + "|")
    for rule in rules:
        row, worst = [], (float("inf"), "")
        for attack in attacks:
            if (rule, attack) not in cells:
                row.append("–")
                continue
            accuracy, round_ = cells[(rule, attack)]
            row.append(f"{accuracy:.3f}" + (f" ({round_})" if round_ != rounds else ""))
            if attack != "none" and accuracy < worst[0]:
                worst = (accuracy, attack)
        print(f"| `{rule}` | " + " | ".join(row) + f" | {worst[0]:.3f} ({worst[1]}) |")


if __name__ == "__main__":
    main()
