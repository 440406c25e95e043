"""Guiding gradients for n clients: one batched call (what mpifl does; for these linear models the hand-written
backward pass of mpifl.models.gradients.DenseStack) vs a Python loop of autograd calls.

    python benchmarks/guiding_batched.py --clients 20 --sample 30 90 --repeat 20

Prints ms per round for both and their ratio, measured side by side in one process, for the MNIST MLP and softmax.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mpifl.models.gradients import batched_grads, stack_padded
from mpifl.models import FlatModel, build, initialize


def loop_grads(flat: FlatModel, theta: torch.Tensor, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
    out = []
    for x, y in zip(xs, ys):
        t = theta.detach().clone().requires_grad_(True)
        F.cross_entropy(flat.forward(t, x), y).backward()
        out.append(t.grad)
    return torch.stack(out)


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return 1000 * (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--sample", type=int, nargs="+", default=[30, 90])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"\n{args.clients} clients, torch {torch.__version__}, {torch.get_num_threads()} threads; ms per round\n")
    print("| model | sample | loop | batched | loop / batched | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name in ("softmax", "mlp"):
        module = build(name, (1, 28, 28), 10)
        initialize(module, "glorot", torch.Generator().manual_seed(0))
        flat = FlatModel(module)
        theta = flat.flatten()
        g = torch.Generator().manual_seed(1)
        for s in args.sample:
            xs = [torch.randn(s, 1, 28, 28, generator=g) for _ in range(args.clients)]
            ys = [torch.randint(0, 10, (s,), generator=g) for _ in range(args.clients)]
            packed = stack_padded(xs, ys)
            loop_ms = timed(lambda: loop_grads(flat, theta, xs, ys), args.repeat)
            batched_ms = timed(lambda: batched_grads(flat, theta, *packed, args.clients), args.repeat)
            batched = batched_grads(flat, theta, *packed, args.clients)
            diff = float((loop_grads(flat, theta, xs, ys) - batched).abs().max())
            print(f"| {name} | {s} | {loop_ms:.1f} | {batched_ms:.1f} | {loop_ms / batched_ms:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
