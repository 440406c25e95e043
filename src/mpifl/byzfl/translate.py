"""A ByzFL benchmark JSON → mpifl runs, one per point of ByzFL's grid, in the order ByzFL's ``run_benchmark`` runs them.

The grid is expanded as ByzFL 0.0.11 does (``benchmark.generate_all_combinations`` with ``pre_aggregators`` and
``milestones`` kept whole, then ``tolerated_f``, the declared f handed to the aggregator and pre-aggregators, the
number of workers, the training seeds): every list in the JSON is a dimension, in the order its keys appear. Each
point becomes an mpifl config tree (names through :mod:`.names`); a field or value mpifl cannot honour is one
:class:`ConfigError` naming it. The points are :class:`mpifl.sweep.Point` objects, so `mpifl byzfl run` skips
finished ones and resumes checkpointed ones as `mpifl sweep` does.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import from_tree
from ..errors import ConfigError, quoted
from ..sweep import Point
from . import names

#: Every key ByzFL 0.0.11 reads, per section (benchmark.py, train.py, managers.py).
KNOWN = {
    "benchmark_config": {"training_algorithm", "nb_steps", "device", "training_seed", "nb_training_seeds",
                         "nb_honest_clients", "f", "tolerated_f", "set_honest_clients_as_clients", "size_train_set",
                         "data_distribution_seed", "nb_data_distribution_seeds", "data_distribution"},
    "model": {"name", "dataset_name", "nb_labels", "loss", "learning_rate", "learning_rate_decay", "milestones",
              "optimizer_name"},
    "aggregator": {"name", "parameters"},
    "pre_aggregators": {"name", "parameters"},
    "honest_clients": {"momentum", "weight_decay", "batch_size"},
    "attack": {"name", "parameters"},
    "evaluation_and_results": {"evaluation_delta", "batch_size_evaluation", "evaluate_on_test",
                               "store_per_client_metrics", "store_models", "data_folder", "results_directory"},
}
#: ParamsManager's defaults for what a JSON leaves out.
DEFAULTS = {
    "benchmark_config": {"nb_steps": 1000, "device": "cpu", "training_seed": 0, "nb_training_seeds": 1,
                         "nb_honest_clients": 10, "f": 0, "set_honest_clients_as_clients": False,
                         "data_distribution_seed": 0, "nb_data_distribution_seeds": 1,
                         "data_distribution": {"name": "iid", "distribution_parameter": 1.0},
                         "training_algorithm": {"name": "DSGD", "parameters": {}}},
    "model": {"name": "cnn_mnist", "dataset_name": "mnist", "nb_labels": 10, "loss": "NLLLoss", "learning_rate": 0.1,
              "learning_rate_decay": 1.0, "milestones": [], "optimizer_name": "SGD"},
    "honest_clients": {"momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32},
    "evaluation_and_results": {"evaluation_delta": 50, "data_folder": "./data", "results_directory": "./results",
                               "evaluate_on_test": True, "store_models": False},
}


# ---- the grid, as ByzFL's run_benchmark expands it ----------------------------------------------------------------

def _combinations(list_dict: list, orig: dict, aux: dict, rest: list[str]) -> None:
    """ByzFL's ``generate_all_combinations_aux``, statement for statement (shallow and deep copies included)."""
    if len(aux) < len(orig):
        key = list(orig)[len(aux)]
        value = orig[key]
        if isinstance(value, list):
            if not value or (key in rest and not isinstance(value[0], list)):
                aux[key] = value
                _combinations(list_dict, orig, aux, rest)
            else:
                for item in value:
                    if isinstance(item, dict):
                        new_list: list = []
                        _combinations(new_list, item, {}, rest)
                    else:
                        new_list = [item]
                    for new in new_list:
                        new_aux = copy.deepcopy(aux)
                        new_aux[key] = new
                        _combinations(list_dict, orig, new_aux, rest)
        elif isinstance(value, dict):
            new_list = []
            _combinations(new_list, value, {}, rest)
            for dictionary in new_list:
                new_aux = aux.copy()
                new_aux[key] = dictionary
                _combinations(list_dict, orig, new_aux, rest)
        else:
            aux[key] = value
            _combinations(list_dict, orig, aux, rest)
    else:
        list_dict.append(aux)


def expand(data: dict) -> list[dict]:
    """ByzFL's settings of ``data`` (one dict per training), in run_benchmark's order; each a deep copy."""
    data = copy.deepcopy(data)
    bench = data.setdefault("benchmark_config", {})
    for key in ("nb_honest_clients", "set_honest_clients_as_clients", "training_seed", "nb_training_seeds",
                "data_distribution_seed", "nb_data_distribution_seeds"):
        bench.setdefault(key, DEFAULTS["benchmark_config"][key])
    settings: list[dict] = []
    _combinations(settings, data, {}, ["pre_aggregators", "milestones"])
    settings = [copy.deepcopy(s) for s in settings]  # ByzFL shares some sub-dicts between settings; no sharing here
    for s in settings:
        s.setdefault("aggregator", {"name": "Average"}).setdefault("parameters", {})
        s.setdefault("pre_aggregators", [])
        for pre in s["pre_aggregators"]:
            pre.setdefault("parameters", {})
        s.setdefault("attack", {"name": "NoAttack"}).setdefault("parameters", {})
        b = s["benchmark_config"]
        b.setdefault("training_algorithm", {"name": "DSGD", "parameters": {}})
        b.setdefault("f", 0)
    if "tolerated_f" not in bench:
        for s in settings:
            s["benchmark_config"]["tolerated_f"] = s["benchmark_config"]["f"]
    else:
        settings = [s for s in settings if s["benchmark_config"]["tolerated_f"] >= s["benchmark_config"]["f"]]
    for s in settings:
        declared = s["benchmark_config"]["tolerated_f"]
        s["aggregator"]["parameters"]["f"] = declared
        for pre in s["pre_aggregators"]:
            pre["parameters"]["f"] = declared
        b = s["benchmark_config"]
        if b["set_honest_clients_as_clients"]:
            b["nb_workers"] = b["nb_honest_clients"]
            b["nb_honest_clients"] = b["nb_workers"] - b["f"]
        else:
            b["nb_workers"] = b["nb_honest_clients"] + b["f"]
    return _with_seeds(_with_seeds(settings, "training_seed", "nb_training_seeds"), "data_distribution_seed",
                       "nb_data_distribution_seeds")


def _with_seeds(settings: list[dict[str, Any]], seed: str, count: str) -> list[dict[str, Any]]:
    """Each setting repeated for ``benchmark_config[count]`` consecutive values of ``benchmark_config[seed]``, in
    ByzFL's order (the seeds of one setting together)."""
    out = []
    for s in settings:
        for i in range(s["benchmark_config"][count]):
            t = copy.deepcopy(s)
            t["benchmark_config"][seed] = s["benchmark_config"][seed] + i
            out.append(t)
    return out


# ---- one setting → one mpifl config tree ------------------------------------------------------------------------

def _get(s: dict, section: str, key: str) -> Any:
    value = s.get(section, {}).get(key, DEFAULTS.get(section, {}).get(key))
    return value


def _check_keys(data: dict) -> None:
    """Every section and key must be one ByzFL reads: a typo would be ignored by ByzFL, here it is an error."""
    for section, value in data.items():
        if section not in KNOWN:
            raise ConfigError(f"ByzFL config: unknown section {section!r}; known: {', '.join(KNOWN)}.")
        items = value if isinstance(value, list) else [value]
        for item in items:
            for one in (item if isinstance(item, list) else [item]):
                if not isinstance(one, dict):
                    raise ConfigError(f"ByzFL config: {section} must hold mappings, got {quoted(one)}.")
                unknown = sorted(set(one) - KNOWN[section])
                if unknown:
                    raise ConfigError(f"ByzFL config: {section}.{unknown[0]} is not a field ByzFL reads; known: "
                                      f"{', '.join(sorted(KNOWN[section]))}.")


def _component(kind: str, table: dict[str, names.Component], entry: dict, clients: int,
               takes_f: bool) -> tuple[str, dict[str, Any]]:
    """(mpifl name, mpifl parameters) of one ByzFL {name, parameters}."""
    name = entry.get("name")
    if name not in table:
        raise ConfigError(f"ByzFL {kind} {quoted(name)} has no mpifl counterpart; supported: {', '.join(table)}.")
    comp = table[name]
    given = dict(entry.get("parameters", {}))
    if takes_f and "f" not in comp.params:
        given.pop("f", None)  # ByzFL hands every aggregator f; those without an f parameter drop it
    unknown = sorted(set(given) - set(comp.params))
    if unknown:
        known = ", ".join(comp.params) or "none"
        raise ConfigError(f"ByzFL {kind} {name}: parameter {unknown[0]!r} is not supported by mpifl's {comp.name} "
                          f"(it takes: {known}).")
    params: dict[str, Any] = dict(comp.fixed)
    for key, value in {**comp.defaults, **given}.items():
        target = comp.params[key]
        params.update(target(value, clients) if callable(target) else {target: value})
    return comp.name, params


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"ByzFL config: {message}")


def to_tree(s: dict, data_root: str | None = None) -> dict:
    """The mpifl config tree of one expanded ByzFL setting."""
    b = s["benchmark_config"]
    algorithm = b.get("training_algorithm", {}).get("name", "DSGD")
    _require(algorithm == "DSGD", f"benchmark_config.training_algorithm.name={quoted(algorithm)}: mpifl runs DSGD "
                                  "(clients upload gradients each step); FedAvg's local steps are not supported.")
    _require(_get(s, "model", "optimizer_name") == "SGD",
             f"model.optimizer_name={quoted(s['model'].get('optimizer_name'))}: mpifl's server takes SGD steps only.")
    if "size_train_set" in b:
        _require(b["size_train_set"] == 1.0, f"benchmark_config.size_train_set={b['size_train_set']}: mpifl has no "
                 "validation split; set it to 1.0 (the learning rate is then chosen on test accuracy, as ByzFL does "
                 "with 1.0).")
    ev = s.get("evaluation_and_results", {})
    _require(ev.get("evaluate_on_test", True) is True, "evaluation_and_results.evaluate_on_test=false: mpifl always "
             "evaluates on the test set.")
    _require(ev.get("store_models", False) is False, "evaluation_and_results.store_models=true: mpifl stores the final "
             "model only (model/theta in each run file).")
    device = b.get("device", "cpu")
    _require(device in ("cpu", "cuda"), f"benchmark_config.device={quoted(device)}: mpifl takes cpu or cuda.")

    m = s.get("model", {})
    dataset_name = _get(s, "model", "dataset_name")
    _require(dataset_name in names.DATASETS, f"model.dataset_name={quoted(dataset_name)} is not supported; "
             f"supported: {', '.join(names.DATASETS)}.")
    dataset, classes, scale = names.DATASETS[dataset_name]
    _require(_get(s, "model", "nb_labels") == classes,
             f"model.nb_labels={m.get('nb_labels')} but {dataset_name} has {classes} classes.")
    model_name = _get(s, "model", "name")
    _require(model_name in names.MODELS, f"model.name={quoted(model_name)} is not one of ByzFL's models mpifl knows: "
             f"{', '.join(names.MODELS)}.")
    loss = _get(s, "model", "loss")
    _require(loss == "CrossEntropyLoss" or (loss == "NLLLoss" and model_name in names.LOG_SOFTMAX_MODELS),
             f"model.loss={quoted(loss)} with {model_name}: mpifl trains with the cross-entropy of the model's output "
             f"(CrossEntropyLoss, or NLLLoss on the log-probabilities of {', '.join(names.LOG_SOFTMAX_MODELS)}).")
    decay = _get(s, "model", "learning_rate_decay")
    milestones = _get(s, "model", "milestones")
    _require(isinstance(milestones, list) and all(isinstance(x, int) and x >= 0 for x in milestones),
             f"model.milestones={quoted(milestones)} must be a list of step numbers >= 0.")

    dist = b.get("data_distribution", DEFAULTS["benchmark_config"]["data_distribution"])
    _require(dist.get("name") in names.DISTRIBUTIONS, f"benchmark_config.data_distribution.name="
             f"{quoted(dist.get('name'))} is not supported; supported: {', '.join(names.DISTRIBUTIONS)}.")
    unknown = sorted(set(dist) - {"name", "distribution_parameter"})
    _require(not unknown, f"benchmark_config.data_distribution.{unknown[0] if unknown else ''} is not a field ByzFL "
             "reads; known: name, distribution_parameter.")
    partition, parameter_key = names.DISTRIBUTIONS[dist["name"]]

    n, f = b["nb_workers"], b["f"]
    honest = b["nb_honest_clients"]
    _require(honest >= 1 and f >= 0, f"benchmark_config: {honest} honest clients and f={f}.")
    hc = s.get("honest_clients", {})
    extra_hc = {k: v for k, v in hc.items() if k not in KNOWN["honest_clients"]}
    _require(not extra_hc, f"honest_clients.{next(iter(extra_hc), '')} is not a field ByzFL reads.")

    agg_name, agg_params = _component("aggregator", names.AGGREGATORS, s["aggregator"], n, True)
    pre_names, params = [], dict(agg_params)
    for i, pre in enumerate(s["pre_aggregators"]):
        pre_name, pre_params = _component("pre-aggregator", names.PRE_AGGREGATORS, pre, n, True)
        for key, value in pre_params.items():
            if key in params and params[key] != value:
                raise ConfigError(f"ByzFL config: {pre['name']} sets aggregator.params.{key}={value} but an earlier "
                                  f"component set {params[key]}; mpifl has one flat aggregator.params.")
            params[key] = value
        pre_names.append(pre_name)
    attack_name, attack_params = _component("attack", names.ATTACKS, s["attack"], n, False)
    if f == 0:
        attack_name, attack_params = "none", {}

    # ByzFL splits the data among the honest clients only (the Byzantine ones get copies: data.population.shares)
    # ByzFL draws the partition and the model's initialisation from data_distribution_seed, the rest from training_seed
    data: dict[str, Any] = {"dataset": dataset, "partition": partition, "scale": scale, "split_among": "honest",
                            "seed": b["data_distribution_seed"],
                            "root": data_root if data_root is not None else ev.get("data_folder", "./data")}
    if parameter_key is not None:
        value = dist.get("distribution_parameter", 1.0)
        _require(isinstance(value, (int, float)), f"benchmark_config.data_distribution.distribution_parameter="
                 f"{quoted(value)} must be a number.")
        data[parameter_key.split(".", 1)[1]] = float(value)
    eval_every = ev.get("evaluation_delta", 50)
    return {
        "name": f"byzfl_{dataset_name}_{model_name}",
        "seed": b["training_seed"],
        "clients": n,
        "rounds": b.get("nb_steps", 1000),
        "data": data,
        "model": {"name": names.MODELS[model_name], "init": "torch",  # ByzFL's models keep PyTorch's init
                  "seed": b["data_distribution_seed"]},
        "train": {"batch_size": _get(s, "honest_clients", "batch_size"), "batch_fraction": None,
                  "weight_decay": float(_get(s, "honest_clients", "weight_decay")),
                  "momentum": float(_get(s, "honest_clients", "momentum")),
                  # ByzFL's MultiStepLR counts steps from 0 and decays after step m: from mpifl round m + 1 on
                  "lr": {"schedule": "step", "base": float(_get(s, "model", "learning_rate")),
                         "milestones": [x + 1 for x in milestones], "gamma": float(decay)},
                  "eval_every": eval_every, "device": device},
        # ByzFL appends the f Byzantine vectors after the honest ones: the last f clients, every step
        "byzantine": {"model": "fixed", "clients": list(range(honest, n))},
        "attack": {"name": attack_name, "params": attack_params},
        "aggregator": {"name": agg_name, "pre": pre_names, "params": params},
        "output": {"progress_every": max(eval_every, 1)},
    }


def folder_name(s: dict) -> str:
    """ByzFL's result folder of a setting (managers.FileManager), which names mpifl's run file too."""
    b, dist = s["benchmark_config"], s["benchmark_config"].get("data_distribution", {})
    dist_name = dist.get("name", "iid")
    parameter = None if dist_name in ("iid", "extreme_niid") else dist.get("distribution_parameter", 1.0)
    pre = "_".join(p["name"] for p in s["pre_aggregators"])
    return (f"{_get(s, 'model', 'dataset_name')}_{_get(s, 'model', 'name')}_n_{b['nb_workers']}_f_{b['f']}_"
            f"d_{b['tolerated_f']}_{dist_name}_{parameter}_{s['aggregator']['name']}_{pre}_{s['attack']['name']}_"
            f"lr_{_get(s, 'model', 'learning_rate')}_mom_{_get(s, 'honest_clients', 'momentum')}_"
            f"wd_{_get(s, 'honest_clients', 'weight_decay')}")


@dataclass(frozen=True)
class ByzflPoint(Point):
    setting: dict  # the expanded ByzFL setting this run stands for (stored beside the run as <run>.byzfl.json)


def load_json(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read ByzFL config {path}: {exc.strerror}.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ByzFL config {path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"ByzFL config {path} must be a JSON object of sections.")
    return data


def points(data: dict, out_dir: str | Path | None = None, data_root: str | None = None,
           overrides: tuple[str, ...] = ()) -> list[ByzflPoint]:
    """Every run of the ByzFL config ``data``: its mpifl config and output file (``out_dir``, else ByzFL's
    results_directory). ``overrides`` (``key=value``) apply to every run after translation."""
    _check_keys(data)
    folder = Path(out_dir if out_dir is not None else
                  data.get("evaluation_and_results", {}).get("results_directory", "./results"))
    result: list[ByzflPoint] = []
    for index, setting in enumerate(expand(data)):
        try:
            tree = to_tree(setting, data_root)
            cfg = from_tree(tree, overrides)
        except ConfigError as exc:
            raise ConfigError(f"ByzFL point {index} ({folder_name(setting)}): {exc}") from None
        b = setting["benchmark_config"]
        stem = re.sub(r"[^A-Za-z0-9.+_-]+", "_", folder_name(setting))
        out = folder / f"{stem}_tr_seed_{b['training_seed']}_dd_seed_{b['data_distribution_seed']}.h5"
        result.append(ByzflPoint(index, tuple(overrides), cfg, out, setting))
    return result
