"""The house's structure: no import circle, one registry whose every kind refuses an unknown name in one line, and
one Params object per rule read by both sides of a round."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from mpifl import build, registry
from mpifl.clients import ClientData
from mpifl.config import ConfigError, load
from mpifl.data.datasets import Scaling
from mpifl.models import FlatModel
from mpifl.models import build as build_model

SRC = Path(build.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The mpifl modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks do not run)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def test_no_module_of_mpifl_imports_itself_through_others():
    edges = graph()
    assert len(edges) > 40 and "mpifl.build" in edges["mpifl.train"]  # the walk sees the real house
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_ground_floor_imports_nothing_above_it():
    edges = graph()
    assert edges["mpifl.errors"] == set()
    assert edges["mpifl.registry"] == {"mpifl.errors"}
    assert edges["mpifl.config"] == {"mpifl.errors"}


@pytest.mark.parametrize(("override", "key", "kind"), [
    ("aggregator.name=krumm", "aggregator.name", "rule"),
    ("aggregator.pre=[bucketting]", "aggregator.pre[0]", "pre"),
    ("aggregator.filters=[diverse]", "aggregator.filters[0]", "filter"),
    ("attack.name=signflip", "attack.name", "attack"),
    ("model.name=mpl", "model.name", "model"),
    ("data.dataset=mnits", "data.dataset", "dataset"),
    ("data.partition=shard", "data.partition", "partition"),
    ("byzantine.model=randomly", "byzantine.model", "byzantine"),
    ("train.lr.schedule=constnt", "train.lr.schedule", "lr_schedule"),
])
def test_every_kind_refuses_an_unknown_name_in_one_line_naming_the_choices(override: str, key: str, kind: str):
    with pytest.raises(ConfigError) as err:
        build.resolve(load(None, [override]))
    message = str(err.value)
    value = override.partition("=")[2].strip("[]")
    assert message.startswith(f"{key}='{value}' is not one of {', '.join(registry.names(kind))}.")
    assert "\n" not in message and "Did you mean" in message


def test_every_registry_kind_is_covered_by_a_config_key_or_a_rule():
    assert set(registry.KINDS) == {"rule", "pre", "filter", "attack", "clients", "model", "dataset", "partition",
                                   "byzantine", "lr_schedule"}
    needed = {registry.get("rule", r).needs.clients for r in registry.names("rule")}
    assert needed == set(registry.names("clients")) == {"gradient", "noisy", "model_copies"}


def test_rsa_delta_reaches_the_server_and_the_clients_as_one_params_object():
    cfg = load(None, ["aggregator.name=rsa", "aggregator.params.delta=0.5", "clients=2", "byzantine.k=0",
                      "data.dataset=synthetic",
                      "data.synthetic_train=40", "data.synthetic_test=10", "model.name=softmax"])
    pipe = build.pipeline(cfg)
    flat = FlatModel(build_model("softmax", (1, 28, 28), 10))
    theta0 = torch.zeros(flat.dim)
    x, y = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (20,))
    scaling = Scaling("unit", torch.zeros(1), torch.ones(1))
    clients = pipe.clients(cfg, flat, [ClientData(0, x, y, 5)], 10, theta0, 5, scaling, pipe.attack,
                           pipe.rule.params)
    assert clients.rule_params is pipe.rule.params and pipe.rule.params.delta == 0.5
    server_theta = torch.full((flat.dim,), 0.25)
    honest = torch.zeros(2, dtype=torch.bool)
    grads = clients.gradients(clients.models.clone(), 1, honest) / cfg.clients
    clients.messages(server_theta, 1, honest, lr=0.1)
    # theta_j <- theta_j - mu (grad / n + delta sign(theta_j - theta_M)): the penalty is delta = 0.5 per coordinate
    torch.testing.assert_close(clients.models[0], theta0 - 0.1 * (grads[0] - 0.5), rtol=0, atol=1e-7)
