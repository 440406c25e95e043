"""The field's standard colluding attacks, acting on rank 0 with the round's honest updates (:mod:`.base`).

Every attack returns float32 rows [b, d] on the device of ``view.own``. Random draws come from ``view.generator`` on the
CPU and then move to the device, so a run draws the same numbers on any device. Coordinate-wise standard deviations
are unbiased (ddof = 1, as byzfl's ``ALittleIsEnough`` and Shejwalkar & Houmansadr's code compute them); the deviation
of a single honest row is defined as zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import torch

from ..errors import ConfigError
from ..registry import register
from .base import AttackView, ColludingAttack


def _std(rows: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise unbiased standard deviation of rows [k, d]; zero for one row (instead of NaN).

    Two passes in float64, rounded to the rows' dtype: torch's ``std(dim=0)`` of float32 rows gives the float64 result
    rounded too (the same bits, ``tests/test_attacks_field.py``), but reduces across rows ~10x slower on a CPU (31 ms
    against 3 ms for [10, 79,510] on one thread), which made ALIE the costliest part of a ByzFL grid's round."""
    if rows.shape[0] < 2:
        return torch.zeros_like(rows[0])
    wide = rows.double()
    return (wide - wide.mean(dim=0)).square_().sum(dim=0).div_(rows.shape[0] - 1).sqrt_().to(rows.dtype)


def _all_send(row: torch.Tensor, view: AttackView) -> torch.Tensor:
    """Every Byzantine client uploads the same row [d]: [b, d] float32 on the attack's device."""
    return row.to(device=view.own.device, dtype=torch.float32).expand(view.own.shape[0], -1).clone()


def _draw(view: AttackView, sample: Callable[..., torch.Tensor]) -> torch.Tensor:
    """One float32 draw per Byzantine coordinate from the round's CPU generator, moved to the attack's device."""
    return sample(view.own.shape, generator=view.generator, dtype=torch.float32).to(view.own.device)


@register("attack", "zero")
class Zero(ColludingAttack):
    """Every Byzantine client uploads the zero vector (a crashed or free-riding client)."""

    def forge(self, view: AttackView) -> torch.Tensor:
        return torch.zeros_like(view.own)


@dataclass(frozen=True)
class AlieParams:
    z: float | None = None  # None: the paper's z_max for the round's n and f (:func:`z_max`)


def z_max(n: int, f: int) -> float:
    """Baruch et al.'s largest z that stays hidden: the forged row must look better than s = floor(n/2 + 1) − f honest
    rows (enough for a majority with the f Byzantine ones), so z = Φ⁻¹((n − s)/n). s is kept ≥ 1, so z stays finite
    when the Byzantine clients alone are a majority; 0 where no z fits (n ≤ s, only possible without Byzantines)."""
    s = max(n // 2 + 1 - f, 1)
    return NormalDist().inv_cdf((n - s) / n) if n > s else 0.0


@register("attack", "alie")
class Alie(ColludingAttack):
    """A Little Is Enough: every Byzantine client sends mean(honest) + z·std(honest), coordinate-wise.

    Honest updates differ by a few standard deviations per coordinate, so a shift of z standard deviations in every
    coordinate at once stays inside the spread that median-, trimmed-mean- and Krum-style rules accept, yet its sum
    over d coordinates moves the model far. The sign follows the paper's Algorithm 3 and byzfl's ``ALittleIsEnough``
    (μ + τσ, with its ``tau`` = z); a negative ``z`` shifts the other way.

    M. Baruch, G. Baruch, Y. Goldberg, "A Little Is Enough: Circumventing Defenses for Distributed Learning",
    NeurIPS 2019.
    """

    Params = AlieParams

    def forge(self, view: AttackView) -> torch.Tensor:
        z = self.params.z if self.params.z is not None else z_max(view.rule.n, view.rule.f)
        return _all_send(view.honest.mean(dim=0) + z * _std(view.honest), view)


@dataclass(frozen=True)
class IpmParams:
    epsilon: float = 0.1  # the forged row is −epsilon times the honest mean


@register("attack", "ipm")
class Ipm(ColludingAttack):
    """Inner Product Manipulation: every Byzantine client sends −ε·mean(honest).

    Convergence needs the aggregate to keep a positive inner product with the true gradient; rules that bound each
    update's distance or norm still let f rows pointing against the honest mean drag that inner product to zero or
    below (small ε for median/Krum, large ε for the mean).

    C. Xie, O. Koyejo, I. Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation",
    UAI 2019 (PMLR 115, 2020).
    """

    Params = IpmParams

    def forge(self, view: AttackView) -> torch.Tensor:
        return _all_send(-self.params.epsilon * view.honest.mean(dim=0), view)


#: Perturbation directions p of the AGR-agnostic attacks, from the honest rows and their mean.
PERTURBATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "unit": lambda honest, mu: -torch.nn.functional.normalize(mu, dim=0),  # inverse unit vector
    "std": lambda honest, mu: -_std(honest),  # inverse standard deviation
    "sign": lambda honest, mu: -mu.sign(),  # inverse sign
}


@dataclass(frozen=True)
class AgnosticParams:
    perturbation: str = "std"  # unit (−μ/‖μ‖), std (−std(honest)) or sign (−sign(μ))
    gamma_init: float = 10.0  # first γ of the halving search (γ stays below 2·gamma_init)
    tolerance: float = 1e-5  # the search stops once its step is at most this

    def __post_init__(self) -> None:
        if self.perturbation not in PERTURBATIONS:
            raise ConfigError(f"attack.params.perturbation={self.perturbation!r} is not one of "
                              f"{', '.join(PERTURBATIONS)}.")
        if self.gamma_init <= 0:
            raise ConfigError(f"attack.params.gamma_init={self.gamma_init} must be > 0.")
        if self.tolerance <= 0:
            raise ConfigError(f"attack.params.tolerance={self.tolerance} must be > 0.")


def halving_search(fits: Callable[[float], bool], gamma_init: float, tolerance: float) -> float:
    """Shejwalkar & Houmansadr's search for the largest γ that ``fits``: step up by the halved step where γ fits, down
    where it does not, until the step is at most ``tolerance``. Returns the largest γ that fitted (0 if none; γ = 0,
    the honest mean, always fits both constraints)."""
    gamma, step, best = gamma_init, gamma_init, 0.0
    while step > tolerance:
        ok = fits(gamma)
        best = gamma if ok else best
        step /= 2
        gamma += step if ok else -step
    return best


class _Agnostic(ColludingAttack):
    """Shared part of min-max and min-sum: every Byzantine client sends m = μ + γ·p with μ = mean(honest) and γ as
    large as the attack's distance constraint allows (:meth:`fits`).

    All distances come from one float64 Gram matrix of the centred honest rows and p, so each search step costs
    O(h²) instead of O(h·d): ‖m − h_i‖² = ‖h_i − μ‖² − 2γ⟨h_i − μ, p⟩ + γ²‖p‖².
    """

    Params = AgnosticParams

    def fits(self, to_honest: torch.Tensor, pairwise: torch.Tensor) -> bool:
        """Whether m with squared distances ``to_honest`` [h] hides among rows with squared distances ``pairwise``."""
        raise NotImplementedError

    def forge(self, view: AttackView) -> torch.Tensor:
        mu = view.honest.mean(dim=0)
        p = PERTURBATIONS[self.params.perturbation](view.honest, mu)
        rows = torch.cat([view.honest - mu, p[None]]).to(torch.float64)
        gram = rows @ rows.T
        centred, along, norm_p = gram.diagonal()[:-1], gram[:-1, -1], gram[-1, -1]
        pairwise = (centred[:, None] + centred[None, :] - 2 * gram[:-1, :-1]).clamp_min(0)
        gamma = halving_search(lambda g: self.fits(centred - 2 * g * along + g * g * norm_p, pairwise),
                               self.params.gamma_init, self.params.tolerance)
        return _all_send(mu + gamma * p, view)


@register("attack", "min_max")
class MinMax(_Agnostic):
    """AGR-agnostic Min-Max: m's farthest honest update is no farther than the two farthest honest updates are apart,
    max_i ‖m − h_i‖ ≤ max_{i,j} ‖h_i − h_j‖.

    Distance- and outlier-based rules cannot tell m from an honest update that sits at the edge of the honest cloud,
    so the attacker pushes m along −p exactly to that edge, without knowing the rule.

    V. Shejwalkar, A. Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses for
    Federated Learning", NDSS 2021.
    """

    def fits(self, to_honest: torch.Tensor, pairwise: torch.Tensor) -> bool:
        return bool(to_honest.max() <= pairwise.max())


@register("attack", "min_sum")
class MinSum(_Agnostic):
    """AGR-agnostic Min-Sum: m's summed squared distance to the honest updates is no larger than that of the most
    isolated honest update, Σ_i ‖m − h_i‖² ≤ max_i Σ_j ‖h_i − h_j‖².

    Score-based rules (Krum, Bulyan) rank updates by such sums, so m scores no worse than some honest update; the
    constraint is tighter than min-max, trading strength for stealth.

    V. Shejwalkar, A. Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and Defenses for
    Federated Learning", NDSS 2021.
    """

    def fits(self, to_honest: torch.Tensor, pairwise: torch.Tensor) -> bool:
        return bool(to_honest.sum() <= pairwise.sum(dim=1).max())


@dataclass(frozen=True)
class FangParams:
    b: float = 2.0  # how far beyond the honest extremes the forged values may go (the paper's b > 1)

    def __post_init__(self) -> None:
        if self.b < 1:
            raise ConfigError(f"attack.params.b={self.b} must be >= 1: it widens [w/b, w] and [w, b·w].")


@register("attack", "fang")
class Fang(ColludingAttack):
    """Fang et al.'s full-knowledge attack on trimmed mean and median, on gradients instead of model parameters.

    Coordinate-wise rules keep a value between the honest extremes, so the attacker puts all its values just past
    the extreme that opposes the honest direction s = sign(mean(honest)): where s > 0 each Byzantine value is drawn
    uniformly from [w_min/b, w_min] (w_min > 0) or [b·w_min, w_min] (w_min ≤ 0), where s ≤ 0 from [w_max, b·w_max]
    (w_max > 0) or [w_max/b, w_max] (w_max ≤ 0); w_min, w_max are the coordinate-wise honest extremes. The trimmed
    mean or median is then dragged to the extreme, against s, and the draws keep the forged rows from being
    identical.

    M. Fang, X. Cao, J. Jia, N. Z. Gong, "Local Model Poisoning Attacks to Byzantine-Robust Federated Learning",
    USENIX Security 2020.
    """

    Params = FangParams

    def forge(self, view: AttackView) -> torch.Tensor:
        b = self.params.b
        w_min, w_max = view.honest.aminmax(dim=0)
        up = view.honest.mean(dim=0) > 0
        low = torch.where(up, torch.minimum(w_min / b, w_min * b), w_max)
        high = torch.where(up, w_min, torch.maximum(w_max / b, w_max * b))
        return low + _draw(view, torch.rand) * (high - low)


@dataclass(frozen=True)
class MimicParams:
    target: int | None = None  # index into the round's honest rows; None: the one farthest from the honest mean

    def __post_init__(self) -> None:
        if self.target is not None and self.target < 0:
            raise ConfigError(f"attack.params.target={self.target} must be >= 0 (or null for the farthest row).")


@register("attack", "mimic")
class Mimic(ColludingAttack):
    """Every Byzantine client copies one honest update.

    Each forged row is a genuine update, so no rule can reject it, but on heterogeneous data it over-weights one
    client's data and starves the rest. Without ``target`` the attacker copies the honest update farthest
    (Euclidean) from the honest mean, the most over-representable one (the paper finds its target by a power
    iteration on the first rounds' updates instead).

    S. P. Karimireddy, L. He, M. Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via Bucketing",
    ICLR 2022.
    """

    Params = MimicParams

    def forge(self, view: AttackView) -> torch.Tensor:
        honest, target = view.honest, self.params.target
        if target is None:
            target = int((honest - honest.mean(dim=0)).norm(dim=1).argmax())
        elif target >= honest.shape[0]:
            raise ValueError(f"attack.params.target={target} is out of range: the round has {honest.shape[0]} honest "
                             "updates.")
        return _all_send(honest[target], view)


@dataclass(frozen=True)
class ScalingParams:
    factor: float = 10.0  # multiplies each Byzantine client's own honest gradient


@register("attack", "scaling")
class Scaling(ColludingAttack):
    """Every Byzantine client sends its own honest gradient times ``factor``.

    Averaging divides a client's update by n; boosting it by ~n lets one client replace the aggregate (model
    replacement), which the mean cannot resist and norm-bounding rules must clip.

    E. Bagdasaryan, A. Veit, Y. Hua, D. Estrin, V. Shmatikov, "How To Backdoor Federated Learning", AISTATS 2020;
    A. N. Bhagoji, S. Chakraborty, P. Mittal, S. Calo, "Analyzing Federated Learning through an Adversarial Lens",
    ICML 2019.
    """

    Params = ScalingParams

    def forge(self, view: AttackView) -> torch.Tensor:
        return view.own * self.params.factor


@dataclass(frozen=True)
class RandomParams:
    sigma: float = 1.0  # standard deviation of every coordinate
    mean: float = 0.0

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise ConfigError(f"attack.params.sigma={self.sigma} must be >= 0.")


@register("attack", "random")
class Random(ColludingAttack):
    """Every Byzantine client sends i.i.d. N(mean, sigma²) noise, drawn per row and coordinate.

    The simplest omniscience-free fault: updates unrelated to the data, which break the plain mean at large sigma and
    serve as the baseline every robust rule must survive.

    P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer, "Machine Learning with Adversaries: Byzantine Tolerant
    Gradient Descent", NeurIPS 2017; L. Li, W. Xu, T. Chen, G. B. Giannakis, Q. Ling, "RSA: Byzantine-Robust
    Stochastic Aggregation Methods for Distributed Learning from Heterogeneous Datasets", AAAI 2019.
    """

    Params = RandomParams

    def forge(self, view: AttackView) -> torch.Tensor:
        return self.params.mean + self.params.sigma * _draw(view, torch.randn)
