"""The client side of a round, of the kind the rule needs (``Rule.needs.clients``, registry kind ``clients``):
plain mini-batch gradients, gradients with Gaussian noise (Noisy Median), or model copies (RSA)."""

from .gradient import ClientData, GradientClients, NoisyClients
from .pool import ClientPool
from .rsa import RsaClients

__all__ = ["ClientData", "ClientPool", "GradientClients", "NoisyClients", "RsaClients"]
