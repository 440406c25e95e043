import torch
import torch.nn.functional as F

from mpifl.gradients import batched_grads, stack_padded
from mpifl.models import FlatModel, build


def reference_grad(flat: FlatModel, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    t = theta.clone().requires_grad_(True)
    F.cross_entropy(flat.forward(t, x), y).backward()
    return t.grad


def make(sizes: list[int]):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(m, 1, 6, 6, generator=g) for m in sizes]
    ys = [torch.randint(0, 10, (m,), generator=g) for m in sizes]
    return xs, ys


def test_batched_gradients_equal_per_client_autograd_with_unequal_sizes():
    flat = FlatModel(build("mlp", (1, 6, 6), 10, hidden=7))
    theta = flat.flatten()
    xs, ys = make([5, 3, 8])
    grads = batched_grads(flat, theta, *stack_padded(xs, ys))
    for j in range(3):
        torch.testing.assert_close(grads[j], reference_grad(flat, theta, xs[j], ys[j]))


def test_per_client_models_and_chunking_give_the_same_gradients():
    flat = FlatModel(build("mlp", (1, 6, 6), 10, hidden=7))
    xs, ys = make([4, 4, 4, 4])
    thetas = flat.flatten().unsqueeze(0) + 0.1 * torch.randn(4, flat.dim, generator=torch.Generator().manual_seed(1))
    full = batched_grads(flat, thetas, *stack_padded(xs, ys))
    chunked = batched_grads(flat, thetas, *stack_padded(xs, ys), chunk=3)
    torch.testing.assert_close(full, chunked)
    for j in range(4):
        torch.testing.assert_close(full[j], reference_grad(flat, thetas[j], xs[j], ys[j]))


def test_padding_weights():
    xs, ys = make([2, 4])
    x, y, w = stack_padded(xs, ys)
    assert x.shape == (2, 4, 1, 6, 6)
    assert w.tolist() == [[0.5, 0.5, 0.0, 0.0], [0.25] * 4]
