from pathlib import Path

import pytest

from mpifl.build import pipeline, resolve
from mpifl.config import ConfigError, ExperimentConfig, load, to_yaml, validate_against_data

from .conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_default_config_is_the_fig3_file():
    assert load(REPO / "configs" / "fig3_mnist_mlp.yaml") == ExperimentConfig()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_paper_config_loads_and_round_trips_through_yaml(path: Path, tmp_path: Path):
    cfg = load(path)
    copy = tmp_path / "copy.yaml"
    copy.write_text(to_yaml(cfg))
    assert load(copy) == cfg


def test_paper_hyperparameters_fig2():
    cfg = load(REPO / "configs" / "fig2_mnist_softmax.yaml")
    assert (cfg.train.batch_size, cfg.rounds, cfg.train.weight_decay) == (300, 1000, 0.0067)
    assert (cfg.train.lr.schedule, cfg.train.lr.base) == ("inv_sqrt", 0.001)
    plan = resolve(cfg)
    (diversefl,) = plan.filters
    assert (diversefl.params.sample_fraction, diversefl.params.eps1, diversefl.params.eps2) == (0.01, 0.5, 2.0)
    noisy = resolve(load(REPO / "configs" / "fig2_mnist_softmax.yaml",
                         ["aggregator.name=noisy_median", "aggregator.params.sigma=100"]))
    assert noisy.rule.params.sigma == 100.0
    assert (cfg.model.init, cfg.data.scale) == ("zeros", "raw")


def test_overrides_are_parsed_to_the_field_type():
    cfg = load(None, ["train.lr.base=0.5", "aggregator.name=median", "train.lr.milestones=[3, 7]", "clients=10"])
    assert cfg.train.lr.base == 0.5 and isinstance(cfg.train.lr.base, float)
    assert cfg.aggregator.name == "median"
    assert cfg.train.lr.milestones == [3, 7]
    assert cfg.clients == 10


@pytest.mark.parametrize(("overrides", "message"), [
    (["aggregator.params.eps1=2", "aggregator.params.eps2=0.5"],
     "aggregator.params.eps1=2.0 must be smaller than aggregator.params.eps2=0.5"),
    (["aggregator.name=trmean", "aggregator.params.beta=0.5"], "aggregator.params.beta=0.5 must be in [0, 0.5)"),
    (["aggregator.params.beta=0.1"], "aggregator.params.beta is not a parameter of rule diversefl, filter diversefl"),
    (["aggregator.beta=0.1"], "aggregator.beta moved to aggregator.params.beta"),
    (["aggregator.filter=diversefl"], "aggregator.filter moved to aggregator.filters (a list)"),
    (["attack.scale=2"], "attack.scale moved to attack.params.scale"),
    (["attack.name=backdoor", "attack.params.source=9"], "attack.params.source and attack.params.target must differ"),
    (["attack.name=sleeper"], "attack.name=sleeper needs byzantine.model=fixed"),
    (["aggregator.name=rsa", "train.clients_per_round=5"], "train.clients_per_round needs clients that may skip"),
    (["aggregator.name=krum", "aggregator.params.f=25"], "krum with aggregator.params.f=25 needs more than 2f + 2 = 52 "
     "usable updates a round, but at most 20 reach it (clients=20); lower the parameter or use more clients."),
    (["aggregator.name=bulyan", "aggregator.params.f=5"], "bulyan with aggregator.params.f=5 needs at least 4f + 3 = "
     "23 usable updates a round, but at most 20 reach it (clients=20)"),
    (["aggregator.name=krum", "aggregator.params.f=2", "train.clients_per_round=6"],
     "needs more than 2f + 2 = 6 usable updates a round, but at most 6 reach it (train.clients_per_round=6)"),
    (["aggregator.name=krum", "aggregator.pre=[bucketing]", "aggregator.params={f: 2, s: 4}"],
     "but at most 5 reach it (clients=20, then bucketing)"),
    (["aggregator.name=multi_krum", "aggregator.params.m=21"], "multi_krum with aggregator.params.m=21 needs at least"),
    (["aggregator.name=dnc", "aggregator.params.f=20"], "dnc with aggregator.params.f=20, c=1.0 needs more than"),
    (["aggregator.name=median", "aggregator.pre=[nnm]", "aggregator.params.f=20"], "nnm with aggregator.params.f=20"),
    (["byzantine.k=21"], "byzantine.k=21 exceeds clients=20"),
    (["trian.rounds=3"], "unknown key trian. Did you mean train?"),
    (["aggregator.nmae=median"], "unknown key aggregator.nmae. Did you mean aggregator.name?"),
    (["aggregator.name=medain"], "Did you mean 'median'?"),
    (["rounds=ten"], "rounds='ten' must be an integer."),
    (["train.batch_size=30"], "set exactly one of train.batch_size and train.batch_fraction"),
    (["byzantine.model=fixed", "byzantine.clients=[1, 20]"], "byzantine.clients=[1, 20] must be distinct client ids"),
    (["train.lr.milestones=[9, 3]"], "train.lr.milestones=[9, 3] must be increasing"),
    (["clients=0"], "clients=0 must be > 0"),
    (["data"], "--set 'data' must look like key.sub=value"),
])
def test_impossible_values_are_rejected_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve(load(None, overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_sample_larger_than_a_client_is_rejected():
    cfg = load(None, ["aggregator.params.sample_size=200", "aggregator.params.sample_fraction=null"])
    (diversefl,) = pipeline(cfg).filters
    with pytest.raises(ConfigError, match="aggregator.params.sample_size=200 exceeds the smallest client's 150 points"):
        diversefl.check_data([150] * 20)


def test_backdoor_class_outside_dataset_is_rejected():
    attack = pipeline(load(None, ["attack.name=backdoor", "attack.params.target=12"])).attack
    with pytest.raises(ConfigError, match=r"attack.params.target=12 is not a class of the dataset \(10 classes\)"):
        attack.check_classes(10)


def test_markov_class_outside_dataset_is_rejected():
    cfg = load(None, ["byzantine.model=markov", "byzantine.markov_class=10"])
    with pytest.raises(ConfigError, match="byzantine.markov_class=10 is not a class of mnist"):
        validate_against_data(cfg, [3000] * 20, 10)


def test_malformed_yaml_names_the_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 3\ntrain: {batch_size: [\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d"):
        load(bad)


def test_a_hostile_value_is_quoted_short(tmp_path: Path):
    bomb = tmp_path / "bomb.yaml"  # each level repeats the one before nine times: 9^8 strings if expanded
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    bomb.write_text(f"seed: [{', '.join(levels)}]\n")
    assert bomb.stat().st_size < 400
    with pytest.raises(ConfigError) as err:
        load(bomb)
    assert len(str(err.value)) < 200 and str(err.value).startswith("seed=[['x', 'x', 'x'")
    with pytest.raises(ConfigError) as err:
        load(None, ["seed=[[[1, 2, 3] , [4, 5, 6]], " + ", ".join(["[7, 8, 9]"] * 10000) + "]"])
    assert len(str(err.value)) < 200 and str(err.value).startswith("seed=[[[1, 2, 3], [4, 5, 6]], [7, 8, 9]")


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections, not list"):
        load(bad)
