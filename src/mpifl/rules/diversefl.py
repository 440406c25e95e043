"""``diversefl``: the average of the updates DiverseFL's filter accepted (eq. 13); choosing it turns the filter on.

The filter itself (samples, guiding gradients, criteria) is :mod:`mpifl.filters.diversefl`.
"""

from __future__ import annotations

from ..registry import register
from .base import Needs
from .classic import Mean


@register("rule", "diversefl")
class DiverseFL(Mean):
    """DiverseFL (eq. 13): the plain mean of the rows its filter let through."""

    needs = Needs(filter="diversefl")
