"""Server-side rules, pre-aggregators and filters, chosen by name in the config (see :mod:`.registry`).

Importing this package registers the built-in ones; a researcher's own register from their file
(``mpifl train --plugin FILE``) or package (entry-point group ``mpifl.rules``).
"""

from . import (bulyan, classic, clipping, diversefl, diversefl_plus, dnc, fltrust, geomed, krum, preaggregators,
               signguard)
from .base import Decision, NoParams, PreAggregator, RoundView, Rule, TooFewUpdates
from .registry import RegistryError, get, load_plugin, names, register

__all__ = ["Decision", "NoParams", "PreAggregator", "RegistryError", "RoundView", "Rule", "TooFewUpdates", "bulyan",
           "classic", "clipping", "diversefl", "diversefl_plus", "dnc", "fltrust", "geomed", "get", "krum",
           "load_plugin", "names", "preaggregators", "register", "signguard"]
