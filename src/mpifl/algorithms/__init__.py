"""The client side of a round: gradient-based rules vs RSA, whose clients keep their own model copies."""

from __future__ import annotations

import torch

from .. import rules
from ..config import ExperimentConfig
from ..data.datasets import Scaling
from ..models import FlatModel
from .gradient import ClientData, GradientClients
from .rsa import RsaClients


def make_clients(cfg: ExperimentConfig, flat: FlatModel, clients: list[ClientData], num_classes: int,
                 theta0: torch.Tensor, batch_length: int, scaling: Scaling) -> GradientClients:
    """The block of clients a rank hosts, of the kind the configured rule needs; ``batch_length`` is the longest
    mini-batch of any client (every rank pads to it, see :mod:`mpifl.gradients`); ``scaling`` turns a batch of stored
    uint8 images into model inputs."""
    cls = RsaClients if rules.get("rule", cfg.aggregator.name).client_models else GradientClients
    return cls(cfg, flat, clients, num_classes, theta0, batch_length, scaling)


__all__ = ["ClientData", "GradientClients", "RsaClients", "make_clients"]
