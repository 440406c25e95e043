"""The experiment configs shipped with mpifl (the repository's configs/, installed as package data), by name.

`mpifl train -c fig2_mnist_softmax` works from any folder and from an installed wheel, where configs/ is not beside
the user; a path keeps meaning that file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError

SUFFIX = ".yaml"


def folder() -> Path:
    """Where the bundled configs are: inside the installed package (a link to configs/ in a checkout)."""
    return Path(str(resources.files("mpifl") / "configs"))


def names() -> list[str]:
    """Every bundled config's name, sweeps as ``sweeps/NAME``."""
    root = folder()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob(f"*{SUFFIX}"))


def resolve(given: str) -> str:
    """``given`` when it is a file or reads as a path (load then says why it cannot be read); else the bundled config
    of that name, or ConfigError pointing to `mpifl configs`."""
    if Path(given).is_file() or given.endswith((SUFFIX, ".yml")):
        return given
    candidate = folder() / (given + SUFFIX)
    if candidate.is_file():
        return str(candidate)
    raise ConfigError(f"no config file {given} and no bundled config of that name; `mpifl configs` lists them.")
