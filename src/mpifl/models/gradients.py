"""Per-client mean gradients for a block of clients, in batched calls of one fixed shape.

Client j's gradient is (1/m_j) sum_k grad l(theta_j; x_jk, y_jk) (eq. 3 and, on the server's samples, eq. 8). Clients
with fewer points are padded and the padding gets weight 0, so one ``vmap`` over clients handles unequal sizes, and
the same function serves client updates, RSA's per-client models and DiverseFL's guiding gradients.

Placement independence: GPU kernels (and cuDNN's algorithm choice) depend on the batch shape, so a client's gradient
would change with the number of clients its rank hosts. Every call therefore has the same shape on every rank: ``chunk``
clients (the last chunk padded with zero-weight clients) of ``length`` points each (the longest batch of *all*
clients, not of the rank's block).

Models that are a stack of Linear layers with ReLU between them (softmax regression, the paper's MLP) take their
gradients from :class:`DenseStack`, a hand-written backward pass: each layer's forward and input gradient are one
matmul over every point of the call at a shared θ, and client j's weight gradient is one batched matmul δ_jᵀ A_j
written into its row. Autograd over a vmapped forward (every other model) makes one copy of θ per client and
reassembles each client's gradient from per-parameter pieces; the hand-written pass does neither, and it needs no
``torch.func.grad`` (whose torch._dynamo import costs ~150 MB resident).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .networks import FlatModel


class DenseStack:
    """Per-client gradients of the weighted cross-entropy for a model ``Flatten → (Linear → ReLU)* → Linear``.

    Equal to autograd's to float rounding (the same products, summed in another order). θ is [d] (one model for
    every client) or [k, d] (RSA's per-client models: the forward becomes one batched matmul per layer).
    """

    def __init__(self, flat: FlatModel, layers: list[tuple[int, int, int, int]]) -> None:
        self.dim = flat.dim
        self.layers = layers  # (weight offset, out features, in features, bias offset) in θ, input layer first

    @classmethod
    def of(cls, flat: FlatModel) -> DenseStack | None:
        """The hand-written pass for ``flat``'s module, or None when it is not such a stack (e.g. VGG11-GN)."""
        modules = list(flat.module.children()) if isinstance(flat.module, nn.Sequential) else []
        if not modules or not isinstance(modules[0], nn.Flatten):
            return None
        kinds = [type(m) for m in modules[1:]]
        expected = [nn.Linear, nn.ReLU] * (len(kinds) // 2) + [nn.Linear]
        if kinds != expected or any(m.bias is None for m in modules[1::2]):
            return None
        offsets = dict(zip(flat.names, itertools.accumulate(flat.numels, initial=0)))
        layers = [(offsets[f"{i}.weight"], m.out_features, m.in_features, offsets[f"{i}.bias"])
                  for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
        return cls(flat, layers)

    def __call__(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """[k, d] gradients of the k clients' weighted losses (x [k, M, ...], y and w [k, M]), into ``out`` if given."""
        k = y.shape[0]
        if out is None:
            out = torch.empty((k, self.dim), dtype=torch.float32, device=x.device)
        for (wo, o, i, bo), delta, inputs in self._deltas(theta, x, y, w):
            torch.bmm(delta.transpose(1, 2), inputs, out=out[:, wo:wo + o * i].view(k, o, i))
            torch.sum(delta, dim=1, out=out[:, bo:bo + o])
        return out

    def dots_and_norms(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                       z: torch.Tensor, x_gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g_j · z_j, ||g_j||), each [k] float32, for the gradients g_j of :meth:`__call__` and rows z [k, d],
        without writing the [k, d] gradients. ``x_gram`` is :meth:`gram` of x (fixed samples: computed once).

        Per layer with the points' inputs a_m and output gradients δ_m, the weight block g_W = Σ_m δ_m a_mᵀ gives
        g_W · Z_W = Σ_m δ_m · (Z_W a_m) (one batched matmul over Z's block, which the dot must read anyway) and
        ||g_W||² = Σ_{m,m'} (a_m · a_m')(δ_m · δ_m'): two [M, M] Gram matrices per client, in float64 so that
        cancelling terms leave a norm as accurate as the float32 gradient's (tests compare both with float64). For
        DiverseFL's guiding samples (M = 30) this is a fraction of the work of writing the gradients and reading
        them back for the dot and the norm."""
        k = y.shape[0]
        dots = torch.zeros(k, dtype=torch.float64, device=x.device)
        squares = torch.zeros_like(dots)
        for (wo, o, i, bo), delta, inputs in self._deltas(theta, x, y, w):
            block = z[:, wo:wo + o * i].unflatten(1, (o, i))
            bias = delta.sum(dim=1)
            projected = torch.bmm(block, inputs.transpose(1, 2))  # [k, out, M]: Z_W a_m
            dots += torch.linalg.vecdot(projected.flatten(1), delta.transpose(1, 2).flatten(1)).double()
            dots += torch.linalg.vecdot(bias, z[:, bo:bo + o]).double()
            a_gram = x_gram if wo == self.layers[0][0] else self.gram(inputs)
            squares += (a_gram * self.gram(delta)).sum(dim=(1, 2))
            squares += bias.double().square().sum(dim=1)
        return dots.float(), squares.clamp_min_(0).sqrt_().float()

    @staticmethod
    def gram(inputs: torch.Tensor) -> torch.Tensor:
        """[k, M, M] float64 inner products of each client's M points (inputs [k, M, ...]). Float32 ones were off by
        1e-3 of the norm where the points' gradients cancel to 1e-4 of their sum (the float32 gradient: 5e-5)."""
        a = inputs.flatten(2).double()
        return torch.bmm(a, a.transpose(1, 2))

    def _deltas(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                w: torch.Tensor) -> Iterator[tuple[tuple[int, int, int, int], torch.Tensor, torch.Tensor]]:
        """(layer, δ [k, M, out], the layer's input [k, M, in]) from the last layer to the first: the weighted
        loss's gradient with respect to the layer's outputs, and what the layer was applied to."""
        k, m = y.shape
        per_client = theta.dim() == 2
        params = [(_param(theta, wo, (o, i)), _param(theta, bo, (o,))) for wo, o, i, bo in self.layers]
        inputs = [x.reshape(k, m, -1)]
        for weight, bias in params[:-1]:
            inputs.append(torch.relu(_linear(inputs[-1], weight, bias, per_client)))
        delta = torch.softmax(_linear(inputs[-1], *params[-1], per_client), dim=-1)
        delta.scatter_add_(2, y.unsqueeze(-1), delta.new_full((k, m, 1), -1.0))
        delta.mul_(w.unsqueeze(-1))
        for layer in reversed(range(len(params))):
            yield self.layers[layer], delta, inputs[layer]
            if layer:
                delta = torch.ops.aten.threshold_backward(torch.matmul(delta, params[layer][0]), inputs[layer], 0)


def _param(theta: torch.Tensor, offset: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The parameter at ``offset`` in θ [d] or in each row of θ [k, d], shaped ``shape`` (or [k, *shape])."""
    return theta[..., offset:offset + math.prod(shape)].unflatten(-1, shape)


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, per_client: bool) -> torch.Tensor:
    """h [k, M, in] → h Wᵀ + b: one matmul over all k·M points for a shared W, one per client otherwise."""
    if per_client:
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
    return torch.addmm(bias, h.flatten(0, 1), weight.t()).unflatten(0, h.shape[:2])


def stack_padded(xs: list[torch.Tensor], ys: list[torch.Tensor], length: int | None = None,
                 into: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lists of per-client (x [m_j, ...], y [m_j]) → x [k, M, ...], y [k, M], weights [k, M] (1/m_j or 0).

    M is ``length`` (pass the longest batch over every client, so all ranks stack the same shape) or the longest here.
    With ``into`` (e.g. :meth:`mpifl.data.datasets.Scaling.into`) the xs are raw images, written by ``into(x_j,
    slot)`` into float32 slots of x as they are scaled; without it they are copied as they are.
    """
    longest = max(len(y) for y in ys)
    if length is not None and length < longest:
        raise ValueError(f"stack_padded: length={length} is shorter than a client's {longest} points.")
    size = length or longest
    k = len(xs)
    x = torch.empty((k, size, *xs[0].shape[1:]), dtype=torch.float32 if into else xs[0].dtype, device=xs[0].device)
    y = ys[0].new_empty((k, size))
    w = torch.zeros((k, size), dtype=torch.float32, device=xs[0].device)
    for j, (xj, yj) in enumerate(zip(xs, ys)):  # only the padding is zeroed: a fill of the whole x costs a pass
        m = len(yj)
        if into is None:
            x[j, :m] = xj
        else:
            into(xj, x[j, :m])
        y[j, :m] = yj
        x[j, m:] = 0
        y[j, m:] = 0
        w[j, :m] = 1.0 / m
    return x, y, w


def _padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with zero rows appended up to ``rows`` (zero weights make the padding clients' gradients zero)."""
    if len(t) == rows:
        return t
    return torch.cat([t, t.new_zeros((rows - len(t), *t.shape[1:]))])


def chunks(k: int, chunk: int) -> Iterator[slice]:
    """The client slices of consecutive fixed-size calls over k clients."""
    for start in range(0, k, chunk):
        yield slice(start, min(start + chunk, k))


def batched_grads(flat: FlatModel, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                  chunk: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """[k, d] gradients, ``chunk`` clients per call. ``theta`` is [d] (one model for all) or [k, d] (one model per
    client, RSA). ``out`` ([k, d], reused across rounds) receives the result; none is allocated when given.

    Linear stacks use :class:`DenseStack`. Other models: the vmap covers the forward pass only, on one model copy per
    client, and plain autograd differentiates the sum of the per-client losses: row j of the result is client j's
    gradient. ``torch.func.grad`` gives the same bits but imports torch._dynamo and sympy on first use, 130 MB of
    resident memory on every rank.
    """
    dense = DenseStack.of(flat)
    per_client = theta.dim() == 2
    k = x.shape[0]
    if out is None:
        out = torch.empty((k, flat.dim), dtype=torch.float32, device=x.device)
    for part in chunks(k, chunk):
        full = part.stop - part.start == chunk
        models = _padded(theta[part], chunk) if per_client else theta
        xp, yp, wp = _padded(x[part], chunk), _padded(y[part], chunk), _padded(w[part], chunk)
        if dense is not None and full:
            dense(models.detach(), xp, yp, wp, out=out[part])
        elif dense is not None:
            out[part] = dense(models.detach(), xp, yp, wp)[: part.stop - part.start]
        else:
            out[part] = _autograd_grads(flat, models, xp, yp, wp)[: part.stop - part.start]
    return out


def _weighted_loss(flat: FlatModel) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                                                 torch.Tensor]:
    """(θ, x_j, y_j, w_j) → client j's weighted cross-entropy Σ_k w_jk l(θ; x_jk, y_jk), the function both autograd
    paths differentiate."""

    def weighted_loss(t: torch.Tensor, xj: torch.Tensor, yj: torch.Tensor, wj: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(flat.forward(t, xj), yj, reduction="none") * wj).sum()

    return weighted_loss


def _autograd_grads(flat: FlatModel, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                    w: torch.Tensor) -> torch.Tensor:
    """[k, d] gradients by autograd over a forward pass vmapped over k copies of θ ([d], or one per client [k, d])."""
    models = theta if theta.dim() == 2 else theta.expand(x.shape[0], -1)
    t = models.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(torch.func.vmap(_weighted_loss(flat))(t, x, y, w).sum(), t)
    return g


class SharedModelGrads:
    """Per-client gradients at one model θ for every client (DiverseFL's guiding gradients), ``chunk`` clients per
    call. Every call has the same shape (the last chunk padded with zero-weight clients), so a client's gradient does
    not depend on which clients are computed with it. Linear stacks use :class:`DenseStack`; other models
    ``torch.func.grad`` with θ unbatched in the vmap (each layer's forward is one matmul over the chunk's stacked
    points, no [chunk, d] copy of θ), about 1.5× faster than :func:`batched_grads`' path there, at the price of
    importing torch._dynamo (~160 MB resident) on rank 0, the only rank that computes guiding gradients."""

    def __init__(self, flat: FlatModel, chunk: int) -> None:
        self.dim, self.chunk = flat.dim, chunk
        self._dense = DenseStack.of(flat)
        self._grads = self._dense if self._dense is not None else \
            torch.func.vmap(torch.func.grad(_weighted_loss(flat)), in_dims=(None, 0, 0, 0))

    def __call__(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[k, d] gradients of the k ≤ ``chunk`` clients' weighted losses (x [k, M, ...], y and w [k, M]) at θ [d]."""
        k = x.shape[0]
        return self._grads(theta.detach(), _padded(x, self.chunk), _padded(y, self.chunk), _padded(w, self.chunk))[:k]

    @property
    def fuses_dots(self) -> bool:
        """Whether :meth:`dots_and_norms` can skip the gradients (linear stacks only)."""
        return self._dense is not None

    def dots_and_norms(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                       z: torch.Tensor, x_gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g_j · z_j, ||g_j||) [k] of the gradients :meth:`__call__` returns, for rows z [k, d], by
        :meth:`DenseStack.dots_and_norms` (``x_gram``: :meth:`DenseStack.gram` of x), padded to ``chunk`` clients
        like every call; needs :attr:`fuses_dots`."""
        assert self._dense is not None
        k, c = x.shape[0], self.chunk
        dots, norms = self._dense.dots_and_norms(theta.detach(), _padded(x, c), _padded(y, c), _padded(w, c),
                                                 _padded(z, c), _padded(x_gram, c))
        return dots[:k], norms[:k]
