"""ByzFL's names → mpifl's registry names and parameters: the one table `mpifl byzfl` translates with.

A component maps ByzFL's parameter names to mpifl's (``params``; a callable turns a value into mpifl parameters);
``defaults`` are ByzFL's defaults where mpifl's differ, made explicit so a run means what it means in ByzFL; ``fixed``
are mpifl parameters that make the mpifl component behave as ByzFL's (GeometricMedian runs all T steps). ByzFL gives
every aggregator and pre-aggregator the declared number of Byzantine clients as ``f``; a component whose ``params``
has no ``f`` does not take it (ByzFL drops it too). A ByzFL parameter outside ``params`` is refused, never dropped.
ByzFL's ResNets beyond ResNet-18 have no counterpart yet and are refused by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

Param = str | Callable[[Any, int], dict[str, Any]]  # mpifl name, or (value, clients) -> mpifl parameters


def _trmean_beta(f: Any, clients: int) -> dict[str, Any]:
    """ByzFL's TrMean(f) trims f values from each end; mpifl's trims floor(beta k) of k rows: beta = f / n, nudged up
    where floating point would floor f·n/n to f − 1."""
    beta = f / clients
    while math.floor(beta * clients) < f:
        beta = math.nextafter(beta, 1.0)
    return {"beta": beta}


def _krum_f(f: Any, clients: int) -> dict[str, Any]:
    """ByzFL's Krum scores a vector by its n − f − 1 nearest others, mpifl's by its k − f − 2: mpifl's f is ByzFL's
    f − 1 (so ByzFL's f = 0, every other vector, has no mpifl counterpart: refused by mpifl's f >= 0)."""
    return {"f": f - 1}


def _multi_krum_f(f: Any, clients: int) -> dict[str, Any]:
    """As :func:`_krum_f`, and ByzFL averages the n − f best-scored vectors."""
    return {"f": f - 1, "m": clients - f}


@dataclass(frozen=True)
class Component:
    name: str
    params: dict[str, Param] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)


def _same(*names: str) -> dict[str, Param]:
    return {n: n for n in names}


_DIVERSEFL = _same("eps1", "eps2", "sample_size", "sample_fraction")

AGGREGATORS: dict[str, Component] = {
    "Average": Component("mean"),
    "Median": Component("median"),
    "TrMean": Component("trmean", {"f": _trmean_beta}),
    "GeometricMedian": Component("geomed", {"nu": "nu", "T": "iterations"}, {"nu": 0.1, "T": 3}, {"tolerance": 0.0}),
    "Krum": Component("krum", {"f": _krum_f}),
    "MultiKrum": Component("multi_krum", {"f": _multi_krum_f}),
    "CenteredClipping": Component("centered_clipping", {"L": "iterations", "tau": "tau"}, {"L": 1, "tau": 100.0}),
    "MDA": Component("mda", _same("f")),
    "MoNNA": Component("monna", _same("f", "idx")),
    "Meamed": Component("meamed", _same("f")),
    "CAF": Component("caf", _same("f")),
    "SMEA": Component("smea", _same("f")),
    # not in ByzFL: DiverseFL (the filter and the mean behind it) and DiverseFL+, with their mpifl parameters
    "DiverseFL": Component("diversefl", _DIVERSEFL),
    "DiverseFLPlus": Component("diversefl_plus", {**_DIVERSEFL, **_same("kappa", "clip", "spectral", "pooled")}),
}

PRE_AGGREGATORS: dict[str, Component] = {
    "NNM": Component("nnm", _same("f")),
    "Bucketing": Component("bucketing", _same("s"), {"s": 1}),
    "Clipping": Component("clipping", {"c": "threshold"}, {"c": 2.0}),
    "ARC": Component("arc", _same("f")),
}

_OPTIMAL = _same("evals", "start", "delta", "ratio")
ATTACKS: dict[str, Component] = {
    "NoAttack": Component("none"),
    "SignFlipping": Component("mean_sign_flip"),
    "InnerProductManipulation": Component("ipm", {"tau": "epsilon"}, {"tau": 2.0}),
    "Optimal_InnerProductManipulation": Component("optimal_ipm", _OPTIMAL),
    "ALittleIsEnough": Component("alie", {"tau": "z"}, {"tau": 1.5}),
    "Optimal_ALittleIsEnough": Component("optimal_alie", _OPTIMAL),
    "Mimic": Component("mimic", {"epsilon": "target"}, {"epsilon": 0}),
    "Inf": Component("inf"),
    "Gaussian": Component("gaussian_vectors", _same("mu", "sigma"), {"mu": 0.0, "sigma": 1.0}),
    "LabelFlipping": Component("mean_class_flip"),
}

#: ByzFL distribution → (mpifl partition, the config key its distribution_parameter goes to; None: unused)
DISTRIBUTIONS: dict[str, tuple[str, str | None]] = {
    "iid": ("iid", None),
    "gamma_similarity_niid": ("gamma_similarity_niid", "data.alpha"),
    "dirichlet_niid": ("dirichlet_niid", "data.alpha"),
    "extreme_niid": ("extreme_niid", None),
}

#: ByzFL dataset_name → (mpifl dataset, its classes, data.scale matching ByzFL's transform)
DATASETS: dict[str, tuple[str, int, str]] = {
    "mnist": ("mnist", 10, "standardize"),  # ToTensor + Normalize((0.1307,), (0.3081,))
    "fashionmnist": ("fashion_mnist", 10, "unit"),  # ToTensor (ByzFL also flips images at random)
    "cifar10": ("cifar10", 10, "standardize"),  # ByzFL also crops and flips at random
    "cifar100": ("cifar100", 100, "standardize"),
}

#: ByzFL's models keep their names in mpifl (its ResNet classes in lower case).
MODELS: dict[str, str] = {**{m: m for m in ("fc_mnist", "cnn_mnist", "logreg_mnist", "cnn_cifar")},
                          "ResNet18": "resnet18"}
#: Models whose output is log-probabilities (log_softmax): NLLLoss on them is the cross-entropy mpifl trains with.
LOG_SOFTMAX_MODELS = ("fc_mnist", "cnn_mnist")
