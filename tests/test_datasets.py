import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mpifl.data import datasets
from mpifl.data.datasets import DataError
from mpifl.data.fetch import MNIST_MD5, md5, mnist_from_pickle, write_idx


def write_fake_mnist(root: Path, n_train: int = 50, n_test: int = 20) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))


def write_fake_cifar(root: Path, name: str, n: int = 30) -> None:
    folder, train_files, test_file, key, classes = datasets._CIFAR[name]
    base = root / folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for f in [*train_files, test_file]:
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(np.arange(n) % classes)}
        with open(base / f, "wb") as fh:
            pickle.dump(entry, fh)


def test_idx_files_load_through_torchvision(tmp_path: Path):
    write_fake_mnist(tmp_path)
    ds = datasets.load("mnist", tmp_path, download=False, synthetic_sizes=(0, 0))
    assert ds.train_x.shape == (50, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_y.tolist() == [i % 10 for i in range(20)] and ds.num_classes == 10


@pytest.mark.parametrize(("name", "batches", "classes"), [("cifar10", 6, 10), ("cifar100", 2, 100)])
def test_cifar_pickle_batches_load(tmp_path: Path, name: str, batches: int, classes: int):
    write_fake_cifar(tmp_path, name)
    ds = datasets.load(name, tmp_path, download=False, synthetic_sizes=(0, 0))
    assert ds.train_x.shape == (30 * (batches - 1), 3, 32, 32) and ds.test_x.shape == (30, 3, 32, 32)
    assert ds.num_classes == classes and int(ds.train_y.max()) == min(29, classes - 1)


def test_missing_dataset_names_the_files_and_the_fix(tmp_path: Path):
    with pytest.raises(DataError) as err:
        datasets.load("mnist", tmp_path, download=False, synthetic_sizes=(0, 0))
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and "data.download is false" in message
    assert f"mpifl data fetch mnist --root {tmp_path}" in message and "MPIFL_DATA_ROOT" in message


def test_truncated_cifar_file_is_reported(tmp_path: Path):
    write_fake_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="test_batch is not a CIFAR batch file"):
        datasets.load("cifar10", tmp_path, download=False, synthetic_sizes=(0, 0))


def test_data_root_resolution(monkeypatch):
    monkeypatch.setenv("MPIFL_DATA_ROOT", "/somewhere")
    assert datasets.resolve_root(None) == Path("/somewhere")
    assert datasets.resolve_root("/explicit") == Path("/explicit")
    monkeypatch.delenv("MPIFL_DATA_ROOT")
    assert datasets.resolve_root(None) == Path("data")


def test_scales():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    assert datasets.to_float(x, "raw", mean, std).flatten().tolist() == [0.0, 255.0]
    assert datasets.to_float(x, "unit", mean, std).flatten().tolist() == [0.0, 1.0]
    assert datasets.to_float(x, "standardize", mean, std).flatten().tolist() == [-2.0, 2.0]


def test_synthetic_is_fixed_and_balanced():
    a, b = datasets.synthetic(100, 20), datasets.synthetic(100, 20)
    assert torch.equal(a.train_x, b.train_x) and a.train_x.shape == (100, 1, 28, 28)
    assert torch.bincount(a.train_y).tolist() == [10] * 10


def test_rebuilt_mnist_with_wrong_bytes_is_refused_and_nothing_is_kept(tmp_path: Path):
    x = np.zeros((3, 784), dtype=np.float32)
    y = np.zeros(3, dtype=np.int64)
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as fh:
        pickle.dump(((x, y), (x, y), (x, y)), fh)
    (tmp_path / "MNIST").mkdir()
    with pytest.raises(DataError, match="does not match the official MD5s"):
        mnist_from_pickle(tmp_path / "mnist.pkl.gz", tmp_path / "MNIST" / "raw")
    assert not (tmp_path / "MNIST" / "raw").exists() and list((tmp_path / "MNIST").iterdir()) == []


def test_real_mnist_is_the_official_bytes(real_mnist: Path):
    raw = real_mnist / "MNIST" / "raw"
    assert {name: md5(raw / name) for name in MNIST_MD5} == MNIST_MD5
    ds = datasets.load("mnist", real_mnist, download=False, synthetic_sizes=(0, 0))
    assert len(ds.train_y) == 60000 and len(ds.test_y) == 10000
    mean, std = ds.channel_stats()
    assert float(mean) == pytest.approx(0.1307, abs=1e-4) and float(std) == pytest.approx(0.3081, abs=1e-4)
