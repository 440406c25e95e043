"""Image datasets as uint8 tensors, read from a torchvision-layout data root.

Images stay uint8 until a rank has picked the clients it hosts (see :func:`to_float`), so 21 ranks do not each hold a
float copy of CIFAR. MNIST and Fashion-MNIST are read by torchvision; CIFAR is read here from the python-pickle
batches because torchvision insists on the official MD5s, which rules out the small synthetic files tests write.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATA_ROOT_ENV = "MPIFL_DATA_ROOT"

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels", 100),
}
_IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


class DataError(RuntimeError):
    """A dataset that cannot be read; the message names the missing files and the fix."""


@dataclass(frozen=True)
class Dataset:
    """Train and test images as uint8 [N, C, H, W] with int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images in [0, 1], for ``scale: standardize``."""
        x = self.train_x.to(torch.float64) / 255.0
        dims = (0, 2, 3)
        return x.mean(dims).float(), x.std(dims).float()


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: the argument, else ``$MPIFL_DATA_ROOT``, else ``./data``."""
    return Path(root or os.environ.get(DATA_ROOT_ENV) or "data")


def to_float(x: torch.Tensor, scale: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 model inputs in the configured scale (NOTES.md: Fig. 2 uses raw 0..255)."""
    xf = x.to(torch.float32)
    if scale == "raw":
        return xf
    xf = xf / 255.0
    if scale == "unit":
        return xf
    return (xf - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def load(name: str, root: str | os.PathLike[str] | None, download: bool, synthetic_sizes: tuple[int, int]) -> Dataset:
    """Load a dataset by config name (see ``config.DATASETS``)."""
    if name == "synthetic":
        return synthetic(*synthetic_sizes)
    path = resolve_root(root)
    if name in _IDX_FOLDERS:
        return _load_idx(name, path, download)
    return _load_cifar(name, path, download)


def _missing_error(name: str, root: Path, missing: list[Path], download: bool) -> DataError:
    listed = ", ".join(str(p) for p in missing)
    why = "download failed or is not possible offline" if download else "data.download is false"
    return DataError(
        f"{name} not found under {root} ({why}); missing: {listed}. Fix: run `mpifl data fetch {name} --root {root}`, "
        f"or point --data-root / ${DATA_ROOT_ENV} at a folder that holds it."
    )


def _load_idx(name: str, root: Path, download: bool) -> Dataset:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    raw = root / _IDX_FOLDERS[name] / "raw"
    missing = [raw / f for f in MNIST_FILES if not (raw / f).exists()]
    if missing and download:
        try:
            cls(str(root), train=True, download=True)
        except Exception:  # noqa: BLE001 - any network failure means "not available", reported below
            pass
        missing = [raw / f for f in MNIST_FILES if not (raw / f).exists()]
    if missing:
        raise _missing_error(name, root, missing, download)
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign IDX file
        raise DataError(f"{name} files under {raw} cannot be read ({exc}); delete them and fetch again.") from None
    return Dataset(name, train.data.unsqueeze(1).contiguous(), train.targets.long(),
                   test.data.unsqueeze(1).contiguous(), test.targets.long(), 10)


def _load_cifar(name: str, root: Path, download: bool) -> Dataset:
    folder, train_files, test_file, label_key, classes = _CIFAR[name]
    base = root / folder
    files = [base / f for f in [*train_files, test_file]]
    missing = [f for f in files if not f.exists()]
    if missing and download:
        from torchvision import datasets

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            cls(str(root), train=True, download=True)
        except Exception:  # noqa: BLE001 - reported below
            pass
        missing = [f for f in files if not f.exists()]
    if missing:
        raise _missing_error(name, root, missing, download)
    train_x, train_y = _read_cifar_batches(files[:-1], label_key)
    test_x, test_y = _read_cifar_batches(files[-1:], label_key)
    return Dataset(name, train_x, train_y, test_x, test_y, classes)


def _read_cifar_batches(files: list[Path], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for f in files:
        try:
            with open(f, "rb") as fh:
                entry = pickle.load(fh, encoding="bytes")  # the CIFAR format itself; user-provided local files
            xs.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        except Exception as exc:  # noqa: BLE001 - truncated or foreign file
            raise DataError(f"{f} is not a CIFAR batch file ({exc}); delete it and fetch again.") from None
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def synthetic(n_train: int, n_test: int, num_classes: int = 10, shape: tuple[int, int, int] = (1, 28, 28),
              seed: int = 0) -> Dataset:
    """A learnable MNIST-shaped stand-in: each class is a fixed random template plus pixel noise.

    Fixed seed, so runs with different training seeds see the same data, like a real dataset.
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand((num_classes, *shape), generator=g) * 255.0

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        noise = torch.randn((n, *shape), generator=g) * 60.0
        x = (templates[y] + noise).clamp(0, 255).to(torch.uint8)
        return x, y

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, num_classes)
