"""The ground floor: every error a user can cause, in one module that imports nothing of mpifl.

Each is a one-line message that names the key or file at fault and a fix; the command line prints it as such and
exits non-zero, never with a traceback. Modules at any height raise them without importing the config or a registry.
"""

from __future__ import annotations

from typing import Any

#: The longest quotation of an offending value in a message: a hostile config (a YAML alias bomb) must not turn one
#: error line into hundreds of megabytes.
QUOTE_LIMIT = 80


class ConfigError(ValueError):
    """A configuration value that cannot describe a run; the message names the key."""


class RegistryError(ValueError):
    """An unknown name, a name registered twice, or a plug-in that cannot be loaded."""


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters (with its full length said), without building the whole repr of
    a huge nested value first."""
    text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else f"{text[:limit]}… ({type(value).__name__})"


def _bounded_repr(value: Any, budget: int) -> str:
    """A prefix of ``repr(value)`` of at least ``budget`` characters where it has that many; containers are walked
    element by element and stop once the budget is spent, so a deeply shared structure costs O(budget)."""
    if isinstance(value, dict):
        parts, used = [], 1
        for key, item in value.items():
            part = f"{_bounded_repr(key, budget - used)}: {_bounded_repr(item, budget - used)}"
            parts.append(part)
            used += len(part) + 2
            if used > budget:
                break
        return "{" + ", ".join(parts) + ("}" if used <= budget else "")
    if isinstance(value, (list, tuple)):
        parts, used = [], 1
        for item in value:
            part = _bounded_repr(item, budget - used)
            parts.append(part)
            used += len(part) + 2
            if used > budget:
                break
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        return open_ + ", ".join(parts) + (close if used <= budget else "")
    text = repr(value)
    return text if len(text) <= budget else text[:budget]
