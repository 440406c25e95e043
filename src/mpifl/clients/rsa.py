"""RSA clients (eq. 6): each keeps a model copy theta_j and uploads it; the server applies eq. 7.

Rounds are synchronous (Jacobi) as in [12]: in round r client j uploads theta_j^{r−1}, then updates it with
theta_M^{r−1} received in the same round, so one Bcast and one Gatherv per round suffice.
"""

from __future__ import annotations

import torch

from ..attacks import Attack
from ..config import ExperimentConfig
from ..data.datasets import Scaling
from ..models import FlatModel
from ..registry import register
from .gradient import ClientData, GradientClients


@register("clients", "model_copies")
class RsaClients(GradientClients):
    """Each client keeps its model copy; ``aggregator.params.delta`` is read from the rule's own Params object, the
    one the server's eq. 7 uses."""

    every_round = True

    def __init__(self, cfg: ExperimentConfig, flat: FlatModel, clients: list[ClientData], num_classes: int,
                 theta0: torch.Tensor, batch_length: int, scaling: Scaling, attack: Attack,
                 rule_params: object) -> None:
        super().__init__(cfg, flat, clients, num_classes, theta0, batch_length, scaling, attack, rule_params)
        self.models = theta0.unsqueeze(0).repeat(len(clients), 1)

    def messages(self, theta: torch.Tensor, round_: int, byzantine: torch.Tensor, lr: float,
                 sampled: torch.Tensor | None = None) -> torch.Tensor:
        """Upload theta_j^{r−1} (forged for Byzantine clients), then
        theta_j^r = theta_j^{r−1}
                    − mu_r ( (1/(n m)) sum_k grad l(theta_j^{r−1}) + delta sign(theta_j^{r−1} − theta_M^{r−1}) ).
        Every client takes part every round (the config refuses ``train.clients_per_round`` with RSA).
        """
        upload = self._forge_rows(self.models.clone(), round_, byzantine).contiguous()
        grads = self.gradients(self.models, round_, byzantine) / self.cfg.clients
        penalty = self.rule_params.delta * torch.sign(  # type: ignore[attr-defined]
            self.models - theta.unsqueeze(0))
        self.models -= lr * (grads + penalty)
        return upload

    def checkpoint_state(self) -> torch.Tensor | None:
        return self.models

    def restore(self, state: torch.Tensor) -> None:
        self.models = state.to(self.models.device, copy=True)
