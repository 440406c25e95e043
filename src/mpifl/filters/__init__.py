"""Per-client filters in front of the rule: each judges which of the round's rows the rule may use.

Filters run in the order ``aggregator.filters`` lists them (a rule may imply one, as ``diversefl`` implies DiverseFL's),
each on the rows the ones before it accepted. DiverseFL (:mod:`.diversefl`) is one filter among others; a researcher's
is one file registered with ``@register("filter", name)`` (see ``examples/``).
"""

from . import diversefl
from .base import Filter, FilterSetup, FilterView, Verdict

__all__ = ["Filter", "FilterSetup", "FilterView", "Verdict", "diversefl"]
