"""Filters: a per-client accept/reject decision in front of any rule (``aggregator.filter``).

DiverseFL's test (C1 > 0 and eps1 < C2 < eps2 against each client's guiding gradient, :mod:`mpifl.guiding`) is the
filter here; the server computes C1, C2 during screening (they are recorded for every rule with
``record_similarity``) and, when the filter is on, only the clients that pass reach the rule:
``aggregator: {name: median, filter: diversefl}``.
"""

from __future__ import annotations

from .registry import register


@register("filter", "diversefl")
class DiverseFLFilter:
    """Marks the ``diversefl`` filter as a choice; its decision is the flag mask the server computes."""
