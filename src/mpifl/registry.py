"""One registry from config name to implementation, for every choice a config makes.

Kinds: rules, pre-aggregators and filters of the server's pipeline; attacks (client side and rank 0); the clients a
rule needs (plain gradients, noisy gradients, model copies); models, datasets, partitions, Byzantine schedules and
learning-rate schedules. Built-in implementations register themselves when their module is imported
(:mod:`mpifl.build` imports them all); a researcher's own register the same way from their file
(``mpifl train --plugin my_filter.py``) or package (entry-point group ``mpifl.plugins``). This module sits on the
ground floor: it imports nothing of mpifl but its errors, so any module can register without an import circle.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, RegistryError, quoted

KINDS = ("rule", "pre", "filter", "attack", "clients", "model", "dataset", "partition", "byzantine", "lr_schedule")
ENTRY_POINT_GROUP = "mpifl.plugins"
_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_entry_points_loaded = False

T = TypeVar("T")


@dataclass(frozen=True)
class NoParams:
    """The ``Params`` of a plug-in without parameters of its own (its part of the config's ``params`` stays empty)."""


def register(kind: str, name: str) -> Callable[[T], T]:
    """Decorator (class or function): make ``name`` a choice for ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise RegistryError(f"unknown registry kind {kind!r}; choose one of {', '.join(KINDS)}.")

    def add(obj: T) -> T:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not obj:
            raise RegistryError(f"{kind} {name!r} is registered twice ({existing.__module__}, {obj.__module__}).")
        _REGISTRY[kind][name] = obj
        obj.registered_name = name  # type: ignore[attr-defined]
        return obj

    return add


def names(kind: str) -> tuple[str, ...]:
    _load_entry_points()
    return tuple(sorted(_REGISTRY[kind]))


def get(kind: str, name: str) -> Any:
    """The implementation registered as ``name``; RegistryError naming the choices otherwise."""
    _load_entry_points()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise RegistryError(f"{name!r} is not a registered {kind}; choose one of {', '.join(names(kind))}.") from None


def choose(key: str, kind: str, name: str) -> Any:
    """The implementation a config value names, or a one-line ConfigError naming the key, the choices and the
    closest one."""
    _load_entry_points()
    if isinstance(name, str) and name in _REGISTRY[kind]:
        return _REGISTRY[kind][name]
    choices = names(kind)
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{key}={quoted(name)} is not one of {', '.join(choices)}.{hint}")


def load_plugin(path: str | Path) -> None:
    """Import a researcher's Python file; its ``@register`` decorators add its choices."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"plug-in {path} does not exist.")
    module_name = f"mpifl_plugin_{path.stem}"
    loaded = sys.modules.get(module_name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path.resolve():
        return  # the same file again (a second run in one process): its choices are registered already
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
    """Import installed packages that declare the ``mpifl.plugins`` entry-point group (once)."""
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
