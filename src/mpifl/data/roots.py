"""Where datasets live and the error for one that cannot be read: the part of mpifl.data the command line needs
before it parses its arguments, kept free of torch so that `mpifl --help` starts at once."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "MPIFL_DATA_ROOT"


class DataError(RuntimeError):
    """A dataset that cannot be read; the message names the missing files and the fix."""


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: the argument, else ``$MPIFL_DATA_ROOT``, else ``./data``."""
    return Path(root or os.environ.get(DATA_ROOT_ENV) or "data")
