"""Clients of gradient-based rules: each uploads z_j = g_j (eq. 3), a Byzantine one what its attack makes of it
(eq. 5); Noisy Median's honest clients add Gaussian noise first. With ``train.momentum`` = beta > 0 each client keeps
m_j <- beta m_j + (1 - beta) g_j (m_j = 0 before round 1) and uploads m_j instead (ByzFL's DSGD); a Byzantine client's
own vector, the one a client-side attack tampers with, is its momentum too. Under an attack that reads them
(``Attack.needs_flipped``) each honest client also differentiates its batch with flipped labels (no momentum)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..attacks import Attack
from ..attacks.client import flipped
from ..config import ExperimentConfig
from ..data.datasets import Scaling
from ..models.gradients import batched_grads, stack_padded
from ..models import FlatModel
from ..registry import register
from ..rng import Purpose, generator


@dataclass(frozen=True)
class ClientData:
    """One client's local training set as stored (uint8 images), on the hosting rank's device."""

    client: int
    x: torch.Tensor
    y: torch.Tensor
    batch_size: int


@register("clients", "gradient")
class GradientClients:
    """A block of consecutive clients hosted by one rank; their gradients are computed in one batched call.

    ``attack`` is the run's attack (its client-side hooks act for the Byzantine clients), ``rule_params`` the rule's
    Params object: the client side of a rule that needs its clients' help reads the same one as the server.
    """

    every_round: ClassVar[bool] = False  # True: every client must take part every round (no cross-device sampling)

    def __init__(self, cfg: ExperimentConfig, flat: FlatModel, clients: list[ClientData], num_classes: int,
                 theta0: torch.Tensor, batch_length: int, scaling: Scaling, attack: Attack,
                 rule_params: object) -> None:
        self.cfg, self.flat, self.clients, self.num_classes = cfg, flat, clients, num_classes
        self.ids = [c.client for c in clients]
        self.batch_length, self.scaling = batch_length, scaling
        self.attack, self.rule_params = attack, rule_params
        self.out = theta0.new_empty((len(clients), flat.dim))  # the rank's update block, reused every round
        # [k, d] momentum of the hosted clients (train.momentum > 0 only): per-client state, kept in checkpoints
        self.momentum = theta0.new_zeros((len(clients), flat.dim)) if cfg.train.momentum > 0 else None
        #: [k, d] the honest clients' flipped-label gradients of the round, laid out as the update block (zero rows for
        #: Byzantine clients and those outside the round); only under an attack with ``needs_flipped``
        self.flipped = theta0.new_zeros((len(clients), flat.dim)) if attack.needs_flipped else None

    def host(self, clients: list[ClientData]) -> None:
        """Compute for ``clients`` from now on (cross-device rounds hand each worker its share of the cohort); the
        update block keeps its rows when their number does not change."""
        self.clients, self.ids = clients, [c.client for c in clients]
        if self.out.shape[0] != len(clients):
            self.out = self.out.new_empty((len(clients), self.flat.dim))
            if self.flipped is not None:
                self.flipped = self.out.new_zeros((len(clients), self.flat.dim))

    def _batch(self, c: ClientData, round_: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client c's mini-batch of round ``round_``: uint8 images (scaled as they are stacked) and labels."""
        g = generator(self.cfg.seed, Purpose.BATCH, round_, c.client)
        idx = torch.randperm(len(c.y), generator=g)[: c.batch_size].to(c.y.device)
        # index_select, not c.x[idx]: the same rows, 5x faster for a batch of uint8 images on a CPU
        return torch.index_select(c.x, 0, idx), torch.index_select(c.y, 0, idx)

    def gradients(self, theta: torch.Tensor, round_: int, byzantine: torch.Tensor,
                  sampled: torch.Tensor | None = None) -> torch.Tensor:
        """[k, d] mini-batch gradients of the hosted clients; Byzantine ones on poisoned labels, in the rank's update
        block (overwritten every call). Clients outside ``sampled`` ([n] bool; None: all) compute nothing: zero rows.
        Under an attack with ``needs_flipped`` also :attr:`flipped`, from the same batches.

        ``theta`` is [d], or [k, d] for per-client models; ``byzantine`` is the full [n] ground-truth mask.
        """
        rows = [row for row, j in enumerate(self.ids) if sampled is None or sampled[j]]
        if self.flipped is not None:
            self.flipped.zero_()
        if not rows:  # the server rank of a multi-rank job hosts nobody; or none of this rank's clients take part
            return self.out.zero_()
        xs, ys = [], []
        for row in rows:
            c = self.clients[row]
            x, y = self._batch(c, round_)
            if byzantine[c.client]:
                y = self.attack.poison_labels(y, self.num_classes)
            xs.append(x)
            ys.append(y)
        x, y, w = stack_padded(xs, ys, self.batch_length, self.scaling.into)
        chunk = self.cfg.train.client_chunk
        if self.flipped is not None:
            honest = [at for at, row in enumerate(rows) if not byzantine[self.ids[row]]]
            self._flipped_gradients(theta, x, y, w, honest, [rows[at] for at in honest])
        if len(rows) == len(self.ids):
            return batched_grads(self.flat, theta, x, y, w, chunk, self.out)
        self.out.zero_()
        self.out[rows] = batched_grads(self.flat, theta, x, y, w, chunk)
        return self.out

    def _flipped_gradients(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                           at: list[int], rows: list[int]) -> None:
        """Rows ``rows`` of :attr:`flipped`: the gradients on the stacked batches ``at`` of (x, y, w) with flipped
        labels. Padding points keep weight 0 whatever their label becomes."""
        assert self.flipped is not None
        if not at:
            return
        pick = torch.tensor(at, device=x.device)
        self.flipped[rows] = batched_grads(self.flat, theta, x[pick], flipped(y[pick], self.num_classes), w[pick],
                                           self.cfg.train.client_chunk)

    def _forge_rows(self, z: torch.Tensor, round_: int, byzantine: torch.Tensor,
                    sampled: torch.Tensor | None = None) -> torch.Tensor:
        for row, j in enumerate(self.ids):
            if byzantine[j] and (sampled is None or sampled[j]):
                z[row] = self.attack.tamper(z[row], self.cfg.seed, round_, j)
        return z

    def messages(self, theta: torch.Tensor, round_: int, byzantine: torch.Tensor, lr: float,
                 sampled: torch.Tensor | None = None) -> torch.Tensor:
        """The [k, d] float32 block this rank uploads in round ``round_``; zero rows for clients outside ``sampled``."""
        z = self._honest_extra(self.gradients(theta, round_, byzantine, sampled), round_, byzantine, sampled)
        return self._forge_rows(self._with_momentum(z), round_, byzantine, sampled).contiguous()

    def _with_momentum(self, z: torch.Tensor) -> torch.Tensor:
        """m <- beta m + (1 - beta) z, written into z (unchanged when train.momentum is 0; the config refuses momentum
        with train.clients_per_round, so every hosted client computes every round)."""
        if self.momentum is None:
            return z
        beta = self.cfg.train.momentum
        self.momentum.mul_(beta).add_(z, alpha=1 - beta)
        return z.copy_(self.momentum)

    def _honest_extra(self, z: torch.Tensor, round_: int, byzantine: torch.Tensor,
                      sampled: torch.Tensor | None) -> torch.Tensor:
        """What honest clients add to their gradients before upload (nothing here)."""
        return z

    def checkpoint_state(self) -> torch.Tensor | None:
        """The [k, d] per-client state a checkpoint must keep: the momentum, or none (train.momentum 0)."""
        return self.momentum

    def restore(self, state: torch.Tensor) -> None:
        """Set the per-client state from a checkpoint."""
        if self.momentum is not None:
            self.momentum = state.to(self.momentum.device, copy=True)


@register("clients", "noisy")
class NoisyClients(GradientClients):
    """Noisy Median [11]: honest clients add N(0, sigma²) noise (``aggregator.params.sigma``) before upload;
    Byzantine clients send what the attack makes of their noiseless update (docs/paper-notes.md)."""

    def _honest_extra(self, z: torch.Tensor, round_: int, byzantine: torch.Tensor,
                      sampled: torch.Tensor | None) -> torch.Tensor:
        sigma = self.rule_params.sigma  # type: ignore[attr-defined]
        for row, j in enumerate(self.ids):
            if not byzantine[j] and (sampled is None or sampled[j]):
                noise = torch.randn(z.shape[1], generator=generator(self.cfg.seed, Purpose.NOISE, round_, j))
                z[row] += sigma * noise.to(z.device)
        return z
