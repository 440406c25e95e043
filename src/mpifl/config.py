"""Experiment configuration: frozen dataclasses mirroring the YAML sections.

A run is a pure function of its config and seed, so the config is the single description of an experiment. It is
validated on every rank before the first collective: ranges where a value is born (``__post_init__``), cross-field
bounds in :func:`validate`. Every error is a :class:`ConfigError` naming the key, the value and a fix.

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

from .errors import ConfigError


DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "synthetic")
PARTITIONS = ("shards", "two_class", "dirichlet", "iid")
SCALES = ("unit", "raw", "standardize")
MODELS = ("softmax", "mlp", "vgg11_gn")
INITS = ("glorot", "zeros")
SCHEDULES = ("constant", "inv_sqrt", "step")
BYZANTINE_MODELS = ("none", "random", "fixed", "markov")
DEVICES = ("auto", "cpu", "cuda")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}.{hint}")


def _positive(key: str, value: float, strict: bool = True) -> None:
    if value < 0 or (strict and value == 0):
        raise ConfigError(f"{key}={value} must be {'> 0' if strict else '>= 0'}.")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    root: str | None = None  # None: $MPIFL_DATA_ROOT, then ./data
    download: bool = True
    partition: str = "shards"  # the paper: sort by class, cut into n shards
    alpha: float = 0.5  # Dirichlet concentration, partition=dirichlet only
    scale: str = "standardize"  # unit: x/255, raw: 0..255 (Fig. 2), standardize: (x/255 - mean)/std
    synthetic_train: int = 2000  # sizes of the dataset=synthetic stand-in
    synthetic_test: int = 500

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _choice("data.partition", self.partition, PARTITIONS)
        _choice("data.scale", self.scale, SCALES)
        _positive("data.alpha", self.alpha)
        _positive("data.synthetic_train", self.synthetic_train)
        _positive("data.synthetic_test", self.synthetic_test)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    init: str = "glorot"
    hidden: int = 200  # width of both MLP layers

    def __post_init__(self) -> None:
        _choice("model.name", self.name, MODELS)
        _choice("model.init", self.init, INITS)
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
        _choice("train.lr.schedule", self.schedule, SCHEDULES)
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
    lr: LrConfig = field(default_factory=LrConfig)
    eval_every: int = 10
    device: str = "auto"
    client_chunk: int = 4  # clients per batched gradient call, the same on every rank (mpifl.gradients)
    deterministic: bool = True  # GPU: no cuDNN autotuning, deterministic kernels (mpifl.placement.pin_kernels)
    clients_per_round: int | None = None  # cross-device FL: m of the n clients take part each round; None = all

    def __post_init__(self) -> None:
        _exactly_one("train", "batch_size", self.batch_size, "batch_fraction", self.batch_fraction)
        _positive("train.weight_decay", self.weight_decay, strict=False)
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
        _choice("byzantine.model", self.model, BYZANTINE_MODELS)
        _positive("byzantine.k", self.k, strict=False)
        if not 0.0 <= self.markov_p <= 1.0:
            raise ConfigError(f"byzantine.markov_p={self.markov_p} must be a probability in [0, 1].")
        _positive("byzantine.markov_rounds", self.markov_rounds)
        _positive("byzantine.markov_class", self.markov_class, strict=False)


@dataclass(frozen=True)
class AttackConfig:
    """What a Byzantine client sends. Client-side attacks (:data:`mpifl.attacks.CLIENT_ATTACKS`): ``backdoor``
    relabels ``source`` as ``target`` in its batch and scales its update by ``scale``; ``gaussian`` sends N(0, sigma^2)
    noise; ``nan`` sends NaN (a crashed or malicious client). Any other name is a registered rank-0 attack
    (:mod:`mpifl.attacks`) with its parameters in ``params`` and the attacker's ``knowledge`` of DiverseFL's guiding
    gradients (``realistic`` or ``white_box``)."""

    name: str = "sign_flip"
    scale: float = 4.0
    source: int = 4
    target: int = 9
    sigma: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    knowledge: str = "white_box"

    def __post_init__(self) -> None:
        from .attacks import CLIENT_ATTACKS, KNOWLEDGE

        if self.name not in CLIENT_ATTACKS:
            attack_params(self)
        elif self.params:
            raise ConfigError(f"attack.params is for rank-0 attacks; attack.name={self.name!r} takes none.")
        _choice("attack.knowledge", self.knowledge, KNOWLEDGE)
        _positive("attack.scale", self.scale)
        _positive("attack.sigma", self.sigma)
        _positive("attack.source", self.source, strict=False)
        _positive("attack.target", self.target, strict=False)


def _registered(key: str, kind: str, value: str) -> type:
    """The implementation registered under ``value`` (mpifl.rules), or a ConfigError naming the choices."""
    from . import attacks, rules

    try:
        return rules.get(kind, value)
    except rules.RegistryError:
        choices = rules.names(kind) if kind != "attack" else (*attacks.CLIENT_ATTACKS, *rules.names(kind))
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}.{hint}") from None


@dataclass(frozen=True)
class AggregatorConfig:
    """The server's rule and its parameters. DiverseFL's per-client sample is ``sample_size`` points or
    ``sample_fraction`` of the client's data (exactly one).

    ``name`` is a registered rule, ``filter`` an optional per-client filter in front of it (``diversefl``), ``pre``
    pre-aggregators applied in order (``nnm``, ``bucketing``), ``params`` the parameters of the rule and
    pre-aggregators beyond the v0.1 keys below (a v0.1 key fills the parameter of the same name)."""

    name: str = "diversefl"
    filter: str | None = None
    pre: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    beta: float = 0.1  # TrMean: trim floor(beta n) from each end
    sigma: float = 0.01  # Noisy Median: client noise std
    delta: float = 0.2635  # RSA: l1 penalty
    eps1: float = 0.5  # DiverseFL: eps1 < ||z|| / ||g~|| < eps2
    eps2: float = 2.0
    sample_size: int | None = None
    sample_fraction: float | None = 0.01
    record_similarity: bool = False  # compute C1, C2 for every rule, not only DiverseFL (Fig. 1)
    max_norm: float = 1.0e6  # updates with a larger norm are invalid for every rule (mpifl.screening)

    def __post_init__(self) -> None:
        rule = _registered("aggregator.name", "rule", self.name)
        if self.filter is not None:
            _registered("aggregator.filter", "filter", self.filter)
        steps = [_registered(f"aggregator.pre[{i}]", "pre", p) for i, p in enumerate(self.pre)]
        known = {f.name for cls in (rule, *steps) for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise ConfigError(f"aggregator.params.{unknown[0]} is not a parameter of {self.name}"
                              f"{''.join(' or ' + p for p in self.pre)}; known: {', '.join(sorted(known)) or 'none'}.")
        for cls in (rule, *steps):
            step_params(self, cls)
        if self.pre:
            rule.check_pre(step_params(self, rule), self.pre)
        if not 0.0 <= self.beta < 0.5:
            raise ConfigError(f"aggregator.beta={self.beta} must be in [0, 0.5): TrMean trims beta*n from each end.")
        _positive("aggregator.sigma", self.sigma, strict=False)
        _positive("aggregator.delta", self.delta, strict=False)
        _positive("aggregator.eps1", self.eps1, strict=False)
        _positive("aggregator.max_norm", self.max_norm)
        if self.eps1 >= self.eps2:
            raise ConfigError(
                f"aggregator.eps1={self.eps1} must be smaller than aggregator.eps2={self.eps2}: "
                "DiverseFL accepts eps1 < C2 < eps2."
            )
        _exactly_one("aggregator", "sample_size", self.sample_size, "sample_fraction", self.sample_fraction)


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


def step_params(agg: AggregatorConfig, cls: type) -> Any:
    """The ``Params`` of a rule or pre-aggregator: its fields from ``aggregator.params``, else from the v0.1 key of the
    same name (``aggregator.beta`` for TrMean), else the field's default. Types are checked like any config value."""
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    legacy = {f.name: getattr(agg, f.name) for f in dataclasses.fields(AggregatorConfig)
              if f.name in fields and f.name not in ("name", "filter", "pre", "params")}
    chosen = {**legacy, **{k: v for k, v in agg.params.items() if k in fields}}
    return _build(cls.Params, chosen, prefix="aggregator.params.")


def attack_params(attack: AttackConfig) -> Any:
    """The ``Params`` of a rank-0 attack from ``attack.params`` (unknown keys and wrong types are config errors)."""
    cls = _registered("attack.name", "attack", attack.name)
    return _build(cls.Params, attack.params, prefix="attack.params.")


def _exactly_one(section: str, a: str, va: Any, b: str, vb: Any) -> None:
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
    if cfg.attack.name == "sleeper" and byz.model != "fixed":
        raise ConfigError("attack.name=sleeper needs byzantine.model=fixed: a sleeper hands the server its poisoned "
                          "sample once, before training, so the same clients must stay Byzantine.")
    if cfg.attack.name == "backdoor" and cfg.attack.source == cfg.attack.target:
        raise ConfigError("attack.source and attack.target must differ for a backdoor.")
    m = cfg.train.clients_per_round
    if m is not None and m > n:
        raise ConfigError(f"train.clients_per_round={m} exceeds clients={n}.")
    if m is not None and _registered("aggregator.name", "rule", cfg.aggregator.name).client_models:
        raise ConfigError("train.clients_per_round needs every client every round under aggregator.name=rsa (its "
                          "clients update their model copies each round); leave it null.")
    if cfg.train.lr.warmup_rounds and cfg.train.lr.schedule != "step":
        raise ConfigError("train.lr.warmup_rounds needs train.lr.schedule=step.")


def validate_against_data(cfg: ExperimentConfig, client_sizes: list[int], num_classes: int) -> None:
    """Bounds that need the partition: batch and sample sizes, class ids."""
    smallest = min(client_sizes)
    if smallest == 0:
        raise ConfigError(f"data.partition={cfg.data.partition} left a client with no data; change alpha or seed.")
    if cfg.train.batch_size is not None and cfg.train.batch_size > smallest:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the smallest client's {smallest} points.")
    if cfg.aggregator.sample_size is not None and cfg.aggregator.sample_size > smallest:
        raise ConfigError(
            f"aggregator.sample_size={cfg.aggregator.sample_size} exceeds the smallest client's {smallest} points."
        )
    for key, value in (("attack.source", cfg.attack.source), ("attack.target", cfg.attack.target),
                       ("byzantine.markov_class", cfg.byzantine.markov_class)):
        if value >= num_classes:
            raise ConfigError(f"{key}={value} is not a class of {cfg.data.dataset} ({num_classes} classes).")


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
            raise ConfigError(f"{key}={value!r} must be a mapping of names to values.")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} must be a list.")
        (item,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of its fields, got {value!r}.")
        return _build(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string.")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
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
        raise ConfigError(f"--set {text!r} must look like key.sub=value.")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc.problem}).") from None


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
    return _build(ExperimentConfig, merged)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config (or the defaults) and apply ``--set`` overrides."""
    return from_tree(load_tree(path), overrides)


def to_tree(cfg: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: ExperimentConfig) -> str:
    """The complete config as YAML; stored in every HDF5 file so a run can be repeated from its output alone."""
    return yaml.safe_dump(to_tree(cfg), sort_keys=False)
