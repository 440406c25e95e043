"""Every attack in a short run: one process and `mpirun -n 3` (one MPI job for all of them, through
`mpifl sweep --local`) give the same accepted sets and θ; the sleeper poisons the sample DiverseFL holds."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from mpifl import build, registry  # noqa: F401 - build registers the built-in choices
from mpifl.config import from_tree
from mpifl.train import run

from .conftest import small_tree
from .mpi_helpers import mpirun, needs_mpirun

TREE = small_tree(clients=8, rounds=4, byzantine={"model": "random", "k": 2},
                  aggregator={"name": "diversefl_plus"})
SLEEPERS = [0, 2]
#: (attack.name, attack.params, attack.knowledge, byzantine) of each point; one sweep entry each
SIMULATING = ("optimal_alie", "optimal_ipm")  # they simulate the server: refused behind DiverseFL's filter
POINTS = [(name, {}, "white_box", {}) for name in registry.names("attack") if name not in ("sleeper", *SIMULATING)] + [
    *((name, {}, "white_box", {"aggregator.name": "trmean", "aggregator.params": {}}) for name in SIMULATING),
    ("diversefl_adaptive", {"search": True}, "white_box", {}),
    ("diversefl_adaptive", {"search": True}, "realistic", {}),
    ("sleeper", {}, "white_box", {"byzantine.model": "fixed", "byzantine.clients": SLEEPERS}),
]


def label(point: tuple) -> str:  # type: ignore[type-arg]
    name, params, knowledge, _ = point
    return "-".join([name, *(f"{k}={v}" for k, v in params.items()), knowledge])


def overrides(point: tuple) -> dict:  # type: ignore[type-arg]
    name, params, knowledge, byzantine = point
    return {"attack.name": name, "attack.params": params, "attack.knowledge": knowledge, **byzantine}


def config(point: tuple):  # type: ignore[no-untyped-def,type-arg]
    tree = yaml.safe_load(yaml.safe_dump(TREE))
    for key, value in overrides(point).items():
        section, field = key.split(".")
        tree[section][field] = value
    return from_tree(tree)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, Path]:
    """Every point in one process, with one torch thread like each MPI rank of the comparison below (MPI_ENV): the
    optimal attacks' line search turns a last-bit difference of a multi-threaded reduction into a different scale."""
    folder = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {label(p): run(config(p), folder / f"{i}.h5", progress=None).path for i, p in enumerate(POINTS)}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("point", POINTS, ids=label)
def test_attack_runs_end_to_end(single: dict[str, Path], point: tuple):  # type: ignore[type-arg]
    with h5py.File(single[label(point)]) as f:
        assert f["round"][:].tolist() == [1, 2, 3, 4] and np.isfinite(f["model/theta"][:]).all()
        assert 0 <= f["test_accuracy"][-1] <= 1
        if point[0] == "nan":  # screening takes every NaN row out before the rule
            assert not (f["clients/accepted"][:] & f["clients/byzantine"][:]).any()


def test_sleeper_sample_is_poisoned_and_its_updates_agree_with_it(single: dict[str, Path]):
    with h5py.File(single[label(POINTS[-1])]) as f:
        byzantine, c1 = f["clients/byzantine"][:], f["clients/c1"][:]
        assert (byzantine[:, SLEEPERS]).all() and byzantine.sum() == 4 * len(SLEEPERS)
        assert (c1[:, SLEEPERS] == 1).all()  # flipped batches agree with the flipped sample: C1 passes


@pytest.mark.mpi
@needs_mpirun
def test_every_attack_under_mpi_equals_one_process(single: dict[str, Path], tmp_path: Path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TREE))
    grid = [{key: [value] for key, value in overrides(p).items()} for p in POINTS]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "out_dir": str(tmp_path / "mpi"),
                                                         "grid": grid}))
    done = mpirun(["-n", "3", "python", "-m", "mpifl", "sweep", str(tmp_path / "sweep.yaml"), "--local", "--quiet"],
                  timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for index, point in enumerate(POINTS):
        (mpi,) = (tmp_path / "mpi").glob(f"*_{index:03d}_*.h5")
        with h5py.File(single[label(point)]) as a, h5py.File(mpi) as b:
            for name in ("clients/accepted", "clients/flags", "n_accepted"):
                assert np.array_equal(a[name][:], b[name][:]), (label(point), name)
            np.testing.assert_allclose(b["model/theta"][:], a["model/theta"][:], rtol=1e-5, atol=1e-6,
                                       err_msg=label(point))
