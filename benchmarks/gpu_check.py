"""The GPU check: every config, rule and attack on CUDA, one process against `mpirun -n 5`, and CPU against GPU.

    python benchmarks/gpu_check.py --data-root ../shared/data          # on a GPU node; under 5 minutes on one H100
    python benchmarks/gpu_check.py --device cpu --rounds 3 --vgg-rounds 1   # a dry run of the script without a GPU

Cases: each config in configs/ (Figs. 2-6), Fig. 3 with every registered rule under sign flip, and DiverseFL and
Median under every attack. Each case runs N rounds three ways: one process on the device, ``mpirun -n 5`` (four client ranks
sharing the device; all cases in one MPI job, so torch starts once) and one process on the CPU. The table shows
whether the accepted sets of 1 and 5 ranks are equal and how far their final theta is apart (mpifl computes every
client in fixed-size chunks, padded alike on every rank, so the bits should agree), the accuracy on both devices and
how many client-rounds CPU and GPU decided differently (float rounding differs between devices: small numbers, not
zero), and the device's round time split. A second table measures what deterministic cuDNN costs on VGG11-GN.

Where MNIST or CIFAR are missing under the data root, random files in their formats stand in (accuracies are then
meaningless, agreement still is); see README "GPUs".
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mpifl import build, config as config_mod, registry  # noqa: E402,F401 - build registers the built-in choices
from mpifl.data import datasets  # noqa: E402
from mpifl.data.fetch import write_idx  # noqa: E402

ATTACKS = ("none", "class_flip", "sign_flip", "backdoor", "gaussian", "nan")
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_mpi_yield_when_idle": "1",
           "PMIX_MCA_psec": "native", "OMP_NUM_THREADS": "1"}
PHASES = ("client_compute", "guiding", "aggregation")


def cases(rounds: int, vgg_rounds: int) -> list[dict]:
    """(name, config file, overrides) of every case."""
    out = []
    for path in sorted((REPO / "configs").glob("fig*.yaml")):  # the paper's; the scale configs are memory checks
        n = vgg_rounds if "vgg" in path.name else rounds
        out.append({"name": path.stem, "config": str(path), "set": [f"rounds={n}", f"train.eval_every={n}"]})
    fig3 = str(REPO / "configs" / "fig3_mnist_mlp.yaml")
    short = [f"rounds={rounds}", f"train.eval_every={rounds}"]
    for rule in registry.names("rule"):
        out.append({"name": f"fig3 {rule} sign_flip", "config": fig3,
                    "set": [*short, f"aggregator.name={rule}"]})
    for rule in ("diversefl", "median"):
        for attack in ATTACKS:
            if attack != "sign_flip":
                out.append({"name": f"fig3 {rule} {attack}", "config": fig3,
                            "set": [*short, f"aggregator.name={rule}", f"attack.name={attack}"]})
    return out


def stand_in_data(root: Path, target: Path) -> Path:
    """A data root with MNIST and CIFAR-10/100 in their formats: links to the real files where ``root`` has them,
    random files of the same format elsewhere."""
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        (target / "MNIST").symlink_to((root / "MNIST").resolve())
    else:
        raw = target / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for prefix, n in (("train", 60000), ("t10k", 10000)):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    for name, (folder, train_files, test_file, key, classes) in datasets._CIFAR.items():
        if (root / folder).exists():
            (target / folder).symlink_to((root / folder).resolve())
            continue
        (target / folder).mkdir()
        ds = datasets.synthetic(5000, 1000, classes, (3, 32, 32), seed=1)
        chunks = np.array_split(np.arange(5000), len(train_files))
        for f, idx in zip(train_files, chunks):
            entry = {b"data": ds.train_x[idx].reshape(len(idx), -1).numpy(), key: ds.train_y[idx].tolist()}
            (target / folder / f).write_bytes(pickle.dumps(entry))
        entry = {b"data": ds.test_x.reshape(1000, -1).numpy(), key: ds.test_y.tolist()}
        (target / folder / test_file).write_bytes(pickle.dumps(entry))
    return target


def run_cases(case_list: list[dict], out: Path, device: str, data_root: Path, extra: list[str]) -> None:
    """Every case in this process (or this MPI job); results land in ``out``/<index>.h5."""
    from mpifl import transport
    from mpifl.train import run

    tp = transport.create()
    for i, case in enumerate(case_list):
        cfg = config_mod.load(case["config"], [*case["set"], *extra, f"train.device={device}",
                                               f"data.root={data_root}", "output.checkpoint_every=0"])
        run(cfg, out / f"{i}.h5", tp, progress=None, overwrite=True)


def read(path: Path) -> dict:
    """What the table needs of one run; times are means after round 1 (warm-up), or round 1 if it is the only one."""
    with h5py.File(path) as f:
        skip = 1 if f["round"].shape[0] > 1 else 0
        return {"accepted": f["clients/accepted"][:], "theta": f["model/theta"][:],
                "accuracy": float(f["test_accuracy"][-1]),
                "ms": {p: 1000 * float(np.mean(f[f"time/{p}"][skip:]))
                       for p in (*PHASES, "broadcast", "gather", "evaluation")}}


def launch_mpi(ranks: int, case_file: Path, out: Path, device: str, data_root: Path, extra: list[str]) -> None:
    cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", "--bind-to", "none", sys.executable, __file__, "--worker",
           str(case_file), str(out), "--device", device, "--data-root", str(data_root),
           *[x for e in extra for x in ("--set", e)]]
    subprocess.run(cmd, check=True, env={**os.environ, **MPI_ENV})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--vgg-rounds", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=5)
    parser.add_argument("--data-root", default=os.environ.get(datasets.DATA_ROOT_ENV, "data"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--worker", nargs=2, metavar=("CASES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_cases(json.loads(Path(args.worker[0]).read_text()), Path(args.worker[1]), args.device,
                  Path(args.data_root), args.overrides)
        return

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = stand_in_data(Path(args.data_root), tmp_path / "data")
        case_list = cases(args.rounds, args.vgg_rounds)
        case_file = tmp_path / "cases.json"
        case_file.write_text(json.dumps(case_list))
        for name in ("one", "mpi", "cpu", "cudnn"):
            (tmp_path / name).mkdir()
        run_cases(case_list, tmp_path / "one", args.device, root, args.overrides)
        launch_mpi(args.ranks, case_file, tmp_path / "mpi", args.device, root, args.overrides)
        run_cases(case_list, tmp_path / "cpu", "cpu", root, args.overrides)
        vgg = [c for c in case_list if "vgg" in c["name"]]
        run_cases(vgg, tmp_path / "cudnn", args.device, root, [*args.overrides, "train.deterministic=false"])

        import torch

        device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
        print(f"\n{device_name}, torch {torch.__version__}; 1 process vs mpirun -n {args.ranks} on {args.device}, "
              f"and vs the CPU; {args.rounds} rounds (VGG: {args.vgg_rounds}); ms per round after round 1\n")
        print(f"| case | accepted equal 1 vs {args.ranks} ranks | max abs theta diff | accuracy {args.device} "
              "| accuracy cpu | client-rounds decided differently cpu vs device | "
              + " | ".join(f"{p} ms" for p in PHASES) + " | round ms |")
        print("|---" * (6 + len(PHASES) + 1) + "|")
        for i, case in enumerate(case_list):
            one, mpi, cpu = (read(tmp_path / d / f"{i}.h5") for d in ("one", "mpi", "cpu"))
            same = np.array_equal(one["accepted"], mpi["accepted"])
            diff = float(np.abs(one["theta"] - mpi["theta"]).max())
            decided = int((one["accepted"] != cpu["accepted"]).sum())
            total = sum(one["ms"].values())
            print(f"| {case['name']} | {'yes' if same else 'NO'} | {diff:.1e} | {one['accuracy']:.4f} "
                  f"| {cpu['accuracy']:.4f} | {decided} / {one['accepted'].size} | "
                  + " | ".join(f"{one['ms'][p]:.1f}" for p in PHASES) + f" | {total:.1f} |")
        print("\nDeterministic cuDNN (no autotuning, deterministic kernels; train.deterministic) against autotuned:\n")
        print("| case | client ms deterministic | client ms autotuned | guiding ms deterministic "
              "| guiding ms autotuned |")
        print("|---|---|---|---|---|")
        for i, case in enumerate(vgg):
            det = read(tmp_path / "one" / f"{case_list.index(case)}.h5")["ms"]
            fast = read(tmp_path / "cudnn" / f"{i}.h5")["ms"]
            print(f"| {case['name']} | {det['client_compute']:.1f} | {fast['client_compute']:.1f} "
                  f"| {det['guiding']:.1f} | {fast['guiding']:.1f} |")
    print(f"\ngpu_check finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
