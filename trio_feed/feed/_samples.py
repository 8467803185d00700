"""Recent measurements and their percentiles, in fixed memory.

A :class:`Samples` keeps the last ``size`` values in a ring (an
``array('d')``: no object per sample) and sorts a copy only when asked for
percentiles, which ``statistics()`` does, not the data path.  The sorted copy
is kept until the next value arrives, so several percentiles, or a caller
polling ``statistics()`` in a loop, cost one sort per new data, not one per call.  Percentiles of
the *recent* window are what an operator wants from a feed that runs for
days; ``count`` and ``maximum`` cover the whole life.
"""

from __future__ import annotations

import math
from array import array

__all__ = ["Samples"]


class Samples:
    """The last ``size`` values of a measurement."""

    __slots__ = ("_next", "_ring", "_sorted", "count", "maximum", "size")

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._ring = array("d")
        self._next = 0
        self._sorted: list[float] | None = None  # the window, sorted; None once stale
        #: Values recorded over the whole life, and the largest of them.
        self.count = 0
        self.maximum: float | None = None

    def add(self, value: float) -> None:
        self._sorted = None
        if len(self._ring) < self.size:
            self._ring.append(value)
        else:
            self._ring[self._next] = value
            self._next = (self._next + 1) % self.size
        self.count += 1
        if self.maximum is None or value > self.maximum:
            self.maximum = value

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0-100, nearest rank) of the window; ``None`` if empty."""
        if not self._ring:
            return None
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = sorted(self._ring)
        # Nearest rank: the smallest value with at least p% of the window at or
        # below it, i.e. rank ceil(p * n / 100), computed exactly (no float error).
        from fractions import Fraction  # here: statistics() is rare, the import is not free

        rank = math.ceil(Fraction(p) * len(ordered) / 100)
        return ordered[min(max(rank, 1), len(ordered)) - 1]
