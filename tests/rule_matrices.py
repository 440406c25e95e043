"""Seeded update matrices with adversarial rows, shared by the differential tests of the rules."""

import torch

K, D = 11, 50  # rows (usable updates) and columns of the default matrices


def rows(seed: int, attack: str, k: int = K, d: int = D) -> torch.Tensor:
    """k seeded Gaussian rows around a common mean; 'scaled': rows 0-1 ×100, 'far': rows 0-2 at one far point."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k, d, generator=g) + 0.5
    if attack == "scaled":
        x[:2] *= 100
    elif attack == "far":
        x[:3] = 50.0
    return x
