"""Server-side rules and pre-aggregators, chosen by name in the config (registry kinds ``rule`` and ``pre``).

Importing this package registers the built-in ones; a researcher's own register from their file
(``mpifl train --plugin FILE``) or package (entry-point group ``mpifl.plugins``) with :func:`mpifl.registry.register`.
"""

from . import (bulyan, caf, classic, clipping, diversefl, diversefl_plus, dnc, fltrust, geomed, krum, neighbours,
               norm_clipping, preaggregators, signguard, subsets)
from .base import Decision, Needs, PreAggregator, RoundView, Rule, TooFewUpdates

__all__ = ["Decision", "Needs", "PreAggregator", "RoundView", "Rule", "TooFewUpdates", "bulyan", "caf", "classic",
           "clipping", "diversefl", "diversefl_plus", "dnc", "fltrust", "geomed", "krum", "neighbours", "norm_clipping",
           "preaggregators", "signguard", "subsets"]
