"""Device mistakes the CPU-only CI can still catch (a GPU run is `python benchmarks/gpu_check.py`).

Every tensor of a rank lives on the device :func:`mpifl.placement.resolve` chose. The static check below finds tensors
created without a device outside the places that are host-side by design; the server test checks that every tensor
it hands on is on the update matrix's device and that only the round record leaves it.
"""

import ast
from pathlib import Path

import numpy as np
import torch


from .conftest import server_with, small_config

SRC = Path(__file__).resolve().parents[1] / "src" / "mpifl"
FACTORIES = {"zeros", "ones", "full", "empty", "tensor", "as_tensor", "arange", "linspace", "eye", "rand", "randn",
             "randint", "randperm"}
# Host-side by design: the ground-truth Byzantine and participation masks (the same on every rank, moved where they
# are used) and datasets before a rank has picked and placed its rows.
HOST_MODULES = {"byzantine.py", "participation.py", "data/datasets.py", "data/partition.py", "data/population.py"}


def deviceless_factories(path: Path, root: Path = SRC) -> list[str]:
    """torch.<factory>(...) calls with neither ``device=`` nor ``generator=`` (seeded draws are made on the CPU and
    moved, mpifl.rng) in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and not {k.arg for k in node.keywords} & {"device", "generator"}):
            found.append(f"{path.relative_to(root)}:{node.lineno} torch.{node.func.attr}")
    return found


def test_no_module_creates_tensors_without_a_device():
    found = [hit for f in sorted(SRC.rglob("*.py")) if str(f.relative_to(SRC)) not in HOST_MODULES
             for hit in deviceless_factories(f)]
    assert found == []


def test_the_check_finds_a_deviceless_tensor(tmp_path: Path):
    bad = tmp_path / "probe.py"
    bad.write_text("import torch\nx = torch.zeros(3)\ny = torch.zeros(3, device='cpu')\n"
                   "z = torch.randn(3, generator=torch.Generator())\n")
    assert deviceless_factories(bad, tmp_path) == ["probe.py:2 torch.zeros"]


def test_server_keeps_everything_on_the_update_device_and_records_numpy():
    z = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [-1.0, -2.0], [0.9, 2.1]])
    theta = torch.tensor([1.0, 2.0])
    server = server_with(small_config(), theta.expand_as(z))
    screened = server.examine(z, theta)
    decision = server.decide(screened, theta, torch.tensor([False, True, True, False]), 1)
    tensors = [screened.clean, screened.flags, screened.c1, screened.c2, screened.update_norm, decision.weight,
               screened.guiding_norm, decision.accepted, decision.direction]
    assert {t.device for t in tensors} == {z.device}
    record = screened.record_arrays()
    assert all(isinstance(v, np.ndarray) for v in record.values())
    assert decision.accepted.tolist() == [True, False, False, True]  # NaN row invalid, the flipped one fails C1
    assert record["c1"].tolist() == [1, 0, -1, 1] and record["invalid"].tolist() == [False, True, False, False]
