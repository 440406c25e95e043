from pathlib import Path

import h5py
import pytest
import yaml
from click.testing import CliRunner

from mpifl import checkpoint
from mpifl.cli import main
from mpifl.config import ConfigError
from mpifl.sweep import load, status

from .conftest import REPO, small_tree


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    base = small_tree(rounds=3, output={"checkpoint_every": 1}, aggregator={"name": "median"})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "base": "base.yaml", "out_dir": str(tmp_path / "out"), "set": ["train.eval_every=3"], "seeds": [0, 1],
        "grid": [{"aggregator.name": ["median", "trmean"]},
                 {"aggregator.name": ["diversefl"], "aggregator.params": [{"sample_fraction": 0.2}],
                  "attack.name": ["none"]}],
    }))
    return path


def test_points_are_the_union_of_products_times_seeds(sweep_file: Path):
    points = load(sweep_file)
    assert [(p.config.aggregator.name, p.config.attack.name, p.config.seed) for p in points] == [
        ("median", "sign_flip", 0), ("median", "sign_flip", 1), ("trmean", "sign_flip", 0), ("trmean", "sign_flip", 1),
        ("diversefl", "none", 0), ("diversefl", "none", 1)]
    assert points[5].out.name == "test_005_diversefl_sample_fraction_0.2_none_s1.h5"
    assert all(p.config.train.eval_every == 3 for p in points)


@pytest.mark.parametrize("name", ["fig2", "fig3", "fig4", "fig5", "fig6"])
def test_paper_sweeps_load(name: str):
    points = load(REPO / "configs" / "sweeps" / f"{name}.yaml")
    sizes = {"fig2": 18, "fig3": 12, "fig4": 6, "fig5": 6, "fig6": 6}
    assert len(points) == sizes[name] and len({p.out for p in points}) == len(points)


@pytest.mark.parametrize("name, size", [("attacks_fig3", 245), ("rules_fig3", None), ("plus3_fig3", 24)])
def test_robustness_sweeps_load_with_one_file_per_point(name: str, size: int | None):
    points = load(REPO / "configs" / "sweeps" / f"{name}.yaml")
    assert size is None or len(points) == size
    assert len({p.out for p in points}) == len(points)


def test_plus3_table_runs_every_attack_of_the_suite_against_diversefl_plus3_beside_oraclesgd():
    points = load(REPO / "configs" / "sweeps" / "plus3_fig3.yaml")
    assert [p.config.aggregator.name for p in points] == ["diversefl_plus3"] * 23 + ["oracle"]
    suite = {p.config.attack.name for p in load(REPO / "configs" / "sweeps" / "attacks_fig3.yaml")}
    assert {p.config.attack.name for p in points} == suite | {"mean_class_flip"}
    assert all(p.config.rounds == 1000 for p in points)


def test_list_and_local_run_then_skip(sweep_file: Path):
    runner = CliRunner()
    listed = runner.invoke(main, ["sweep", str(sweep_file), "--list"])
    assert listed.exit_code == 0 and len(listed.output.splitlines()) == 6
    assert listed.output.splitlines()[0].split()[:2] == ["0", "new"]
    ran = runner.invoke(main, ["sweep", str(sweep_file), "--local", "--quiet"])
    assert ran.exit_code == 0, ran.output
    assert ran.output.count(": ran -> ") == 6
    assert all(status(p) == "finished" for p in load(sweep_file))
    again = runner.invoke(main, ["sweep", str(sweep_file), "--index", "2"])
    assert again.output.strip().endswith("already finished")


def test_index_resumes_a_checkpointed_point(sweep_file: Path):
    point = load(sweep_file)[0]
    CliRunner().invoke(main, ["sweep", str(sweep_file), "--index", "0", "--set", "rounds=2", "--quiet"])
    assert status(point) == "resumable" and checkpoint.load(checkpoint.path_for(point.out)).round == 2
    resumed = CliRunner().invoke(main, ["sweep", str(sweep_file), "--index", "0", "--quiet"])
    assert "point 0: resumed -> " in resumed.output
    with h5py.File(point.out, "r") as f:
        assert f["round"][:].tolist() == [1, 2, 3]


@pytest.mark.parametrize(("args", "message"), [
    (["--index", "9"], "--index 9 is out of range: "),
    (["--list", "--local"], "give exactly one of --list, --index I, --local."),
    (["--list", "--set", "aggregator.params.sample_fraction=0.7"],
     "point 0 (train.eval_every=3 aggregator.name=median seed=0 aggregator.params.sample_fraction=0.7): "
     "aggregator.params.sample_fraction is not a parameter of rule median; known: none."),
])
def test_sweep_errors(sweep_file: Path, args: list[str], message: str):
    result = CliRunner().invoke(main, ["sweep", str(sweep_file), *args])
    assert result.exit_code != 0 and message in result.output


def test_sweep_file_needs_base_and_grid(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: []\nextra: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load(bad)
    bad.write_text("grid: []\n")
    with pytest.raises(ConfigError, match="needs 'base'"):
        load(bad)
