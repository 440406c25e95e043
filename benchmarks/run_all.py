"""Where the time goes, against what the machine allows: a round of Figs. 2-4 and every aggregation rule.

    python benchmarks/run_all.py --quick                     # a few minutes on a laptop-class CPU
    python benchmarks/run_all.py --json perf.json            # the full grid (on a GPU node: also Fig. 4)

Everything is measured in this one process on this machine, so the ratios compare like with like:

(a) Rounds. ``mpifl.train.run`` on configs/fig2_mnist_softmax.yaml and configs/fig3_mnist_mlp.yaml (and, with CUDA,
    fig4_cifar10_vgg.yaml on CIFAR-10, random stand-in files where the real ones are missing) for a few rounds. The
    phases are the HDF5 file's ``time/*`` datasets; the round's wall time is the gap between consecutive progress
    lines (one per round), so "rest" is what no phase accounts for (the attack, the HDF5 write, bookkeeping). The
    floor is the round's FLOPs (FlopCounterMode on one forward + backward, × the client batch and guiding samples of
    a round) at the fp32 matmul rate measured here.
(b) Aggregation rules. Every registered rule (not ``rsa``, whose rows are models) and pre-aggregator on the same
    random [n, d] float32 matrix, against the memory floor (the time to copy the matrix once, at the copy bandwidth
    measured here) and against ByzFL's implementation of the same rule, same input, where it has one.

Times are medians of several repeats; torch uses every core this process may run on. Targets (issue 13): every rule
≥ 3× faster than ByzFL's, and ≤ 15× its memory floor on a CPU (≤ 3× on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import byzfl
import h5py
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mpifl import config as config_mod, registry
from mpifl.build import pipeline
from mpifl.config import ExperimentConfig
from mpifl.data import datasets
from mpifl.data.partition import fraction_size, partition
from mpifl.filters.diversefl import DiverseFLFilter
from mpifl.metrics import PHASES
from mpifl.models import build
from mpifl.rules import RoundView
from mpifl.train import run

REPO = Path(__file__).resolve().parents[1]
SKIPPED_RULES = ("rsa",)  # RSA aggregates client models, not updates: no [n, d] update matrix to time


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, budget_s: float = 20.0) -> float:
    """Median wall milliseconds of ``fn()`` after one warm-up call; fewer repeats once they would exceed
    ``budget_s`` (a slow reference on a large matrix)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - start
    samples = []
    for _ in range(max(1, min(repeats, int(budget_s / max(first, 1e-9))))):
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples)


def matmul_flops_per_s(device: torch.device, size: int) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return 2 * size ** 3 / (timed(lambda: a @ b, device, 5) / 1000)


def copy_bytes_per_s(device: torch.device, megabytes: int) -> float:
    """Bytes of a tensor copied per second (each byte read once and written once)."""
    src = torch.randn(megabytes * (1 << 18), device=device)
    dst = torch.empty_like(src)
    return src.numel() * 4 / (timed(lambda: dst.copy_(src), device, 7) / 1000)


# ---------------------------------------------------------------------------------------------------------- rounds

class _RoundStamps:
    """A progress stream that keeps the time of every ``[mpifl] round`` line: consecutive lines bound a round."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def write(self, text: str) -> int:
        if text.startswith("[mpifl] round"):
            self.stamps.append(time.perf_counter())
        return len(text)

    def flush(self) -> None:
        """Nothing buffered."""


def flops_per_round(cfg: ExperimentConfig, data_root: str) -> tuple[float, int]:
    """(FLOPs, samples) of one round's gradients: the clients' batches and, where computed, the guiding samples,
    each at the FLOPs of one forward + backward per sample of the config's model."""
    ds = datasets.load(cfg.data.dataset, data_root, False, (cfg.data.synthetic_train, cfg.data.synthetic_test))
    parts = partition(cfg.data.partition, ds.train_y, cfg.clients, cfg.data.alpha, cfg.seed)
    samples = sum(fraction_size(len(p), cfg.train.batch_size, cfg.train.batch_fraction) for p in parts)
    for f in pipeline(cfg).all_filters:
        if isinstance(f, DiverseFLFilter):
            samples += sum(fraction_size(len(p), f.params.sample_size, f.params.sample_fraction) for p in parts)
    model = build(cfg.model.name, ds.input_shape, ds.num_classes, cfg.model.hidden)
    batch = 8
    x = torch.randn(batch, *ds.input_shape)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
    return counter.get_total_flops() / batch * samples, samples


def bench_round(config_file: Path, rounds: int, device: str, data_root: str, flop_rate: float) -> dict:
    cfg = config_mod.load(config_file, [f"rounds={rounds}", f"train.eval_every={rounds}", f"train.device={device}",
                                        f"data.root={data_root}", "output.checkpoint_every=0",
                                        "output.progress_every=1"])
    flops, samples = flops_per_round(cfg, data_root)
    stamps = _RoundStamps()
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, Path(tmp) / "run.h5", progress=stamps, overwrite=True)  # type: ignore[arg-type]
        with h5py.File(Path(tmp) / "run.h5") as f:
            times = {p: 1000 * f[f"time/{p}"][1:] for p in PHASES}  # round 1 warms up
    walls = 1000 * np.diff(stamps.stamps)  # rounds 2..R
    phases = {p: float(np.median(v)) for p, v in times.items()}
    round_ms = float(np.median(walls))
    phases["rest"] = float(np.median(walls - sum(times.values())))
    return {"config": config_file.name, "device": device, "round_ms": round_ms, "floor_ms": 1000 * flops / flop_rate,
            "phases": phases, "samples": samples, "gflop": flops / 1e9}


# ----------------------------------------------------------------------------------------------------- aggregators

def byzfl_equivalent(name: str, params: object, n: int) -> Callable[[torch.Tensor], object] | None:
    """ByzFL 0.0.11's implementation of the same rule, with parameters mapped to ours (see each rule's docstring);
    None where it has none."""
    if name in ("mean", "diversefl"):  # DiverseFL's rule is the mean of what its filter passed
        return byzfl.Average()
    if name in ("median", "noisy_median"):
        return byzfl.Median()
    if name == "trmean":
        return byzfl.TrMean(f=int(params.beta * n))
    if name in ("krum", "multi_krum"):  # ByzFL's f + 1 is ours f: its neighbour count includes the row itself
        return (byzfl.Krum if name == "krum" else byzfl.MultiKrum)(f=params.f + 1)
    if name == "geomed":
        return byzfl.GeometricMedian(nu=params.nu, T=params.iterations)
    if name == "centered_clipping":
        return byzfl.CenteredClipping(L=params.iterations, tau=params.tau)
    if name == "nnm":
        return byzfl.NNM(f=params.f)
    if name == "bucketing":
        return byzfl.Bucketing(s=params.s)
    return None


def workloads(n: int, d: int, device: torch.device) -> list[tuple[str, Callable[[torch.Tensor], object], object]]:
    """(name, ours(z), ByzFL's or None) for every rule and pre-aggregator at n clients."""
    out = []
    valid = torch.ones(n, dtype=torch.bool, device=device)
    theta = torch.zeros(d, device=device)  # the round's model is an input, not part of the rule's time: one for all
    for name in registry.names("rule"):
        if name in SKIPPED_RULES:
            continue
        cls = registry.get("rule", name)
        params = cls.Params()
        rule = cls(params, n)
        byzantine = (torch.arange(n, device=device) < n // 4) if cls.needs.truth else None
        server = (lambda theta, g0=torch.randn(d, device=device): g0) if cls.needs.server_data else None

        def ours(z: torch.Tensor, rule=rule, valid=valid, byzantine=byzantine, server=server, theta=theta) -> object:
            # a rule that keeps the rows' unverified parts (diversefl_plus) gets Z itself for them: its full step
            return rule.aggregate(RoundView(z, valid, theta, 1, 0, server, byzantine,
                                                 unverified=z if rule.keeps_unverified else None))

        out.append((name, ours, byzfl_equivalent(name, params, n)))
    for name in registry.names("pre"):
        cls = registry.get("pre", name)
        params = cls.Params()
        step = cls(params, n)
        out.append((f"pre/{name}", lambda z, step=step: step.transform(z, 1, 0), byzfl_equivalent(name, params, n)))
    return out


def bench_size(n: int, d: int, device: torch.device, copy_rate: float, repeats: int) -> list[dict]:
    """Every workload on one random [n, d] matrix (freed on return, before the next size is drawn)."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(n + d)).to(device)
    rows = []
    for name, ours, theirs in workloads(n, d, device):
        ms = timed(lambda: ours(z), device, repeats)
        byzfl_ms = None if theirs is None else timed(lambda: theirs(z), device, repeats)
        rows.append({"rule": name, "n": n, "d": d, "device": str(device), "ms": ms,
                     "floor_ms": 1000 * n * d * 4 / copy_rate, "byzfl_ms": byzfl_ms})
        print(f"  {name:18s} n={n:<4d} d={d:<9d} {ms:9.1f} ms"
              + ("" if byzfl_ms is None else f"   byzfl {byzfl_ms:9.1f} ms"), file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------- output

def table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def print_tables(result: dict) -> None:
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['threads']} torch threads, device {m['device']}; fp32 matmul "
          f"{m['matmul_gflops']:.0f} GFLOP/s, copy {m['copy_gbps']:.1f} GB/s\n")
    if result["rounds"]:
        body = []
        for r in result["rounds"]:
            ph = r["phases"]
            body.append([r["config"], r["device"], f"{r['round_ms']:.1f}", *(f"{ph[p]:.1f}" for p in (*PHASES, "rest")),
                         f"{r['floor_ms']:.2f}", f"{r['round_ms'] / r['floor_ms']:.1f}×"])
        print("(a) round, ms (median over rounds 2..R)\n")
        print(table(["config", "device", "round", *PHASES, "rest", "FLOP floor", "round/floor"], body) + "\n")
    body = []
    for a in result["aggregators"]:
        versus = "—" if a["byzfl_ms"] is None else f"{a['byzfl_ms']:.1f}"
        speedup = "—" if a["byzfl_ms"] is None else f"{a['byzfl_ms'] / a['ms']:.2f}×"
        body.append([a["rule"], str(a["n"]), f"{a['d']:.0e}", f"{a['ms']:.1f}", versus, speedup,
                     f"{a['floor_ms']:.2f}", f"{a['ms'] / a['floor_ms']:.1f}×"])
    print("(b) aggregation, ms (median of repeats)\n")
    print(table(["rule", "n", "d", "ours", "byzfl", "byzfl/ours", "memory floor", "ours/floor"], body))


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few rounds, n = 20 and d ∈ {2e5, 1e6} only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--data-root", default=os.environ.get(datasets.DATA_ROOT_ENV, "data"))
    parser.add_argument("--skip-rounds", action="store_true", help="only the aggregation table")
    args = parser.parse_args()

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    device = torch.device(args.device)
    flop_rate = matmul_flops_per_s(device, 2048 if args.quick else 4096)
    copy_rate = copy_bytes_per_s(device, 256)
    result: dict = {"machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "device": str(device),
                                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                                "matmul_gflops": flop_rate / 1e9, "copy_gbps": copy_rate / 1e9},
                    "rounds": [], "aggregators": []}
    if not args.skip_rounds:
        configs = ["fig2_mnist_softmax.yaml", "fig3_mnist_mlp.yaml"] + (["fig4_cifar10_vgg.yaml"]
                                                                          if device.type == "cuda" else [])
        with tempfile.TemporaryDirectory() as tmp:
            root = args.data_root
            if device.type == "cuda":  # CIFAR-10 may be missing on the node: random files in its format stand in
                sys.path.insert(0, str(Path(__file__).parent))
                from gpu_check import stand_in_data
                root = str(stand_in_data(Path(args.data_root), Path(tmp) / "data"))
            for name in configs:
                rounds = (4 if args.quick else 8) if "fig4" in name else (6 if args.quick else 21)
                print(f"round: {name}", file=sys.stderr, flush=True)
                result["rounds"].append(bench_round(REPO / "configs" / name, rounds, args.device, root, flop_rate))
    ns, ds = ([20], [200_000, 1_000_000]) if args.quick else ([20, 100], [200_000, 1_000_000, 10_000_000])
    for n in ns:
        for d in ds:
            result["aggregators"] += bench_size(n, d, device, copy_rate, 3 if args.quick else 5)
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
