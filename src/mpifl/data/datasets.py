"""Image datasets as uint8 tensors, read from a torchvision-layout data root.

Memory follows ownership: MNIST and Fashion-MNIST images are memory-mapped from their IDX files, so a rank's resident
memory holds only the rows it indexes (its clients' shards, rank 0's test set and DiverseFL samples), and images
stay uint8 until a rank has picked them (see :func:`to_float`). torchvision is imported only to download; reading it
would cost every rank 170 MB of resident memory for nothing. CIFAR is read here from the python-pickle batches because
torchvision insists on the official MD5s, which rules out the small synthetic files tests write.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..registry import choose, register
from . import safe_pickle
from .roots import DATA_ROOT_ENV, DataError, resolve_root  # noqa: F401 - re-exported: mpifl.data.datasets.DataError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels", 100),
}
_IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


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

    def channel_stats(self, rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and (unbiased) std of the training images in [0, 1], for ``scale: standardize``.

        Exact integer sums of the uint8 pixels, ``rows`` images at a time: a float64 copy of the training set would
        be 376 MB on MNIST on every rank, and the sums are exact, so the result does not depend on the chunking.
        """
        total = torch.zeros(self.train_x.shape[1], dtype=torch.int64)
        squares = torch.zeros_like(total)
        for start in range(0, len(self.train_x), rows):
            x = self.train_x[start: start + rows].to(torch.int64)
            total += x.sum((0, 2, 3))
            squares += (x * x).sum((0, 2, 3))
        count = self.train_x.shape[0] * self.train_x.shape[2] * self.train_x.shape[3]
        mean = total.double() / count
        var = (squares.double() - total.double() * mean) / (count - 1)
        return (mean / 255.0).float(), (var.sqrt() / 255.0).float()


def to_float(x: torch.Tensor, scale: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 model inputs in the configured scale (docs/paper-notes.md: Fig. 2 uses raw 0..255).

    In place on the one float copy: temporaries of a client's whole shard would outlive the call in the allocator.
    """
    return scale_(x.to(torch.float32), scale, mean, std)


def scale_(xf: torch.Tensor, scale: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """:func:`to_float`'s scaling, in place on float32 images [..., C, H, W] that hold the uint8 values."""
    if scale == "raw":
        return xf
    xf.div_(255.0)
    if scale == "unit":
        return xf
    return xf.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


@dataclass(frozen=True)
class Scaling:
    """The configured input scaling with its statistics on one device, applied where a batch is drawn.

    Ranks keep images as uint8 and scale each mini-batch (or evaluation chunk) when it is used: a quarter of the
    memory of float shards, and the same numbers, since the scaling is elementwise.
    """

    scale: str
    mean: torch.Tensor
    std: torch.Tensor

    def to(self, device: torch.device) -> Scaling:
        return Scaling(self.scale, self.mean.to(device), self.std.to(device))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return to_float(x, self.scale, self.mean, self.std)

    def into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """uint8 images ``x`` scaled into the float32 tensor ``out`` of the same shape (a slot of a stacked batch):
        one conversion pass fewer than scaling a copy and then copying it."""
        return scale_(out.copy_(x), self.scale, self.mean, self.std)


def load(name: str, root: str | os.PathLike[str] | None, download: bool, synthetic_sizes: tuple[int, int]) -> Dataset:
    """Load the dataset registered as ``name`` (``data.dataset``). A loader takes (name, data root, download,
    synthetic sizes) and may ignore what it does not use."""
    return choose("data.dataset", "dataset", name)(name, root, download, synthetic_sizes)


def missing_files(name: str, root: Path) -> list[Path]:
    """The files of dataset ``name`` (mnist, fashion_mnist, cifar10, cifar100) not yet under ``root``."""
    if name in _IDX_FOLDERS:
        files = [root / _IDX_FOLDERS[name] / "raw" / f for f in MNIST_FILES]
    else:
        folder, train_files, test_file, _, _ = _CIFAR[name]
        files = [root / folder / f for f in [*train_files, test_file]]
    return [f for f in files if not f.exists()]


def _missing_error(name: str, root: Path, missing: list[Path], download: bool) -> DataError:
    listed = ", ".join(str(p) for p in missing)
    why = "download failed or is not possible offline" if download else "data.download is false"
    return DataError(
        f"{name} not found under {root} ({why}); missing: {listed}. Fix: run `mpifl data fetch {name} --root {root}`, "
        f"or point --data-root / ${DATA_ROOT_ENV} at a folder that holds it."
    )


@register("dataset", "mnist")
@register("dataset", "fashion_mnist")
def _load_idx(name: str, root: str | os.PathLike[str] | None, download: bool,
              synthetic_sizes: tuple[int, int]) -> Dataset:
    root = resolve_root(root)
    raw = root / _IDX_FOLDERS[name] / "raw"
    missing = missing_files(name, root)
    if missing and download:
        from torchvision import datasets

        cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
        try:
            cls(str(root), train=True, download=True)
        except Exception:  # noqa: BLE001 - any network failure means "not available", reported below
            pass
        missing = missing_files(name, root)
    if missing:
        raise _missing_error(name, root, missing, download)
    train_x, train_y, test_x, test_y = (read_idx(raw / f) for f in MNIST_FILES)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y) or train_x.ndim != 3 or test_x.ndim != 3:
        raise DataError(f"{name} files under {raw} do not fit together (image and label counts or shapes differ); "
                        "delete them and fetch again.")
    return Dataset(name, torch.from_numpy(train_x).unsqueeze(1), torch.from_numpy(train_y.astype(np.int64)),
                   torch.from_numpy(test_x).unsqueeze(1), torch.from_numpy(test_y.astype(np.int64)), 10)


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (LeCun's format) as a copy-on-write memory map: pages are read when a row is first indexed."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
        if len(head) < 4 or head[:3] != b"\0\0\x08" or not 1 <= head[3] <= 4:
            raise DataError(f"{path} is not a uint8 IDX file (header {head.hex() or 'empty'}); delete it and fetch "
                            "again.")
        ndim = head[3]
        dims_raw = fh.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path} is truncated inside its header; delete it and fetch again.")
    shape = struct.unpack(f">{ndim}I", dims_raw)
    offset = 4 + 4 * ndim
    if size != offset + math.prod(shape):
        raise DataError(f"{path} holds {size - offset} bytes of data; its header promises {math.prod(shape)} "
                        f"{'x'.join(map(str, shape))}. Delete it and fetch again.")
    return np.memmap(path, dtype=np.uint8, mode="c", offset=offset, shape=shape)


@register("dataset", "cifar10")
@register("dataset", "cifar100")
def _load_cifar(name: str, root: str | os.PathLike[str] | None, download: bool,
                synthetic_sizes: tuple[int, int]) -> Dataset:
    root = resolve_root(root)
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
    """Read CIFAR's python-pickle batches with the restricted unpickler: local files may hold arrays, never code."""
    xs, ys = [], []
    for f in files:
        try:
            with open(f, "rb") as fh:
                entry = safe_pickle.load(fh, source=str(f), encoding="bytes")
            xs.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        except safe_pickle.UnsafePickleError as exc:
            raise DataError(f"{exc}; not a CIFAR batch file, delete it and fetch again.") from None
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


register("dataset", "synthetic")(lambda name, root, download, synthetic_sizes: synthetic(*synthetic_sizes))
