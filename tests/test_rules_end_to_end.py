"""Every registered rule in a short run: one process, `mpirun -n 3` (one MPI job for all of them, through
`mpifl sweep --local`), and killed-then-resumed runs that must equal uninterrupted ones."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.build import resolve
from mpifl.config import ConfigError, from_tree
from mpifl.train import run

from .conftest import small_tree
from .mpi_helpers import mpirun, needs_mpirun

RULES = registry.names("rule")


def tree_for(aggregator: dict, rounds: int = 6) -> dict:  # type: ignore[no-untyped-def]
    """The small run of these tests with ``aggregator`` (DiverseFL's 20 % samples where a DiverseFL filter runs)."""
    return small_tree(clients=8, rounds=rounds, output={"checkpoint_every": 3, "progress_every": 1000},
                      aggregator=aggregator)


def config(rule: str, rounds: int = 6):  # type: ignore[no-untyped-def]
    return from_tree(tree_for({"name": rule}, rounds=rounds))


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("single")
    return {rule: run(config(rule), folder / f"{rule}.h5", progress=None).path for rule in RULES}


@pytest.mark.parametrize("rule", RULES)
def test_rule_runs_end_to_end_and_records_its_weights(single: dict[str, Path], rule: str):
    with h5py.File(single[rule]) as f:
        theta, weight, accepted = f["model/theta"][:], f["clients/weight"][:], f["clients/accepted"][:]
        assert f["round"][:].tolist() == [1, 2, 3, 4, 5, 6] and np.isfinite(theta).all()
        assert weight.shape == (6, 8) and accepted.shape == (6, 8)
        assert (weight[~accepted] == 0).all() or np.isnan(weight[~accepted]).all()
        defined = ~np.isnan(weight)
        if defined.all():  # shares of the step: they add up to 1, or less where the rest is carried over (the
            sums = weight[accepted.any(axis=1)].sum(axis=1)  # previous round's centre of centered clipping)
            assert (sums <= 1 + 1e-5).all()
            if rule != "centered_clipping":
                np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
        assert np.isfinite(f["test_loss"][-1]) and 0 <= f["test_accuracy"][-1] <= 1


@pytest.mark.parametrize("rule", RULES)
def test_stopped_and_resumed_run_equals_the_uninterrupted_one(single: dict[str, Path], rule: str, tmp_path: Path):
    out = tmp_path / "run.h5"
    run(config(rule, rounds=3), out, progress=None)  # stops after round 3 with its checkpoint (and evaluates)
    run(config(rule), out, progress=None, resume=True)
    with h5py.File(single[rule]) as a, h5py.File(out) as b:
        for name in ("clients/accepted", "clients/weight", "clients/flags", "n_accepted", "model/theta"):
            assert np.array_equal(a[name][:], b[name][:], equal_nan=True), name


@pytest.mark.mpi
@needs_mpirun
def test_every_rule_under_mpi_equals_one_process(single: dict[str, Path], tmp_path: Path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tree_for({"name": "mean"})))
    grid = [{"aggregator.name": [rule], "aggregator.params": [tree_for({"name": rule})["aggregator"].get("params", {})]}
            for rule in RULES]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(
        {"base": "base.yaml", "out_dir": str(tmp_path / "mpi"), "grid": grid}))
    done = mpirun(["-n", "3", "python", "-m", "mpifl", "sweep", str(tmp_path / "sweep.yaml"), "--local", "--quiet"],
                  timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for index, rule in enumerate(RULES):
        (mpi,) = (tmp_path / "mpi").glob(f"*_{index:03d}_{rule}_*s3.h5")
        with h5py.File(single[rule]) as a, h5py.File(mpi) as b:
            for name in ("clients/accepted", "clients/flags", "n_accepted"):
                assert np.array_equal(a[name][:], b[name][:]), (rule, name)
            np.testing.assert_allclose(b["model/theta"][:], a["model/theta"][:], rtol=1e-5, atol=1e-6, err_msg=rule)


def test_diversefl_filter_in_front_of_another_rule(tmp_path: Path):
    cfg = from_tree(tree_for({"name": "median", "filters": ["diversefl"]}))
    run(cfg, tmp_path / "run.h5", progress=None)
    with h5py.File(tmp_path / "run.h5") as f:
        accepted, flags, byz = f["clients/accepted"][:], f["clients/flags"][:], f["clients/byzantine"][:]
        assert np.array_equal(accepted, flags == 0)  # only what the filter passed reached the median
        assert not (accepted & byz).any() and accepted.sum() >= 5 * 6  # sign flippers out, most honest in
        assert np.isnan(f["clients/weight"][:]).all()  # a coordinate-wise rule gives no client weights


def test_unknown_rule_is_refused_when_the_config_loads_naming_the_choices():
    with pytest.raises(ConfigError, match=r"aggregator.name='krun' is not one of .*krum.*Did you mean 'krum'"):
        resolve(from_tree(tree_for({"name": "krun"})))
    with pytest.raises(ConfigError,
                       match="aggregator.pre\\[0\\]='nmm' is not one of arc, bucketing, clipping, nnm. Did you mean 'nnm'"):
        resolve(from_tree(tree_for({"name": "median", "pre": ["nmm"]})))
    with pytest.raises(ConfigError, match="aggregator.params.beta is not a parameter of rule krum"):
        resolve(from_tree(tree_for({"name": "krum", "params": {"beta": 0.2}})))


def test_plugin_rule_from_a_file_runs_end_to_end(tmp_path: Path):
    from click.testing import CliRunner

    from mpifl.cli import main

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(tree_for({"name": "mean"})))
    plugin = Path(__file__).resolve().parents[1] / "examples" / "trimmed_norm_mean.py"
    result = CliRunner().invoke(main, ["train", "--plugin", str(plugin), "-c", str(tmp_path / "cfg.yaml"),
                                       "--set", "aggregator.name=norm_mean", "--set", "aggregator.params.factor=1.5",
                                       "--out", str(tmp_path / "run.h5"), "--quiet"])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "run.h5") as f:
        weight, accepted = f["clients/weight"][:], f["clients/accepted"][:]
        assert yaml.safe_load(f.attrs["config"])["aggregator"]["params"] == {"factor": 1.5}
        np.testing.assert_allclose(weight.sum(axis=1), 1.0, rtol=1e-5)
        assert np.array_equal(weight > 0, accepted)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    failed = CliRunner().invoke(main, ["train", "--plugin", str(broken), "--out", str(tmp_path / "x.h5")])
    assert failed.exit_code == 1 and "broken.py failed to import: RuntimeError: boom" in failed.output


@pytest.mark.parametrize(("rule", "pre", "params"), [
    ("median", ["nnm"], {"f": 1}),
    ("krum", ["bucketing"], {"f": 0, "s": 2}),  # 8 clients in buckets of 2: Krum sees 4 rows, needs > 2f + 2
    ("mean", ["nnm", "bucketing"], {"f": 1, "s": 3}),
])
def test_pre_aggregators_compose_in_front_of_a_rule(tmp_path: Path, rule: str, pre: list[str], params: dict):
    cfg = from_tree(tree_for({"name": rule, "pre": pre, "params": params}))
    result = run(cfg, tmp_path / "run.h5", progress=None)
    with h5py.File(tmp_path / "run.h5") as f:
        assert np.isfinite(f["model/theta"][:]).all() and np.isnan(f["clients/weight"][:]).all()
        assert np.array_equal(f["clients/accepted"][:], ~f["clients/invalid"][:])  # every usable client is mixed in
    assert 0 <= result.final.accuracy <= 1
