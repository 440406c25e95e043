import torch
import torch.nn.functional as F

import pytest

from torch import nn

from mpifl.models.gradients import DenseStack, SharedModelGrads, batched_grads, stack_padded
from mpifl.filters.diversefl import GuidingGradients, row_dots
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
    grads = batched_grads(flat, theta, *stack_padded(xs, ys), chunk=2)
    for j in range(3):
        torch.testing.assert_close(grads[j], reference_grad(flat, theta, xs[j], ys[j]))


def test_per_client_models_and_chunking_give_the_same_gradients():
    flat = FlatModel(build("mlp", (1, 6, 6), 10, hidden=7))
    xs, ys = make([4, 4, 4, 4])
    thetas = flat.flatten().unsqueeze(0) + 0.1 * torch.randn(4, flat.dim, generator=torch.Generator().manual_seed(1))
    full = batched_grads(flat, thetas, *stack_padded(xs, ys), chunk=4)
    chunked = batched_grads(flat, thetas, *stack_padded(xs, ys), chunk=3)
    torch.testing.assert_close(full, chunked)
    for j in range(4):
        torch.testing.assert_close(full[j], reference_grad(flat, thetas[j], xs[j], ys[j]))


def test_padding_weights():
    xs, ys = make([2, 4])
    x, y, w = stack_padded(xs, ys)
    assert x.shape == (2, 4, 1, 6, 6)
    assert w.tolist() == [[0.5, 0.5, 0.0, 0.0], [0.25] * 4]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_a_clients_gradient_does_not_depend_on_the_clients_beside_it(device: str):
    """The placement-independence contract: whichever block of clients a rank hosts (1, 3 or all 5 here), each call
    has the same shape (chunk clients, padded to the longest batch of all clients), so the bits are equal. On a GPU
    this is what would catch a matmul whose reduction order depends on a row's position in the call."""
    flat = FlatModel(build("mlp", (1, 6, 6), 10, hidden=7))
    theta = flat.flatten().to(device)
    xs, ys = make([5, 3, 8, 8, 2])
    xs, ys = [x.to(device) for x in xs], [y.to(device) for y in ys]
    alone = torch.cat([batched_grads(flat, theta, *stack_padded(xs[j:j + 1], ys[j:j + 1], 8), chunk=4)
                       for j in range(5)])
    blocks = torch.cat([batched_grads(flat, theta, *stack_padded(xs[a:b], ys[a:b], 8), chunk=4)
                        for a, b in ((0, 3), (3, 5))])
    together = batched_grads(flat, theta, *stack_padded(xs, ys, 8), chunk=4)
    assert torch.equal(alone, together) and torch.equal(blocks, together)


def test_gradients_are_written_into_the_given_buffer():
    flat = FlatModel(build("softmax", (1, 6, 6), 10))
    xs, ys = make([3, 3, 3])
    out = torch.full((3, flat.dim), float("nan"))
    result = batched_grads(flat, flat.flatten(), *stack_padded(xs, ys), chunk=2, out=out)
    assert result.data_ptr() == out.data_ptr() and torch.isfinite(out).all()


def test_padding_shorter_than_a_client_is_refused():
    xs, ys = make([2, 4])
    try:
        stack_padded(xs, ys, 3)
    except ValueError as exc:
        assert "length=3" in str(exc)
    else:
        raise AssertionError("stack_padded accepted a length shorter than a client's batch")


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_shared_model_gradients_equal_the_batched_ones(name: str):
    """The guiding gradients' path (θ unbatched, every client in one call) and the clients' path (one copy of θ per
    client, chunks of 4) differ only by rounding."""
    flat = FlatModel(build(name, (1, 6, 6), 10, hidden=7))
    theta = flat.flatten() + 0.1
    xs, ys = make([5, 3, 8, 1, 6])
    x, y, w = stack_padded(xs, ys)
    torch.testing.assert_close(SharedModelGrads(flat, 5)(theta, x, y, w), batched_grads(flat, theta, x, y, w, chunk=4),
                               rtol=1e-6, atol=1e-7)


def test_a_guiding_gradient_does_not_depend_on_the_clients_computed_with_it(monkeypatch: pytest.MonkeyPatch):
    """What a white-box attacker reads for its clients is bitwise what the server computes for them in the round."""
    flat = FlatModel(build("mlp", (1, 6, 6), 10, hidden=7))
    theta = flat.flatten()
    xs, ys = make([5, 3, 8, 1, 6])
    assert GuidingGradients(flat, xs, ys).chunk == 5  # all of them in one call
    monkeypatch.setattr("mpifl.filters.diversefl.guiding.CHUNK_ELEMENTS", 2 * flat.dim)
    guiding = GuidingGradients(flat, xs, ys)
    assert guiding.chunk == 2
    every = guiding.gradients(theta, torch.arange(5))
    assert torch.equal(guiding.gradients(theta, torch.tensor([4, 0, 2])), every[[4, 0, 2]])
    assert guiding.gradients(theta, torch.tensor([], dtype=torch.long)).shape == (0, flat.dim)


def small_conv() -> FlatModel:
    """A model that is not a linear stack, so it takes the autograd paths."""
    torch.manual_seed(0)
    return FlatModel(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 10)))


def test_only_linear_stacks_take_the_hand_written_backward():
    assert DenseStack.of(FlatModel(build("softmax", (1, 6, 6), 10))).layers == [(0, 10, 36, 360)]
    assert [layer[1:3] for layer in DenseStack.of(FlatModel(build("mlp", (1, 6, 6), 10, hidden=7))).layers] == \
        [(7, 36), (7, 7), (10, 7)]
    assert DenseStack.of(small_conv()) is None
    assert DenseStack.of(FlatModel(build("vgg11_gn", (3, 32, 32), 10))) is None
    assert DenseStack.of(FlatModel(nn.Sequential(nn.Flatten(), nn.Linear(36, 10, bias=False)))) is None
    assert DenseStack.of(FlatModel(nn.Sequential(nn.Flatten(), nn.Linear(36, 7), nn.Tanh(), nn.Linear(7, 10)))) is None


@pytest.mark.parametrize("name", ["softmax", "mlp"])
@pytest.mark.parametrize("per_client", [False, True])
def test_hand_written_backward_equals_autograd(name: str, per_client: bool):
    """Known input → autograd's per-client gradients (unequal sizes: padded points have weight 0), shared θ or RSA's
    one θ per client."""
    flat = FlatModel(build(name, (1, 6, 6), 10, hidden=7))
    xs, ys = make([5, 3, 8, 1])
    noise = 0.3 * torch.randn(4, flat.dim, generator=torch.Generator().manual_seed(3))
    theta = flat.flatten() + noise if per_client else flat.flatten() + noise[0]
    got = DenseStack.of(flat)(theta, *stack_padded(xs, ys))
    for j in range(4):
        torch.testing.assert_close(got[j], reference_grad(flat, theta[j] if per_client else theta, xs[j], ys[j]),
                                   rtol=1e-5, atol=1e-7)


def test_models_that_are_not_linear_stacks_keep_the_autograd_paths():
    flat = small_conv()
    theta = flat.flatten() + 0.05
    xs, ys = make([5, 3, 8])
    x, y, w = stack_padded(xs, ys)
    client, guiding = batched_grads(flat, theta, x, y, w, chunk=2), SharedModelGrads(flat, 3)(theta, x, y, w)
    for j in range(3):
        torch.testing.assert_close(client[j], reference_grad(flat, theta, xs[j], ys[j]))
        torch.testing.assert_close(guiding[j], reference_grad(flat, theta, xs[j], ys[j]))


def test_row_dots_are_the_rows_inner_products():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    b = torch.tensor([[4.0, 5.0, 6.0], [2.0, 2.0, 0.25]])
    assert row_dots(a, b).tolist() == [32.0, 0.0]
    assert row_dots(a[:0], b[:0]).shape == (0,)


def fused_case(cancelling: bool):  # type: ignore[no-untyped-def]
    """An MLP, 4 clients' samples and rows z. ``cancelling``: every client holds pairs of one point with two labels
    that the model finds equally likely, so the points' gradients nearly cancel (||g~|| < 1e-2)."""
    flat = FlatModel(build("mlp", (1, 6, 6), 10, hidden=7))
    g = torch.Generator().manual_seed(4)
    theta = flat.flatten() + 0.2 * torch.randn(flat.dim, generator=g)
    xs, ys = make([6, 3, 8, 1])
    if cancelling:
        last_weight, last_bias = slice(flat.dim - 10 - 70, flat.dim - 10), slice(flat.dim - 10, flat.dim)
        theta[last_weight].view(10, 7)[1] = theta[last_weight].view(10, 7)[0]
        theta[last_bias] = torch.tensor([8.0, 8.0] + [0.0] * 8)  # classes 0 and 1 tie at p ≈ 1/2
        xs = [torch.cat([x, x]) for x in xs]
        ys = [torch.cat([torch.zeros(len(y), dtype=torch.long), torch.ones(len(y), dtype=torch.long)]) for y in ys]
    z = torch.randn(4, flat.dim, generator=g)
    return flat, theta, xs, ys, z


@pytest.mark.parametrize("cancelling", [False, True])
def test_fused_guiding_dots_and_norms_are_as_accurate_as_the_gradients(cancelling: bool):
    """compare() on a linear stack takes g~ · z and ||g~|| without forming g~ (DenseStack.dots_and_norms). Against
    float64 arithmetic on the same points, its errors stay within those of the float32 gradients it replaces."""
    flat, theta, xs, ys, z = fused_case(cancelling)
    guiding = GuidingGradients(flat, xs, ys)
    dots, norms, total = guiding.compare(theta, z)
    assert total is None  # nobody reshapes rows: the sum of the guiding gradients is not formed either
    explicit = guiding.gradients(theta, torch.arange(4))
    x, y, w = stack_padded([x.double() for x in xs], ys)
    exact = DenseStack.of(flat)(theta.double(), x, y, w.double(), out=torch.empty(4, flat.dim, dtype=torch.float64))
    exact_dots, exact_norms = (exact * z.double()).sum(dim=1), torch.linalg.vector_norm(exact, dim=1)
    if cancelling:  # the case is what it says
        assert float(exact_norms.max()) < 1e-2
    explicit_error = (torch.linalg.vector_norm(explicit.double() - exact, dim=1) / exact_norms).max()
    norm_error = ((norms.double() - exact_norms).abs() / exact_norms).max()
    dot_error = ((dots.double() - exact_dots).abs() / (exact_norms * torch.linalg.vector_norm(z.double(), dim=1)))
    assert float(norm_error) <= max(2 * float(explicit_error), 1e-6)
    assert float(dot_error.max()) <= max(2 * float(explicit_error), 1e-6)
    torch.testing.assert_close(dots, row_dots(explicit, z), rtol=1e-4, atol=1e-6)


def test_reshaping_rules_get_the_guiding_gradients_and_their_sum():
    """With ``adjust`` the rows are rebuilt from the explicit guiding gradients, and their sum comes back."""
    flat, theta, xs, ys, z = fused_case(False)
    guiding = GuidingGradients(flat, xs, ys)
    explicit = guiding.gradients(theta, torch.arange(4))
    received = z.clone()
    dots, norms, total = guiding.compare(theta, z, adjust=lambda clients, rows, g: rows + g)
    assert torch.equal(dots, row_dots(explicit, received))
    assert torch.equal(norms, torch.linalg.vector_norm(explicit, dim=1))
    assert torch.equal(z, received + explicit)
    torch.testing.assert_close(total, explicit.sum(dim=0))
    picked = torch.tensor([False, True, False, True])
    dots, norms, _ = guiding.compare(theta, received.clone(), picked)
    assert torch.isnan(dots[[0, 2]]).all() and torch.isnan(norms[[0, 2]]).all()
    torch.testing.assert_close(norms[[1, 3]], torch.linalg.vector_norm(explicit[[1, 3]], dim=1))
