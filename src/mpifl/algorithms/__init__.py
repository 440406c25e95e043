"""The client side of a round: gradient-based rules vs RSA, whose clients keep their own model copies."""

from __future__ import annotations

import torch

from ..config import ExperimentConfig
from ..models import FlatModel
from .gradient import ClientData, GradientClients
from .rsa import RsaClients


def make_clients(cfg: ExperimentConfig, flat: FlatModel, clients: list[ClientData], num_classes: int,
                 theta0: torch.Tensor) -> GradientClients:
    """The block of clients a rank hosts, of the kind the configured rule needs."""
    cls = RsaClients if cfg.aggregator.name == "rsa" else GradientClients
    return cls(cfg, flat, clients, num_classes, theta0)


__all__ = ["ClientData", "GradientClients", "RsaClients", "make_clients"]
