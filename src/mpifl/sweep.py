"""Experiment grids: one file names a base config and the values to vary; each grid point is one run.

A point is addressed by its index, so a SLURM job array needs no extra tooling (``mpifl sweep FILE --index
$SLURM_ARRAY_TASK_ID``). A point whose file is finished is skipped, one with a checkpoint resumes: re-submitting a
sweep, or a requeued array task, only does the work that is left.

    base: ../fig3_mnist_mlp.yaml       # relative to the sweep file
    out_dir: runs/fig3                 # relative to the working directory
    set: [rounds=1000]                 # overrides applied to every point
    seeds: [0, 1]
    grid:                              # the union, in order, of the product of each entry's lists
      - {aggregator.name: [oracle, median], attack.name: [class_flip, sign_flip]}
      - {aggregator.name: [diversefl], aggregator.sample_fraction: [0.01, 0.03], attack.name: [sign_flip]}
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .build import resolve
from .checkpoint import path_for
from .config import ExperimentConfig, from_tree, load_tree
from .errors import ConfigError
from .metrics import finished_round, open_for_reading

_KEYS = {"base", "out_dir", "set", "seeds", "grid"}


@dataclass(frozen=True)
class Point:
    index: int
    overrides: tuple[str, ...]
    config: ExperimentConfig
    out: Path


def _slug(values: list[Any]) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", "_".join(str(v) for v in values)).strip("_")


def load(path: str | Path, extra: tuple[str, ...] = ()) -> list[Point]:
    """Every point of the sweep in ``path``, each config validated (errors name the point)."""
    path = Path(path)
    spec = load_tree(path)
    unknown = set(spec) - _KEYS
    if unknown:
        raise ConfigError(f"sweep {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(_KEYS))}.")
    if "base" not in spec or "grid" not in spec:
        raise ConfigError(f"sweep {path} needs 'base' (a config file) and 'grid' (a list of key: [values] maps).")
    base = load_tree(path.parent / spec["base"])
    common = [str(s) for s in spec.get("set", [])]
    seeds = spec.get("seeds", [None])
    grid = spec["grid"]
    if not isinstance(grid, list) or not all(isinstance(g, dict) and g for g in grid):
        raise ConfigError(f"sweep {path}: grid must be a list of non-empty key: [values] maps.")
    points: list[Point] = []
    for entry in grid:
        keys = list(entry)
        lists = [v if isinstance(v, list) else [v] for v in entry.values()]
        for values, seed in itertools.product(itertools.product(*lists), seeds):
            index = len(points)
            overrides = [*common, *(f"{k}={_yaml_scalar(v)}" for k, v in zip(keys, values))]
            overrides += [f"seed={seed}"] if seed is not None else []
            overrides += list(extra)
            try:
                cfg = from_tree(base, overrides)
                resolve(cfg)
            except ConfigError as exc:
                raise ConfigError(f"sweep {path} point {index} ({' '.join(overrides)}): {exc}") from None
            name = f"{cfg.name}_{index:03d}_{_slug([*values, f's{cfg.seed}'])}.h5"
            points.append(Point(index, tuple(overrides), cfg, Path(spec.get("out_dir", "runs")) / name))
    return points


def _yaml_scalar(value: Any) -> str:
    """A value as YAML text for an override (lists stay lists: ``[1, 2]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def status(point: Point) -> str:
    """``new``, ``finished``, ``resumable`` (a checkpoint exists) or ``partial`` (a file without checkpoint)."""
    if not point.out.exists():
        return "new"
    try:
        with open_for_reading(point.out) as f:
            if finished_round(f) == point.config.rounds:
                return "finished"
    except (OSError, KeyError):
        pass
    return "resumable" if path_for(point.out).exists() else "partial"


def run_point(point: Point, progress: TextIO | None) -> str:
    """Run, resume or skip one point; returns what was done."""
    from .train import run

    state = status(point)
    if state == "finished":
        return f"point {point.index}: {point.out} already finished"
    result = run(point.config, point.out, overwrite=True, resume=state == "resumable", progress=progress)
    verb = "resumed" if state == "resumable" else "ran"
    accuracy = f", final accuracy {result.final.accuracy:.4f}" if result is not None else ""
    return f"point {point.index}: {verb} -> {point.out}{accuracy}"
