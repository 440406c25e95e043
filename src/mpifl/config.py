"""Experiment configuration: frozen dataclasses mirroring the YAML sections.

A run is a pure function of its config and seed, so the config is the single description of an experiment. This
module checks types and ranges only: where a value is born (``__post_init__``) and across fields (:func:`validate`).
It imports no rule, attack or other plug-in: the names a config holds are resolved, with their parameters, by
:func:`mpifl.build.resolve` once the plug-ins are loaded. Every error is a :class:`ConfigError` naming the key, the
value and a fix.

The defaults are the paper's Fig. 3 experiment (MLP 2x200 on MNIST, 20 clients, DiverseFL with a 1 % sample).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, quoted


SCALES = ("unit", "raw", "standardize")
INITS = ("glorot", "zeros", "torch")
#: Who the partition cuts the training set among (``data.split_among``).
SPLITS = ("all", "honest")
DEVICES = ("auto", "cpu", "cuda")
#: What a rank-0 attack knows of DiverseFL's guiding gradient g~_j of a Byzantine client j. ``realistic``: its own
#: honest gradient on its own data (it does not know which points it handed the server); ``white_box``: the server's
#: exact g~_j (it knows its shared sample and the server's θ).
KNOWLEDGE = ("realistic", "white_box")

#: Keys of v0.1/v0.2 that have a new place: a config that still uses one gets a one-line error naming it.
MOVED = {
    "aggregator.beta": "aggregator.params.beta", "aggregator.sigma": "aggregator.params.sigma",
    "aggregator.delta": "aggregator.params.delta", "aggregator.eps1": "aggregator.params.eps1",
    "aggregator.eps2": "aggregator.params.eps2", "aggregator.sample_size": "aggregator.params.sample_size",
    "aggregator.sample_fraction": "aggregator.params.sample_fraction",
    "aggregator.filter": "aggregator.filters (a list)", "attack.scale": "attack.params.scale",
    "attack.source": "attack.params.source", "attack.target": "attack.params.target",
    "attack.sigma": "attack.params.sigma",
}


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}={quoted(value)} is not one of {', '.join(allowed)}.{hint}")


def _positive(key: str, value: float, strict: bool = True) -> None:
    if value < 0 or (strict and value == 0):
        raise ConfigError(f"{key}={value} must be {'> 0' if strict else '>= 0'}.")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    root: str | None = None  # None: $MPIFL_DATA_ROOT, then ./data
    download: bool = True
    partition: str = "shards"  # the paper: sort by class, cut into n shards
    alpha: float = 0.5  # the partition's parameter: Dirichlet concentration, gamma_similarity_niid's gamma
    seed: int | None = None  # the partition's seed (ByzFL's data_distribution_seed); None: the run's seed
    split_among: str = "all"  # all: every client gets a piece; honest: only the honest ones (ByzFL), each Byzantine
    #                           client then holds a copy of one honest client's piece (mpifl.data.population)
    scale: str = "standardize"  # unit: x/255, raw: 0..255 (Fig. 2), standardize: (x/255 - mean)/std
    synthetic_train: int = 2000  # sizes of the dataset=synthetic stand-in
    synthetic_test: int = 500
    params: dict[str, Any] = field(default_factory=dict)  # a registered population's parameters (leaf_synthetic)

    def __post_init__(self) -> None:
        _choice("data.scale", self.scale, SCALES)
        _choice("data.split_among", self.split_among, SPLITS)
        if self.seed is not None:
            _positive("data.seed", self.seed, strict=False)
        # gamma_similarity_niid's gamma (ByzFL's distribution_parameter) may be 0: every point sorted by class
        _positive("data.alpha", self.alpha, strict=self.partition != "gamma_similarity_niid")
        _positive("data.synthetic_train", self.synthetic_train)
        _positive("data.synthetic_test", self.synthetic_test)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    init: str = "glorot"  # glorot | zeros | torch (PyTorch's default layer init, ByzFL's)
    hidden: int = 200  # width of both MLP layers
    seed: int | None = None  # the initialisation's seed (ByzFL draws it from data_distribution_seed); None: the run's

    def __post_init__(self) -> None:
        _choice("model.init", self.init, INITS)
        if self.seed is not None:
            _positive("model.seed", self.seed, strict=False)
        _positive("model.hidden", self.hidden)


@dataclass(frozen=True)
class LrConfig:
    """mu_r: ``constant`` base; ``inv_sqrt`` base/sqrt(r); ``step`` base * gamma^(milestones <= r), after a linear
    warm-up from ``warmup_start`` to ``base`` over the first ``warmup_rounds`` rounds."""

    schedule: str = "step"
    base: float = 0.06
    milestones: list[int] = field(default_factory=lambda: [500, 950])
    gamma: float = 0.5
    warmup_rounds: int = 0
    warmup_start: float = 0.0

    def __post_init__(self) -> None:
        _positive("train.lr.base", self.base)
        _positive("train.lr.gamma", self.gamma)
        _positive("train.lr.warmup_rounds", self.warmup_rounds, strict=False)
        _positive("train.lr.warmup_start", self.warmup_start, strict=False)
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ConfigError(f"train.lr.milestones={self.milestones} must be increasing round numbers >= 1.")


@dataclass(frozen=True)
class TrainConfig:
    """Client mini-batch is ``batch_size`` points, or ``batch_fraction`` of the client's local data (exactly one)."""

    batch_size: int | None = None
    batch_fraction: float | None = 0.1
    weight_decay: float = 5e-4  # lambda in eq. 4/13, applied by the server
    momentum: float = 0.0  # beta of each client's m_j <- beta m_j + (1 - beta) g_j, uploaded instead of g_j
    #                        (ByzFL's DSGD)
    lr: LrConfig = field(default_factory=LrConfig)
    eval_every: int = 10
    device: str = "auto"
    client_chunk: int = 4  # clients per batched gradient call, the same on every rank (mpifl.models.gradients)
    deterministic: bool = True  # GPU: no cuDNN autotuning, deterministic kernels (mpifl.placement.pin_kernels)
    clients_per_round: int | None = None  # cross-device FL: m of the n clients take part each round; None = all

    def __post_init__(self) -> None:
        exactly_one("train", "batch_size", self.batch_size, "batch_fraction", self.batch_fraction)
        _positive("train.weight_decay", self.weight_decay, strict=False)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"train.momentum={self.momentum} must be in [0, 1) (0: plain gradients).")
        _positive("train.eval_every", self.eval_every)
        _choice("train.device", self.device, DEVICES)
        _positive("train.client_chunk", self.client_chunk)
        if self.clients_per_round is not None:
            _positive("train.clients_per_round", self.clients_per_round)


@dataclass(frozen=True)
class ByzantineConfig:
    """Who is Byzantine in round r. ``random``: k clients drawn anew each round; ``fixed``: ``clients`` every round;
    ``markov``: a client holding ``markov_class`` turns Byzantine with probability ``markov_p`` and stays so for
    ``markov_rounds`` rounds (the paper's backdoor model)."""

    model: str = "random"
    k: int = 5
    clients: list[int] = field(default_factory=list)
    markov_p: float = 0.5
    markov_rounds: int = 5
    markov_class: int = 4

    def __post_init__(self) -> None:
        _positive("byzantine.k", self.k, strict=False)
        if not 0.0 <= self.markov_p <= 1.0:
            raise ConfigError(f"byzantine.markov_p={self.markov_p} must be a probability in [0, 1].")
        _positive("byzantine.markov_rounds", self.markov_rounds)
        _positive("byzantine.markov_class", self.markov_class, strict=False)


@dataclass(frozen=True)
class AttackConfig:
    """What a Byzantine client sends: a registered attack (:mod:`mpifl.attacks`), client side or rank 0, with its
    parameters in ``params`` and, for attacks built against DiverseFL, the attacker's ``knowledge`` of the guiding
    gradients."""

    name: str = "sign_flip"
    params: dict[str, Any] = field(default_factory=dict)
    knowledge: str = "white_box"

    def __post_init__(self) -> None:
        _choice("attack.knowledge", self.knowledge, KNOWLEDGE)


@dataclass(frozen=True)
class AggregatorConfig:
    """The server's pipeline: screening (``max_norm``) → ``filters`` in order → ``pre``-aggregators in order → the
    rule ``name``. ``params`` holds the parameters of the rule, its filters and pre-aggregators (DiverseFL's
    ``eps1``, ``eps2``, ``sample_size``, ``sample_fraction`` among them). A rule may imply a filter (``diversefl``
    implies DiverseFL's). ``record_similarity`` records DiverseFL's C1, C2 for any rule without filtering (Fig. 1)."""

    name: str = "diversefl"
    filters: list[str] = field(default_factory=list)
    pre: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    record_similarity: bool = False
    max_norm: float = 1.0e6  # updates with a larger norm are invalid for every rule (mpifl.screening)

    def __post_init__(self) -> None:
        _positive("aggregator.max_norm", self.max_norm)


@dataclass(frozen=True)
class OutputConfig:
    path: str | None = None  # None: runs/<name>_<rule>_<attack>_s<seed>.h5
    progress_every: int = 10
    checkpoint_every: int = 50  # rounds between checkpoints beside the HDF5 file (and the last); 0 = only on signals

    def __post_init__(self) -> None:
        _positive("output.progress_every", self.progress_every)
        _positive("output.checkpoint_every", self.checkpoint_every, strict=False)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "fig3_mnist_mlp"
    seed: int = 0
    clients: int = 20
    rounds: int = 1000
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    byzantine: ByzantineConfig = field(default_factory=ByzantineConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        _positive("clients", self.clients)
        _positive("rounds", self.rounds)
        _positive("seed", self.seed, strict=False)
        validate(self)


def exactly_one(section: str, a: str, va: Any, b: str, vb: Any) -> None:
    if (va is None) == (vb is None):
        raise ConfigError(f"set exactly one of {section}.{a} and {section}.{b} (the other null).")
    if va is not None and va < 1:
        raise ConfigError(f"{section}.{a}={va} must be >= 1.")
    if vb is not None and not 0.0 < vb <= 1.0:
        raise ConfigError(f"{section}.{b}={vb} must be a fraction in (0, 1].")


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field bounds that no single section can check alone."""
    n, byz = cfg.clients, cfg.byzantine
    if byz.model == "random" and byz.k > n:
        raise ConfigError(f"byzantine.k={byz.k} exceeds clients={n}; lower k or add clients.")
    if byz.model == "fixed":
        bad = [c for c in byz.clients if not 0 <= c < n]
        if bad or len(set(byz.clients)) != len(byz.clients):
            raise ConfigError(f"byzantine.clients={byz.clients} must be distinct client ids in 0..{n - 1}.")
    if cfg.data.split_among == "honest":
        if byz.model != "fixed":
            raise ConfigError(f"data.split_among=honest needs byzantine.model=fixed (got {byz.model}): the data is "
                              "cut among the honest clients before training, so they must be known then.")
        if len(byz.clients) >= n:
            raise ConfigError(f"data.split_among=honest with byzantine.clients={byz.clients}: no honest client of "
                              f"the {n} is left to hold the data.")
    m = cfg.train.clients_per_round
    if m is not None and m > n:
        raise ConfigError(f"train.clients_per_round={m} exceeds clients={n}.")
    if cfg.train.lr.warmup_rounds and cfg.train.lr.schedule != "step":
        raise ConfigError("train.lr.warmup_rounds needs train.lr.schedule=step.")


def validate_against_data(cfg: ExperimentConfig, client_sizes: list[int], num_classes: int) -> None:
    """Bounds that need the partition: the batch size, class ids (plug-ins check their own in
    :func:`mpifl.build.check_against_data`)."""
    smallest = min(client_sizes)
    if smallest == 0:
        raise ConfigError(f"data.partition={cfg.data.partition} left a client with no data; change alpha or seed.")
    if cfg.train.batch_size is not None and cfg.train.batch_size > smallest:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the smallest client's {smallest} points.")
    if cfg.byzantine.markov_class >= num_classes:
        raise ConfigError(f"byzantine.markov_class={cfg.byzantine.markov_class} is not a class of {cfg.data.dataset} "
                          f"({num_classes} classes).")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check a YAML value against a field's annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}={quoted(value)} must be a mapping of names to values.")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={quoted(value)} must be a list.")
        (item,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of its fields, got {quoted(value)}.")
        return from_mapping(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={quoted(value)} must be true or false.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={quoted(value)} must be an integer.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={quoted(value)} must be a number.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={quoted(value)} must be a string.")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def from_mapping(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """An instance of the config dataclass ``cls`` from a YAML mapping, every value type-checked; ``prefix`` is the
    mapping's dotted place in the config, for messages."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if prefix + key in MOVED:
            raise ConfigError(f"{prefix}{key} moved to {MOVED[prefix + key]}; rename it in your config.")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean {prefix}{close[0]}?" if close else \
                (f" Known keys: {', '.join(names)}." if names else " It takes no parameters.")
            raise ConfigError(f"unknown key {prefix}{key}.{hint}")
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part} is a value, not a section.")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=c`` → (``a.b``, YAML value of ``c``), so ``--set train.lr.base=0.1`` yields a float."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {quoted(text)} must look like key.sub=value.")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {quoted(text)}: value is not valid YAML ({exc.problem}).") from None


def load_tree(path: str | Path | None) -> dict[str, Any]:
    """The raw YAML mapping of a config file (empty for None)."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}.") from None
    return tree_from_yaml(text, f"config {path}")


def tree_from_yaml(text: str, source: str) -> dict[str, Any]:
    """The mapping a YAML text holds (config files, sweep files, the config stored in a run file): the one place mpifl
    parses YAML, always with ``safe_load``; ``source`` names the text in errors."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{source} must be a mapping of sections, not {type(tree).__name__}.")
    return tree


def from_tree(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Build a validated config from a YAML mapping plus ``key.sub=value`` overrides."""
    merged = copy.deepcopy(tree)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(merged, key, value)
    return from_mapping(ExperimentConfig, merged)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config (or the defaults) and apply ``--set`` overrides."""
    return from_tree(load_tree(path), overrides)


def to_tree(cfg: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: ExperimentConfig) -> str:
    """The complete config as YAML; stored in every HDF5 file so a run can be repeated from its output alone."""
    return yaml.safe_dump(to_tree(cfg), sort_keys=False)
