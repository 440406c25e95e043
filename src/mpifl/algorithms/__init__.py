"""The client side of a round: gradient-based rules vs RSA, whose clients keep their own model copies."""

from __future__ import annotations

from .gradient import ClientData, GradientClients
from .rsa import RsaClients


def make_clients(rule: str, *args, **kwargs) -> GradientClients:  # type: ignore[no-untyped-def]
    """The client block for an aggregator name; same constructor arguments for both kinds."""
    cls = RsaClients if rule == "rsa" else GradientClients
    return cls(*args, **kwargs)


__all__ = ["ClientData", "GradientClients", "RsaClients", "make_clients"]
