"""One registry from config name to implementation, for rules, pre-aggregators and filters.

Built-in implementations register themselves when :mod:`mpifl.rules` is imported; a researcher's own register the same
way from their file (``mpifl train --plugin my_rule.py``) or package (entry-point group ``mpifl.rules``). An unknown
name is refused when the config loads, naming the choices.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from ..errors import RegistryError

KINDS = ("rule", "pre", "filter", "attack")
ENTRY_POINT_GROUP = "mpifl.rules"
_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
_entry_points_loaded = False

T = TypeVar("T", bound=type)


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: make ``name`` a choice for ``kind`` ('rule', 'pre' or 'filter')."""
    if kind not in KINDS:
        raise RegistryError(f"unknown registry kind {kind!r}; choose one of {', '.join(KINDS)}.")

    def add(cls: T) -> T:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not cls:
            raise RegistryError(f"{kind} {name!r} is registered twice ({existing.__module__}, {cls.__module__}).")
        _REGISTRY[kind][name] = cls
        cls.registered_name = name  # type: ignore[attr-defined]
        return cls

    return add


def names(kind: str) -> tuple[str, ...]:
    _load_entry_points()
    return tuple(sorted(_REGISTRY[kind]))


def get(kind: str, name: str) -> type:
    """The implementation registered as ``name``; RegistryError naming the choices otherwise."""
    _load_entry_points()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise RegistryError(f"{name!r} is not a registered {kind}; choose one of {', '.join(names(kind))}.") from None


def load_plugin(path: str | Path) -> None:
    """Import a researcher's Python file; its ``@register`` decorators add its rules, filters or pre-aggregators."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"plug-in {path} does not exist.")
    module_name = f"mpifl_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"plug-in {path} is not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure in the user's file is reported as one line
        del sys.modules[module_name]
        raise RegistryError(f"plug-in {path} failed to import: {type(exc).__name__}: {exc}") from None


def _load_entry_points() -> None:
    """Import installed packages that declare the ``mpifl.rules`` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party package must say which one
            raise RegistryError(f"entry point {entry.name} ({entry.value}) of group {ENTRY_POINT_GROUP} failed to "
                                f"load: {type(exc).__name__}: {exc}") from None
