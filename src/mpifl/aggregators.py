"""Server rules on the stacked update matrix Z [n, d] (row j = client j's message z_j, client order).

Each rule returns the direction g of the model step theta ← theta − mu_r (g + lambda theta) (eqs. 4, 13), or None when
it accepts nobody, in which case the model is left unchanged for the round (NOTES.md).

References
    [9]  D. Yin, Y. Chen, K. Ramchandran, P. Bartlett, "Byzantine-robust distributed learning: towards optimal
         statistical rates", ICML 2018, arXiv:1803.01498 (Median, TrMean).
    [11] X. Chen, T. Chen, H. Sun, Z. S. Wu, M. Hong, "Distributed training with heterogeneous data: bridging median-
         and mean-based algorithms", NeurIPS 2020, arXiv:1906.01736 (Noisy Median).
    [12] L. Li, W. Xu, T. Chen, G. B. Giannakis, Q. Ling, "RSA: Byzantine-robust stochastic aggregation methods for
         distributed learning from heterogeneous datasets", AAAI 2019, arXiv:1811.03761.
    DiverseFL: S. Prakash, A. S. Avestimehr, "Mitigating Byzantine attacks in federated learning", arXiv:2010.07541.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import AggregatorConfig


@dataclass(frozen=True)
class Decision:
    """What the server did with one round's messages: the direction (None: no step) and who was accepted."""

    direction: torch.Tensor | None
    accepted: torch.Tensor  # [n] bool


def masked_mean(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """(1/|A|) sum_{j in A} z_j over the accepted set A = {j : mask_j}; None when A is empty."""
    if not bool(mask.any()):
        return None
    return z[mask].mean(dim=0)


def coordinate_median(z: torch.Tensor) -> torch.Tensor:
    """g(u) = median_j z_j(u); for even n the mean of the two middle values (NOTES.md; torch's median is the lower)."""
    n = z.shape[0]
    lower = torch.kthvalue(z, (n + 1) // 2, dim=0).values
    upper = torch.kthvalue(z, n // 2 + 1, dim=0).values
    return (lower + upper) / 2


def trimmed_mean(z: torch.Tensor, beta: float) -> torch.Tensor:
    """g(u) = (1/(n − 2b)) sum of z_j(u) after dropping the b = floor(beta n) largest and smallest values [9].

    NOTES.md: the printed normaliser 1/(1 − 2 beta n) is a typo for the number of values kept.
    """
    n = z.shape[0]
    b = int(beta * n)
    if b == 0:
        return z.mean(dim=0)
    return torch.sort(z, dim=0).values[b: n - b].mean(dim=0)


def rsa_direction(theta: torch.Tensor, z: torch.Tensor, delta: float) -> torch.Tensor:
    """RSA's server step without weight decay, eq. 7: g = delta sum_j sign(theta_M − theta_j), z_j = theta_j."""
    return delta * torch.sign(theta.unsqueeze(0) - z).sum(dim=0)


def similarity(z: torch.Tensor, guiding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DiverseFL's per-client criteria: C1 = sign(g~_j · z_j) (eq. 9) and C2 = ||z_j|| / ||g~_j|| (eq. 10).

    A zero guiding gradient gives C2 = inf (or nan for a zero update): both fail condition 2.
    """
    c1 = torch.sign((guiding * z).sum(dim=1)).to(torch.int8)
    c2 = torch.linalg.vector_norm(z, dim=1) / torch.linalg.vector_norm(guiding, dim=1)
    return c1, c2


def diversefl_accept(c1: torch.Tensor, c2: torch.Tensor, eps1: float, eps2: float) -> torch.Tensor:
    """Accept client j iff C1 > 0 (eq. 11) and eps1 < C2 < eps2 (eq. 12); strict inequalities as in the paper."""
    return (c1 > 0) & (c2 > eps1) & (c2 < eps2)


def aggregate(cfg: AggregatorConfig, z: torch.Tensor, theta: torch.Tensor, honest: torch.Tensor,
              accepted_by_filter: torch.Tensor | None) -> Decision:
    """Apply the configured rule. ``honest`` is the ground truth (OracleSGD only); ``accepted_by_filter`` is
    DiverseFL's decision from :func:`diversefl_accept`."""
    n = z.shape[0]
    everyone = torch.ones(n, dtype=torch.bool)
    name = cfg.name
    if name == "diversefl":
        assert accepted_by_filter is not None
        return Decision(masked_mean(z, accepted_by_filter.to(z.device)), accepted_by_filter)
    if name == "oracle":
        return Decision(masked_mean(z, honest.to(z.device)), honest.clone())
    if name == "mean":
        return Decision(z.mean(dim=0), everyone)
    if name in ("median", "noisy_median"):
        return Decision(coordinate_median(z), everyone)
    if name == "trmean":
        return Decision(trimmed_mean(z, cfg.beta), everyone)
    return Decision(rsa_direction(theta, z, cfg.delta), everyone)
