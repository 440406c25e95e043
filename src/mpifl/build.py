"""Names → objects, once: the one place a config's choices are resolved, after the plug-ins are loaded.

:func:`resolve` looks every name up in its registry and builds every ``Params`` object from ``aggregator.params`` and
``attack.params``, failing with one line (the key, the choices, the closest one) on anything unknown. It also checks
what only the chosen implementations know (a rule behind pre-aggregators, an attack that needs a fixed Byzantine set,
clients that must take part every round). :class:`Pipeline` turns the plan into the objects a run uses: the server,
the adversary and the clients receive these, never a name to look up again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import attacks, byzantine, clients, filters, models, rules, schedules  # noqa: F401 - import registers them
from .attacks import Attack
from .config import ExperimentConfig, from_mapping
from .data import byzfl_partitions, datasets, partition, population  # noqa: F401 - import registers them
from .errors import ConfigError
from .filters import Filter
from .registry import NoParams, choose, get
from .rules import PreAggregator, Rule


@dataclass(frozen=True)
class Component:
    """A chosen implementation and its Params."""

    name: str
    cls: type
    params: object


@dataclass(frozen=True)
class Plan:
    """A config with every name resolved: what set-up builds its objects from."""

    rule: Component
    filters: tuple[Component, ...]  # applied in order: the rule's own (if any) first, then aggregator.filters
    observers: tuple[Component, ...]  # filters that only record (aggregator.record_similarity)
    pre: tuple[Component, ...]
    attack: Component
    clients: type  # the client side the rule needs (mpifl.clients)
    data: object  # the dataset's Params (data.params; a generated population's, e.g. leaf_synthetic)


def resolve(cfg: ExperimentConfig) -> Plan:
    """Resolve every name of ``cfg`` and build every Params; ConfigError (one line) on the first problem."""
    choose("model.name", "model", cfg.model.name)
    data = _data_params(cfg)
    choose("data.partition", "partition", cfg.data.partition)
    choose("byzantine.model", "byzantine", cfg.byzantine.model)
    choose("train.lr.schedule", "lr_schedule", cfg.train.lr.schedule)
    agg = cfg.aggregator
    rule_cls = choose("aggregator.name", "rule", agg.name)
    filter_names = [f for f in [rule_cls.needs.filter] if f] + [f for f in agg.filters if f != rule_cls.needs.filter]
    if len(set(filter_names)) != len(filter_names):
        raise ConfigError(f"aggregator.filters={agg.filters} names a filter twice.")
    filter_keys = [f"aggregator.filters[{agg.filters.index(f)}]" if f in agg.filters else "aggregator.name"
                   for f in filter_names]
    observer_names = ["diversefl"] if agg.record_similarity and "diversefl" not in filter_names else []
    chosen = [("aggregator.name", "rule", agg.name),
              *(zip(filter_keys, ["filter"] * len(filter_names), filter_names)),
              *(("aggregator.record_similarity", "filter", f) for f in observer_names),
              *((f"aggregator.pre[{i}]", "pre", p) for i, p in enumerate(agg.pre))]
    classes = [choose(key, kind, name) for key, kind, name in chosen]
    known = {f.name for cls in classes for f in dataclasses.fields(cls.Params)}
    unknown = sorted(set(agg.params) - known)
    if unknown:
        parts = ", ".join(f"{kind} {name}" for _, kind, name in chosen)
        raise ConfigError(f"aggregator.params.{unknown[0]} is not a parameter of {parts}; known: "
                          f"{', '.join(sorted(known)) or 'none'}.")
    built = [Component(name, cls, _params(cls, agg.params)) for (_, _, name), cls in zip(chosen, classes)]
    rule, rest = built[0], built[1:]
    plan_filters = tuple(rest[:len(filter_names)])
    observers = tuple(rest[len(filter_names):len(filter_names) + len(observer_names)])
    pre = tuple(rest[len(filter_names) + len(observer_names):])
    if pre:
        rule_cls.check_pre(rule.params, list(agg.pre))
    _check_rows(cfg, rule, pre)
    attack_cls = choose("attack.name", "attack", cfg.attack.name)
    attack_params = from_mapping(attack_cls.Params, cfg.attack.params, prefix="attack.params.")
    attack_cls.check(attack_params, cfg)
    clients_cls = get("clients", rule_cls.needs.clients)
    if cfg.train.clients_per_round is not None and clients_cls.every_round:
        raise ConfigError(f"train.clients_per_round needs clients that may skip rounds; aggregator.name={agg.name}'s "
                          "clients update their model copies every round. Leave it null.")
    if cfg.train.momentum > 0:
        if cfg.train.clients_per_round is not None:
            raise ConfigError(f"train.momentum={cfg.train.momentum} keeps per-client state, which a client sampled now "
                              "and then (train.clients_per_round) would hold stale; set one of them to 0/null.")
        if clients_cls.every_round:
            raise ConfigError(f"train.momentum needs clients that upload gradients; aggregator.name={agg.name}'s "
                              "clients upload model copies. Set train.momentum to 0.")
    if attack_cls.needs_flipped and clients_cls.every_round:
        raise ConfigError(f"attack.name={cfg.attack.name} needs clients that upload gradients; aggregator.name="
                          f"{agg.name}'s clients upload model copies.")
    return Plan(rule, plan_filters, observers, pre, Component(cfg.attack.name, attack_cls, attack_params), clients_cls,
                data)


def _data_params(cfg: ExperimentConfig) -> object:
    """``data.params`` as the chosen dataset's Params (a dataset to partition takes none)."""
    dataset = choose("data.dataset", "dataset", cfg.data.dataset)
    params = from_mapping(getattr(dataset, "Params", NoParams), cfg.data.params, prefix="data.params.")
    if getattr(dataset, "population", False) and cfg.data.scale != "raw":
        raise ConfigError(f"data.dataset={cfg.data.dataset} holds float features, not images: set data.scale=raw.")
    return params


def _check_rows(cfg: ExperimentConfig, rule: Component, pre: tuple[Component, ...]) -> None:
    """Parameters that need more rows than any round can bring (Krum's f against the clients taking part) are
    refused now, naming the bound, instead of a run in which no round takes a step."""
    k = cfg.train.clients_per_round or cfg.clients
    why = f"train.clients_per_round={k}" if cfg.train.clients_per_round else f"clients={k}"
    for step in pre:
        step.cls.check_rows(step.params, k, why)
        k, why = step.cls.rows_out(step.params, k), f"{why}, then {step.name}"
    rule.cls.check_rows(rule.params, k, why)


def _params(cls: type, values: dict) -> object:
    """``cls.Params`` from the entries of ``aggregator.params`` that are its fields (types checked, defaults kept)."""
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    return from_mapping(cls.Params, {k: v for k, v in values.items() if k in fields}, prefix="aggregator.params.")


@dataclass
class Pipeline:
    """The server's pipeline, built once: screening (``max_norm``) → filters → pre-aggregators → rule, with the
    attack beside it and the client side the rule needs."""

    rule: Rule
    filters: list[Filter]
    observers: list[Filter]
    pre: list[PreAggregator]
    attack: Attack
    clients: type
    max_norm: float

    @classmethod
    def build(cls, plan: Plan, cfg: ExperimentConfig) -> Pipeline:
        n = cfg.clients
        rule = plan.rule.cls(plan.rule.params, n)
        return cls(rule, [c.cls(c.params, n, rule) for c in plan.filters],
                   [c.cls(c.params, n, rule) for c in plan.observers], [c.cls(c.params, n) for c in plan.pre],
                   plan.attack.cls(plan.attack.params), plan.clients, cfg.aggregator.max_norm)

    @property
    def all_filters(self) -> list[Filter]:
        return [*self.filters, *self.observers]


def pipeline(cfg: ExperimentConfig) -> Pipeline:
    """The pipeline of ``cfg`` (resolved and built)."""
    return Pipeline.build(resolve(cfg), cfg)
