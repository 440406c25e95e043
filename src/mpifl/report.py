"""Offline analysis of HDF5 runs: the paper's figures (accuracy curves, backdoor, Fig. 1's C1×C2) and a summary table.

Finished runs are opened plainly; runs a job is still writing, and runs that were killed (HDF5 marks both as open
for writing), in SWMR read mode. Datasets of a file being written may briefly differ in length by a row; every run is
cut to the rounds that all its datasets hold.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import math
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .config import tree_from_yaml
from .filters.diversefl import Params as DiverseFLParams
from .metrics import PHASES, complete_rows, finished_round, is_cohort_file, open_for_reading, schema_problem
from .screening import INVALID, REASONS

RULE_NAMES = {"diversefl": "DiverseFL", "oracle": "OracleSGD", "median": "Median", "trmean": "TrMean",
              "noisy_median": "N-Median", "rsa": "RSA", "mean": "Mean"}
ATTACK_ORDER = ["none", "class_flip", "sign_flip", "backdoor", "gaussian"]
FILTERING_RULES = {"diversefl", "oracle"}  # rules whose rates are shown even when they rejected nobody
MEMORY_COLUMNS = ("rss_rank0", "rss_client_max", "gpu_rank0", "gpu_client_max")
FIGSIZE, DPI = (4.0, 3.0), 100  # inches per panel; PNG pixels = inches * DPI


class ReportError(ValueError):
    """A file that cannot be reported on; the message names it and why."""


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict
    round: np.ndarray
    accuracy: np.ndarray
    backdoor: np.ndarray
    byzantine: np.ndarray
    sampled: np.ndarray  # [R, n] the client took part in the round (train.clients_per_round)
    accepted: np.ndarray
    weight: np.ndarray  # [R, n] the client's share of the step; NaN where the rule defines none
    c1: np.ndarray
    c2: np.ndarray
    flags: np.ndarray
    times: dict[str, np.ndarray]
    finished: bool
    ranks: int
    peak_rss: np.ndarray  # [R, P] bytes, each rank's peak so far
    peak_gpu: np.ndarray  # [R, P] bytes
    ids: np.ndarray | None = None  # [R, m] a cross-device run's cohorts: the per-client columns are these clients

    @property
    def rule(self) -> str:
        return self.config["aggregator"]["name"]

    @property
    def attack(self) -> str:
        return self.config["attack"]["name"]

    @property
    def diversefl(self) -> DiverseFLParams:
        """DiverseFL's parameters in this run (its defaults where the config leaves them out)."""
        params = self.config["aggregator"].get("params", {})
        return DiverseFLParams(**{f.name: params[f.name] for f in dataclasses.fields(DiverseFLParams)
                                  if f.name in params})

    @property
    def sample(self) -> str:
        p = self.diversefl
        return f"s={p.sample_size}" if p.sample_size is not None else f"{100 * p.sample_fraction:g}%"

    def evaluated(self) -> tuple[np.ndarray, np.ndarray]:
        keep = ~np.isnan(self.accuracy)
        return self.round[keep], self.accuracy[keep]


def _open(path: Path) -> h5py.File:
    try:
        return open_for_reading(path)
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: not a readable HDF5 file ({exc}).") from None


def load_run(path: str | Path) -> Run:
    """Read one run file, refusing foreign files and other schema versions with a clear message."""
    path = Path(path)
    with _open(path) as f:
        problem = schema_problem(f)
        if problem is not None:
            raise ReportError(f"{path}: {problem}.")
        try:
            names = ["round", "test_accuracy", "backdoor_accuracy", "clients/byzantine", "clients/sampled",
                     "clients/accepted", "clients/weight",
                     "clients/c1", "clients/c2", "clients/flags", *(f"time/{p}" for p in PHASES),
                     "ranks/peak_rss", "ranks/peak_gpu"]
            rows = complete_rows(f)
            data = {n: f[n][:rows] for n in names}
            finished = finished_round(f) > 0
            config = tree_from_yaml(str(f.attrs["config"]), f"the config stored in {path}")
            ranks = int(f.attrs["ranks"])
            ids = f["clients/id"][:rows] if is_cohort_file(f) else None
        except (KeyError, OSError) as exc:
            raise ReportError(f"{path}: damaged mpifl run ({exc}).") from None
    return Run(path, config, data["round"], data["test_accuracy"], data["backdoor_accuracy"],
               data["clients/byzantine"], data["clients/sampled"], data["clients/accepted"], data["clients/weight"],
               data["clients/c1"],
               data["clients/c2"],
               data["clients/flags"], {p: data[f"time/{p}"] for p in PHASES}, finished, ranks,
               data["ranks/peak_rss"], data["ranks/peak_gpu"], ids)


def expand(patterns: list[str]) -> list[Path]:
    """Paths, folders (their ``*.h5`` files) and glob patterns (quoted, for shells that do not expand them) → sorted
    unique files."""
    found: list[Path] = []
    for pattern in patterns:
        if Path(pattern).is_dir():
            matches = sorted(glob.glob(str(Path(glob.escape(pattern)) / "*.h5")))
        else:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise ReportError(f"no file matches {pattern}.")
        found += [Path(m) for m in matches]
    return sorted(set(found))


def labels(runs: list[Run]) -> list[str]:
    """Rule name, plus whatever else differs between the runs (sample size, seed, experiment); not the attack,
    which gets its own panel."""
    def facet(run: Run) -> dict[str, str]:
        return {"sample": run.sample if run.rule == "diversefl" else "", "seed": f"seed {run.config['seed']}",
                "name": run.config["name"]}

    facets = [facet(r) for r in runs]
    varying = [k for k in ("name", "sample", "seed") if len({f[k] for f in facets}) > 1]
    out = []
    for run, f in zip(runs, facets):
        extra = [f[k] for k in varying if f[k]]
        out.append(RULE_NAMES.get(run.rule, run.rule) + (f" ({', '.join(extra)})" if extra else ""))
    return out


@dataclass(frozen=True)
class Summary:
    file: str
    rule: str
    attack: str
    sample: str
    seed: int
    rounds: int
    ranks: int
    finished: bool
    final_accuracy: float
    best_accuracy: float
    last10_accuracy: float
    rounds_to_target: float
    tpr: float
    fpr: float
    wall_seconds: float
    phase_ms: dict[str, float]
    reasons: dict[str, int]  # client-rounds flagged for each reason (a client-round may have several)
    memory_mb: dict[str, float]  # peak resident / GPU memory of rank 0 and of the largest client rank
    weight_byzantine: float  # mean share of the step a Byzantine client-round got (NaN: the rule defines none)
    weight_honest: float


def mean_weights(run: Run) -> tuple[float, float]:
    """The mean weight the rule gave Byzantine and honest client-rounds that took part (NaN where undefined)."""
    def mean(mask: np.ndarray) -> float:
        values = run.weight[mask & run.sampled]
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else math.nan

    return mean(run.byzantine), mean(~run.byzantine)


def peak_memory_mb(run: Run) -> dict[str, float]:
    """Peak resident memory (and GPU memory) of rank 0 and of the largest other rank, in MB (2^20 bytes).

    With one process, rank 0 hosts every client and the client columns are NaN.
    """
    def top(values: np.ndarray, ranks: slice) -> float:
        chosen = values[:, ranks]
        return float(chosen.max()) / 2**20 if chosen.size else math.nan

    return {"rss_rank0": top(run.peak_rss, slice(0, 1)), "rss_client_max": top(run.peak_rss, slice(1, None)),
            "gpu_rank0": top(run.peak_gpu, slice(0, 1)), "gpu_client_max": top(run.peak_gpu, slice(1, None))}


def detection_rates(run: Run) -> tuple[float, float]:
    """Rejection as a detector of the ground truth: TPR = rejected Byzantine / Byzantine, FPR = rejected honest /
    honest, over the client-rounds that took part.

    NaN for rules that never reject a whole client (Mean, Median, TrMean, …) and where a class is absent; DiverseFL,
    OracleSGD and every rule that rejected a valid update at least once (Krum, FLTrust, …) get rates.
    """
    usable = run.sampled & ((run.flags & INVALID) == 0)
    if run.rule not in FILTERING_RULES and not (~run.accepted & usable).any():
        return math.nan, math.nan
    flagged = ~run.accepted & run.sampled  # clients that did not take part were not judged
    byz = run.byzantine & run.sampled
    honest = ~run.byzantine & run.sampled
    tpr = float((flagged & byz).sum() / byz.sum()) if byz.any() else math.nan
    fpr = float((flagged & honest).sum() / honest.sum()) if honest.any() else math.nan
    return tpr, fpr


def summarize(run: Run, target: float) -> Summary:
    rounds, acc = run.evaluated()
    tail = acc[-max(1, len(acc) // 10):] if len(acc) else acc
    reached = rounds[acc >= target]
    tpr, fpr = detection_rates(run)
    # with several ranks the clients' compute happens inside rank 0's gather wait: count it once
    wall_phases = [p for p in PHASES if p != "client_compute" or run.ranks == 1]
    return Summary(
        file=run.path.name, rule=run.rule, attack=run.attack, sample=run.sample if run.rule == "diversefl" else "–",
        seed=int(run.config["seed"]),
        rounds=len(run.round), ranks=run.ranks, finished=run.finished,
        final_accuracy=float(acc[-1]) if len(acc) else math.nan,
        best_accuracy=float(acc.max()) if len(acc) else math.nan,
        last10_accuracy=float(tail.mean()) if len(tail) else math.nan,
        rounds_to_target=float(reached[0]) if len(reached) else math.nan,
        tpr=tpr, fpr=fpr,
        wall_seconds=float(sum(run.times[p].sum() for p in wall_phases)),
        phase_ms={p: float(1000 * run.times[p].mean()) if len(run.round) else math.nan for p in PHASES},
        reasons={name: int(((run.flags & bit) != 0).sum()) for bit, name in REASONS.items()},
        memory_mb=peak_memory_mb(run),
        weight_byzantine=mean_weights(run)[0], weight_honest=mean_weights(run)[1],
    )


def _fmt(value: float, digits: int = 4) -> str:
    return "–" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def write_tables(summaries: list[Summary], out: Path, target: float) -> None:
    columns = ["file", "rule", "attack", "sample", "seed", "rounds", "finished", "final_accuracy", "best_accuracy",
               "last10_accuracy", "rounds_to_target", "tpr", "fpr", "wall_seconds", *(f"{p}_ms" for p in PHASES),
               *(f"flags_{name}" for name in REASONS.values()), *(f"peak_{k}_mb" for k in MEMORY_COLUMNS),
               "weight_byzantine", "weight_honest"]
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for s in summaries:
            writer.writerow([s.file, s.rule, s.attack, s.sample, s.seed, s.rounds, s.finished, s.final_accuracy,
                             s.best_accuracy, s.last10_accuracy, s.rounds_to_target, s.tpr, s.fpr, s.wall_seconds,
                             *(s.phase_ms[p] for p in PHASES), *s.reasons.values(),
                             *(s.memory_mb[k] for k in MEMORY_COLUMNS), s.weight_byzantine, s.weight_honest])
    lines = [f"# mpifl report ({len(summaries)} runs)", "",
             f"Accuracy: final, best, mean of the last 10 % of evaluations; rounds to reach {target:.2f}. Detection: "
             "TPR = flagged Byzantine / Byzantine, FPR = flagged honest / honest (rules that filter clients only).", "",
             "| file | rule | attack | sample | seed | rounds | final | best | last 10 % | to target | TPR | FPR "
             "| wall s |", "|---" * 13 + "|"]
    for s in summaries:
        rounds = f"{s.rounds}" + ("" if s.finished else " (partial)")
        lines.append(f"| {s.file} | {RULE_NAMES.get(s.rule, s.rule)} | {s.attack} | {s.sample} | {s.seed} | {rounds} "
                     f"| {_fmt(s.final_accuracy)} | {_fmt(s.best_accuracy)} | {_fmt(s.last10_accuracy)} "
                     f"| {_fmt(s.rounds_to_target, 0)} | {_fmt(s.tpr, 3)} | {_fmt(s.fpr, 3)} | {s.wall_seconds:.1f} |")
    lines += ["", "Mean milliseconds per round by phase:", "",
              "| file | " + " | ".join(PHASES) + " |", "|---" * (len(PHASES) + 1) + "|"]
    lines += [f"| {s.file} | " + " | ".join(_fmt(s.phase_ms[p], 2) for p in PHASES) + " |" for s in summaries]
    lines += ["", "Client-rounds flagged, by reason (docs/hdf5-schema.md, `clients/flags`):", "",
              "| file | " + " | ".join(REASONS.values()) + " |", "|---" * (len(REASONS) + 1) + "|"]
    lines += [f"| {s.file} | " + " | ".join(str(v) for v in s.reasons.values()) + " |" for s in summaries]
    lines += ["", "Mean weight per client-round that took part (the client's share of the step: Krum's picks, "
              "FLTrust's trust, 1/|accepted| for averaging rules; – for coordinate-wise rules):", "",
              "| file | rule | Byzantine | honest |", "|---|---|---|---|"]
    lines += [f"| {s.file} | {RULE_NAMES.get(s.rule, s.rule)} | {_fmt(s.weight_byzantine)} | {_fmt(s.weight_honest)} |"
              for s in summaries]
    lines += ["", "Peak memory per rank, MB (resident set; GPU memory allocated by torch, 0 off the GPU; client ranks: "
              "the largest; – with one process):", "",
              "| file | ranks | rank 0 RSS | client rank RSS | rank 0 GPU | client rank GPU |", "|---" * 6 + "|"]
    lines += [f"| {s.file} | {s.ranks} | " + " | ".join(_fmt(s.memory_mb[k], 0) for k in MEMORY_COLUMNS) + " |"
              for s in summaries]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve_panel(ax, title: str) -> None:  # type: ignore[no-untyped-def]
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(plt, fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_accuracy(runs: list[Run], out: Path) -> Path:
    """Figs. 2-5: accuracy vs round, one line per run, one panel per attack."""
    plt = _pyplot()
    attacks = sorted({r.attack for r in runs}, key=lambda a: ATTACK_ORDER.index(a) if a in ATTACK_ORDER else 99)
    fig, axes = plt.subplots(1, len(attacks), figsize=(FIGSIZE[0] * len(attacks), FIGSIZE[1]), dpi=DPI,
                             squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        chosen = [(r, lab) for r, lab in zip(runs, labels(runs)) if r.attack == attack]
        for run, label in chosen:
            ax.plot(*run.evaluated(), label=label, linewidth=1.2)
        ax.set_ylabel("test accuracy")
        _curve_panel(ax, f"attack: {attack}")
    return _save(plt, fig, out / "accuracy.png")


def plot_backdoor(runs: list[Run], out: Path) -> Path | None:
    """Fig. 6: test accuracy and backdoor-task accuracy side by side."""
    chosen = [(r, lab) for r, lab in zip(runs, labels(runs)) if not np.isnan(r.backdoor).all()]
    if not chosen:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1]), dpi=DPI)
    for run, label in chosen:
        keep = ~np.isnan(run.accuracy)
        axes[0].plot(run.round[keep], run.accuracy[keep], label=label, linewidth=1.2)
        axes[1].plot(run.round[keep], run.backdoor[keep], label=label, linewidth=1.2)
    for ax, title in zip(axes, ("test accuracy", "backdoor task accuracy")):
        _curve_panel(ax, title)
    return _save(plt, fig, out / "backdoor.png")


def plot_detection(run: Run, out: Path, clients: int = 10) -> Path | None:
    """Fig. 1: C1×C2 per round for the first ``clients`` clients, green honest, red Byzantine; dashed lines at eps1
    and eps2 (linear inside ±2, logarithmic beyond, so scaled updates stay visible). A cross-device run's columns
    are a different cohort each round, so it has no per-client panels."""
    if run.ids is not None or np.isnan(run.c2).all():
        return None
    plt = _pyplot()
    shown = min(clients, run.c2.shape[1])
    cols = min(5, shown)
    rows = math.ceil(shown / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.0 * rows), dpi=DPI, squeeze=False, sharey=True)
    product = run.c1.astype(np.float64) * run.c2
    for j, ax in enumerate(axes.flat):
        if j >= shown:
            ax.axis("off")
            continue
        byz = run.byzantine[:, j]
        ax.scatter(run.round[~byz], product[~byz, j], s=2, color="tab:green", label="honest")
        ax.scatter(run.round[byz], product[byz, j], s=2, color="tab:red", label="Byzantine")
        for eps in (run.diversefl.eps1, run.diversefl.eps2):
            ax.axhline(eps, color="grey", linewidth=0.6, linestyle="--")
        ax.set_yscale("symlog", linthresh=2.0, linscale=2.0)
        ax.set_title(f"client {j}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("round", fontsize=7)
        if j % cols == 0:  # the y axis is shared along a row
            ax.set_ylabel("C1 × C2", fontsize=7)
    axes.flat[0].legend(fontsize=6, markerscale=3)
    fig.suptitle(f"C1 x C2 — {RULE_NAMES.get(run.rule, run.rule)}, {run.attack}", fontsize=9)
    return _save(plt, fig, out / f"detection_{run.path.stem}.png")


def report(paths: list[Path], out: Path, target: float = 0.9) -> list[Path]:
    """Write every figure and the summary for ``paths`` into ``out``; returns the files written."""
    return _report([load_run(p) for p in paths], out, target)


def report_readable(paths: list[Path], out: Path, target: float = 0.9) -> tuple[list[Path], list[str]]:
    """Like :func:`report` over the files that can be read, so one damaged or foreign file in a folder of runs does
    not hide the others; returns the files written and one problem (naming its file) per unreadable one. Nothing
    is written when no file can be read."""
    runs, problems = [], []
    for path in paths:
        try:
            runs.append(load_run(path))
        except ReportError as exc:
            problems.append(str(exc))
    return (_report(runs, out, target) if runs else []), problems


def _report(runs: list[Run], out: Path, target: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_accuracy(runs, out), plot_backdoor(runs, out), *(plot_detection(r, out) for r in runs)]
    write_tables([summarize(r, target) for r in runs], out, target)
    return [p for p in written if p is not None] + [out / "summary.md", out / "summary.csv"]


def follow(paths: list[Path], out: Path, target: float, interval: float, echo,  # type: ignore[no-untyped-def]
           patience: int = 10) -> list[Path]:
    """Re-read runs that jobs are still writing and refresh the report until every run has finished.

    A file that cannot be read yet (a job between creating it and switching it to SWMR) is retried ``patience``
    times before the error is reported.
    """
    failures = 0
    while True:
        try:
            runs = [load_run(p) for p in paths]
        except ReportError as exc:
            failures += 1
            if failures > patience:
                raise
            echo(f"[mpifl report] waiting: {exc}")
            time.sleep(interval)
            continue
        failures = 0
        written = _report(runs, out, target)
        echo(f"[mpifl report] {time.strftime('%H:%M:%S')}  " + "  ".join(
            f"{r.path.name}: round {int(r.round[-1]) if len(r.round) else 0}" for r in runs))
        if all(r.finished for r in runs):
            return written
        time.sleep(interval)
