"""ByzFL's evaluation (``benchmark/evaluate_results.py``) computed from mpifl's HDF5 runs.

For every (aggregator with its pre-aggregators, f, heterogeneity level) and every hyper-parameter candidate
(learning rate, momentum, weight decay), each attack scores the best accuracy over the evaluation points of the
accuracy curve averaged over seeds; the candidate kept is the one whose worst score over the attacks is highest
(``find_best_hyperparameters``), and that worst score is the cell's value (``test_heatmap``). ByzFL selects on a
validation split and reports test accuracy; mpifl has no validation split and uses test accuracy for both. Ties go
to the candidate listed first (smallest learning rate, then momentum, then weight decay).

Everything is read from the configs stored in the run files, so any set of mpifl runs can be evaluated this way,
not only those `mpifl byzfl run` wrote.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..report import Run, ReportError, load_run

PARAMETRIZED = ("gamma_similarity_niid", "dirichlet_niid", "dirichlet")


@dataclass(frozen=True)
class Key:
    aggregator: str  # pre-aggregators and rule, e.g. nnm+trmean
    f: int
    heterogeneity: str  # partition, with its parameter where it has one


@dataclass(frozen=True)
class Cell:
    key: Key
    candidate: tuple[float, float, float]  # lr, momentum, weight decay
    worst: float  # min over attacks of the best seed-averaged accuracy
    attacks: dict[str, tuple[float, float, int, int]]  # attack -> (best mean accuracy, its std over seeds, round, seeds)
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # attack -> rounds, mean, std over seeds


def key_of(config: dict) -> Key:
    agg = config["aggregator"]
    byz = config["byzantine"]
    f = len(byz.get("clients", [])) if byz["model"] == "fixed" else int(byz.get("k", 0)) if byz["model"] != "none" \
        else 0
    data = config["data"]
    het = data["partition"] + (f" {data['alpha']:g}" if data["partition"] in PARAMETRIZED else "")
    return Key("+".join([*agg.get("pre", []), agg["name"]]), f, het)


def candidate_of(config: dict) -> tuple[float, float, float]:
    train = config["train"]
    return float(train["lr"]["base"]), float(train.get("momentum", 0.0)), float(train["weight_decay"])


def _curve(runs: list[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds evaluated by every seed, the mean accuracy over seeds and its std (ddof 0, as numpy's default)."""
    evaluated = [dict(zip(*r.evaluated())) for r in runs]
    rounds = sorted(set.intersection(*(set(e) for e in evaluated)))
    if not rounds:
        raise ReportError(f"{runs[0].path} and its other seeds share no evaluated round.")
    acc = np.array([[e[r] for r in rounds] for e in evaluated], dtype=float)
    return np.array(rounds), acc.mean(axis=0), acc.std(axis=0)


def evaluate(runs: list[Run]) -> list[Cell]:
    """One cell per (aggregator, f, heterogeneity), at the candidate ByzFL's selection keeps."""
    groups: dict[Key, dict[tuple, dict[str, list[Run]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        groups[key_of(run.config)][candidate_of(run.config)][run.attack].append(run)
    cells = []
    for key in sorted(groups, key=lambda k: (k.aggregator, k.f, k.heterogeneity)):
        attacks = sorted({a for by_attack in groups[key].values() for a in by_attack})
        best: Cell | None = None
        for candidate in sorted(groups[key]):
            by_attack = groups[key][candidate]
            if set(by_attack) != set(attacks):
                continue  # ByzFL needs every attack at every candidate; a candidate missing one cannot be judged
            scores, curves = {}, {}
            for attack in attacks:
                rounds, mean, std = curves[attack] = _curve(by_attack[attack])
                i = int(np.argmax(mean))
                scores[attack] = (float(mean[i]), float(std[i]), int(rounds[i]), len(by_attack[attack]))
            worst = min(s[0] for s in scores.values())
            if best is None or worst > best.worst:
                best = Cell(key, candidate, worst, scores, curves)
        if best is not None:
            cells.append(best)
    return cells


def write_table(cells: list[Cell], out: Path) -> list[Path]:
    attacks = sorted({a for c in cells for a in c.attacks})
    header = ["aggregator", "f", "heterogeneity", "lr", "momentum", "weight_decay", "worst_case_accuracy", *attacks]
    rows = []
    for c in cells:
        per = [f"{c.attacks[a][0]:.4f} ± {c.attacks[a][1]:.4f} (r{c.attacks[a][2]}, {c.attacks[a][3]} seeds)"
               if a in c.attacks else "" for a in attacks]
        rows.append([c.key.aggregator, str(c.key.f), c.key.heterogeneity, f"{c.candidate[0]:g}", f"{c.candidate[1]:g}",
                     f"{c.candidate[2]:g}", f"{c.worst:.4f}", *per])
    md = out / "byzfl_table.md"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    md.write_text("Best learning rate by worst case over attacks (ByzFL's evaluate_results); accuracy = max over "
                  "evaluation rounds of the seed-averaged test accuracy, ± its std over seeds.\n\n" + "\n".join(lines)
                  + "\n")
    path_csv = out / "byzfl_table.csv"
    with path_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for c in cells:
            writer.writerow([c.key.aggregator, c.key.f, c.key.heterogeneity, *c.candidate, f"{c.worst:.6f}",
                             *(f"{c.attacks[a][0]:.6f}" if a in c.attacks else "" for a in attacks)])
    return [md, path_csv]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "+-." else "_" for ch in text)


def plot(cells: list[Cell], out: Path) -> list[Path]:
    """Per aggregator: a heatmap of the worst-case accuracy over heterogeneity × f, and accuracy curves per cell."""
    from ..report import _pyplot

    plt = _pyplot()
    written = []
    for aggregator in sorted({c.key.aggregator for c in cells}):
        mine = [c for c in cells if c.key.aggregator == aggregator]
        fs = sorted({c.key.f for c in mine})
        hets = sorted({c.key.heterogeneity for c in mine})
        table = np.full((len(hets), len(fs)), np.nan)
        for c in mine:
            table[hets.index(c.key.heterogeneity), fs.index(c.key.f)] = c.worst
        fig, ax = plt.subplots(figsize=(1.2 * len(fs) + 3, 0.6 * len(hets) + 1.8))
        image = ax.imshow(table, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), value in np.ndenumerate(table):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k")
        ax.set_xticks(range(len(fs)), [str(f) for f in fs])
        ax.set_yticks(range(len(hets)), hets)
        ax.set_xlabel("Byzantine clients f")
        ax.set_ylabel("heterogeneity")
        ax.set_title(f"{aggregator}: worst case over attacks")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        path = out / f"heatmap_{_slug(aggregator)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

        fig, axes = plt.subplots(len(hets), len(fs), figsize=(4 * len(fs), 3 * len(hets)), squeeze=False)
        for c in mine:
            ax = axes[hets.index(c.key.heterogeneity)][fs.index(c.key.f)]
            for attack, (rounds, mean, std) in sorted(c.curves.items()):
                ax.plot(rounds, mean, label=attack)
                ax.fill_between(rounds, mean - std, mean + std, alpha=0.25)
            ax.set_title(f"f={c.key.f}, {c.key.heterogeneity}, lr={c.candidate[0]:g}", fontsize=9)
            ax.set_xlabel("round")
            ax.set_ylabel("test accuracy")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
        fig.suptitle(aggregator)
        fig.tight_layout()
        path = out / f"curves_{_slug(aggregator)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def report(paths: list[Path], out: Path) -> list[Path]:
    runs = [load_run(p) for p in paths]
    cells = evaluate(runs)
    if not cells:
        raise ReportError("no (aggregator, f, heterogeneity) group has every attack at one learning rate.")
    out.mkdir(parents=True, exist_ok=True)
    return [*write_table(cells, out), *plot(cells, out)]
