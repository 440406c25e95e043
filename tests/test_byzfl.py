"""`mpifl byzfl`: ByzFL's JSON grid → mpifl runs (order and overrides), one-line refusals, and ByzFL's evaluation."""

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mpifl import build, registry
from mpifl.byzfl import evaluate, names, translate
from mpifl.cli import main
from mpifl.config import from_tree
from mpifl.errors import ConfigError

from .conftest import small_tree

#: A small grid (mpifl's mlp and iid shards keep it fast; the real names are checked in the test below).
SMALL = {
    "benchmark_config": {"nb_steps": 4, "training_seed": 0, "nb_training_seeds": 2, "nb_honest_clients": 4, "f": [1, 2],
                         "data_distribution": [{"name": "iid"}, {"name": "dirichlet_niid", "distribution_parameter": [0.5]}]},
    "model": {"name": "fc_mnist", "dataset_name": "mnist", "learning_rate": [0.1, 0.05], "milestones": [2]},
    "aggregator": [{"name": "TrMean"}, {"name": "GeometricMedian", "parameters": {"T": 5}}],
    "pre_aggregators": [{"name": "NNM"}],
    "honest_clients": {"momentum": 0.9, "weight_decay": 0.0001, "batch_size": 8},
    "attack": [{"name": "ALittleIsEnough"}],
    "evaluation_and_results": {"evaluation_delta": 2, "data_folder": "/data", "results_directory": "res"},
}


def test_grid_is_byzfls_in_its_order_with_each_runs_overrides():
    points = translate.points(SMALL)
    # f x distribution (iid; dirichlet 0.5) x lr x aggregator x seeds, nested in the JSON's key order
    assert len(points) == 2 * 2 * 2 * 2 * 2
    order = [(p.setting["benchmark_config"]["f"], p.setting["benchmark_config"]["data_distribution"]["name"],
              p.setting["model"]["learning_rate"], p.setting["aggregator"]["name"], p.config.seed) for p in points]
    assert order[:5] == [(1, "iid", 0.1, "TrMean", 0), (1, "iid", 0.1, "TrMean", 1), (1, "iid", 0.1, "GeometricMedian", 0),
                         (1, "iid", 0.1, "GeometricMedian", 1), (1, "iid", 0.05, "TrMean", 0)]
    p = points[0]
    tree = translate.to_tree(p.setting)
    assert tree["clients"] == 5 and tree["byzantine"] == {"model": "fixed", "clients": [4]}
    assert tree["aggregator"] == {"name": "trmean", "pre": ["nnm"], "params": {"beta": 0.2, "f": 1}}
    assert tree["attack"] == {"name": "alie", "params": {"z": 1.5}}
    assert tree["train"]["lr"] == {"schedule": "step", "base": 0.1, "milestones": [3], "gamma": 1.0}
    assert tree["train"]["momentum"] == 0.9 and tree["train"]["batch_size"] == 8 and tree["rounds"] == 4
    assert tree["data"] == {"dataset": "mnist", "partition": "iid", "scale": "standardize", "split_among": "honest",
                            "seed": 0, "root": "/data"}
    assert tree["model"] == {"name": "fc_mnist", "init": "torch", "seed": 0}
    geo = translate.to_tree(points[2].setting)["aggregator"]
    assert geo == {"name": "geomed", "pre": ["nnm"], "params": {"tolerance": 0.0, "nu": 0.1, "iterations": 5, "f": 1}}
    dirichlet = next(q for q in points if q.config.data.partition == "dirichlet_niid")
    assert dirichlet.config.data.alpha == 0.5
    assert p.out == Path("res/mnist_fc_mnist_n_5_f_1_d_1_iid_None_TrMean_NNM_ALittleIsEnough_lr_0.1_mom_0.9_wd_0.0001"
                         "_tr_seed_0_dd_seed_0.h5")


def test_expansion_equals_byzfls_own():
    bench = pytest.importorskip("byzfl.benchmark.benchmark")
    data = bench.ensure_optional_config_parameters(copy.deepcopy(SMALL))
    theirs = bench.generate_all_combinations(data, ["pre_aggregators", "milestones"])
    theirs = bench.ensure_key_parameters(theirs)
    theirs = bench.set_tolerated_f_equal_to_real_f(theirs)
    theirs = bench.set_declared_as_aggregation_parameter(theirs)
    theirs = bench.delegate_data_distribution_seeds(bench.delegate_training_seeds(bench.compute_number_of_workers(theirs)))
    ours = translate.expand(SMALL)
    assert [translate.folder_name(s) + str(s["benchmark_config"]["training_seed"]) for s in ours] == \
        [translate.folder_name(s) + str(s["benchmark_config"]["training_seed"]) for s in theirs]


def test_data_distribution_seed_draws_partition_and_init_training_seed_the_rest():
    """As in ByzFL: points that differ only in training_seed share the partition and the initial model."""
    data = copy.deepcopy(SMALL)
    data["benchmark_config"].update(f=1, training_seed=3, data_distribution_seed=5, nb_data_distribution_seeds=2)
    points = [p for p in translate.points(data) if p.setting["aggregator"]["name"] == "TrMean"
              and p.setting["benchmark_config"]["data_distribution"]["name"] == "iid"
              and p.setting["model"]["learning_rate"] == 0.1]
    assert [(p.config.seed, p.config.data.seed, p.config.model.seed) for p in points] == \
        [(3, 5, 5), (3, 6, 6), (4, 5, 5), (4, 6, 6)]
    assert points[1].out.name.endswith("_tr_seed_3_dd_seed_6.h5")


def test_tolerated_f_keeps_declared_at_least_real_and_hands_it_to_the_rules():
    data = {**SMALL, "benchmark_config": {**SMALL["benchmark_config"], "tolerated_f": [2], "nb_training_seeds": 1}}
    points = translate.points(data)
    assert {p.setting["benchmark_config"]["f"] for p in points} == {1, 2}
    assert all(p.config.aggregator.params["f"] == 2 for p in points)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["benchmark_config"].update(training_algorithm={"name": "FedAvg"}), "FedAvg"),
    (lambda d: d["model"].update(loss="MSELoss"), "model.loss='MSELoss'"),
    (lambda d: d["honest_clients"].update(nesterov=True), "honest_clients.nesterov is not a field ByzFL reads"),
    (lambda d: d.update(aggregator={"name": "Krumm"}), "ByzFL aggregator 'Krumm' has no mpifl counterpart"),
    (lambda d: d.update(aggregator={"name": "TrMean", "parameters": {"beta": 0.1}}),
     "ByzFL aggregator TrMean: parameter 'beta' is not supported by mpifl's trmean"),
    (lambda d: d["benchmark_config"].update(size_train_set=0.8), "size_train_set=0.8: mpifl has no validation"),
    (lambda d: d["model"].update(dataset_name="emnist"), "model.dataset_name='emnist' is not supported"),
])
def test_what_mpifl_cannot_honour_is_one_line_naming_it(change, message: str):
    data = copy.deepcopy(SMALL)
    change(data)
    with pytest.raises(ConfigError, match=message) as info:
        translate.points(data)
    assert "\n" not in str(info.value)


def test_diversefl_comes_from_the_same_json():
    data = copy.deepcopy(SMALL)
    data["aggregator"] = [{"name": "DiverseFL", "parameters": {"sample_fraction": 0.05}},
                          {"name": "DiverseFLPlus", "parameters": {"kappa": 0.5}}]
    data["pre_aggregators"] = []
    points = translate.points(data, overrides=("model.name=mlp",))  # a small model for speed
    assert points[0].config.aggregator.name == "diversefl"
    assert points[0].config.aggregator.params == {"sample_fraction": 0.05}  # ByzFL's f is not DiverseFL's
    plus = next(p for p in points if p.config.aggregator.name == "diversefl_plus")
    assert plus.config.aggregator.params == {"kappa": 0.5}
    build.resolve(points[0].config)


def test_diversefl_runs_with_byzantine_clients_holding_copies_of_honest_data(tmp_path: Path):
    """ByzFL's Byzantine clients hold no data; DiverseFL needs their samples: they hold honest clients' pieces."""
    import h5py

    from mpifl.train import run

    data = copy.deepcopy(SMALL)
    data["aggregator"], data["pre_aggregators"] = [{"name": "DiverseFL", "parameters": {"sample_fraction": 0.2}}], []
    data["benchmark_config"]["f"] = [1]
    point = translate.points(data, out_dir=tmp_path, overrides=(
        "data.dataset=synthetic", "model.name=mlp", "model.hidden=8"))[0]
    assert point.config.data.split_among == "honest" and point.config.byzantine.clients == [4]
    run(point.config, point.out, progress=None)
    with h5py.File(point.out) as f:
        assert f["clients/accepted"].shape[1] == 5 and np.isfinite(f["test_accuracy"][-1])


def test_names_table_uses_the_agreed_registry_names():
    table = {k: v.name for t in (names.AGGREGATORS, names.PRE_AGGREGATORS, names.ATTACKS) for k, v in t.items()}
    assert table.items() >= {
        "Average": "mean", "Median": "median", "TrMean": "trmean", "GeometricMedian": "geomed", "Krum": "krum",
        "MultiKrum": "multi_krum", "CenteredClipping": "centered_clipping", "MDA": "mda", "MoNNA": "monna",
        "Meamed": "meamed", "CAF": "caf", "SMEA": "smea", "NNM": "nnm", "Bucketing": "bucketing",
        "Clipping": "clipping", "ARC": "arc", "SignFlipping": "mean_sign_flip", "InnerProductManipulation": "ipm",
        "Optimal_InnerProductManipulation": "optimal_ipm", "ALittleIsEnough": "alie",
        "Optimal_ALittleIsEnough": "optimal_alie", "Mimic": "mimic", "Inf": "inf", "Gaussian": "gaussian_vectors"}.items()


def test_every_translated_name_is_a_registered_mpifl_choice():
    kinds = ((names.AGGREGATORS, "rule"), (names.PRE_AGGREGATORS, "pre"), (names.ATTACKS, "attack"))
    for table, kind in kinds:
        for byzfl_name, component in table.items():
            assert component.name in registry.names(kind), (byzfl_name, component.name)
    assert {p for p, _ in names.DISTRIBUTIONS.values()} <= set(registry.names("partition"))
    assert set(names.MODELS.values()) <= set(registry.names("model"))


def test_cli_runs_a_point_with_registered_stand_ins(tmp_path: Path):
    """A point runs end to end (mpifl's mlp and synthetic data for speed)."""
    import json

    data = copy.deepcopy(SMALL)
    data["aggregator"], data["benchmark_config"]["f"] = [{"name": "TrMean"}], [1]
    (tmp_path / "c.json").write_text(json.dumps(data))
    common = ["--out-dir", str(tmp_path / "runs"), "--set", "data.dataset=synthetic", "--set", "model.name=mlp",
              "--set", "model.hidden=8"]
    listed = CliRunner().invoke(main, ["byzfl", "list", str(tmp_path / "c.json"), *common])
    assert listed.exit_code == 0, listed.output
    assert len(listed.output.splitlines()) == 8 and "new" in listed.output
    done = CliRunner().invoke(main, ["byzfl", "run", str(tmp_path / "c.json"), "--index", "0", "--quiet", *common])
    assert done.exit_code == 0, done.output
    assert "ran ->" in done.output


# ---- evaluation ---------------------------------------------------------------------------------------------------

def fake_runs(tmp_path: Path) -> list[Path]:
    """Crafted runs: trmean, f=1, iid; lr 0.1 and 0.01; attacks a and b; seeds 0 and 1; accuracy rows hand-set."""
    from mpifl.train import run

    base = from_tree(small_tree(rounds=4, clients=4, byzantine={"model": "fixed", "clients": [3]},
                                aggregator={"name": "trmean"}, attack={"name": "alie"},
                                data={"dataset": "synthetic", "synthetic_train": 200, "synthetic_test": 50,
                                      "partition": "iid"}))
    template = tmp_path / "template.h5"
    run(base, template, progress=None)
    import h5py
    import shutil
    # accuracy at rounds 2 and 4 per (lr, attack, seed): lr 0.1 is best on attack a but worst-case lower
    table = {(0.1, "alie", 0): [0.5, 0.9], (0.1, "alie", 1): [0.5, 0.7],  # mean 0.8 at round 4
             (0.1, "ipm", 0): [0.3, 0.2], (0.1, "ipm", 1): [0.5, 0.2],  # mean 0.4 at round 2
             (0.01, "alie", 0): [0.6, 0.6], (0.01, "alie", 1): [0.6, 0.6],  # 0.6
             (0.01, "ipm", 0): [0.5, 0.55], (0.01, "ipm", 1): [0.5, 0.45]}  # 0.5 at round 2 and 4
    paths = []
    for (lr, attack, seed), acc in table.items():
        path = tmp_path / f"r_{lr}_{attack}_{seed}.h5"
        shutil.copy(template, path)
        with h5py.File(path, "r+") as f:
            config = yaml.safe_load(f.attrs["config"])
            config["train"]["lr"]["base"], config["attack"]["name"], config["seed"] = lr, attack, seed
            f.attrs["config"] = yaml.safe_dump(config)
            f["test_accuracy"][:] = [np.nan, acc[0], np.nan, acc[1]]
        paths.append(path)
    return paths


def test_best_learning_rate_is_chosen_by_worst_case_over_attacks(tmp_path: Path):
    cells = evaluate.evaluate([evaluate.load_run(p) for p in fake_runs(tmp_path)])
    (cell,) = cells
    assert cell.key == evaluate.Key("trmean", 1, "iid")
    assert cell.candidate[0] == 0.01  # worst case 0.5 beats lr 0.1's 0.4, though 0.1 is best against alie
    assert cell.worst == pytest.approx(0.5)
    assert cell.attacks["alie"][:3] == pytest.approx((0.6, 0.0, 2))
    assert cell.attacks["ipm"][:3] == pytest.approx((0.5, 0.0, 2))  # first of the tied rounds
    out = evaluate.report(fake_runs(tmp_path / "again"), tmp_path / "report")
    assert {p.name for p in out} == {"byzfl_table.md", "byzfl_table.csv", "heatmap_trmean.png", "curves_trmean.png"}
    assert "| trmean | 1 | iid | 0.01 | 0 | 0.0005 | 0.5000 |" in (tmp_path / "report" / "byzfl_table.md").read_text()
