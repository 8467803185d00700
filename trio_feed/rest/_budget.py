"""The REQUEST_WEIGHT budget every REST request of one process goes through.

See the package docstring for why a sliding window, and for sharing one
budget between the order books and a feed's back-fill.
"""

from __future__ import annotations

import math
from collections import deque

import trio

from ..binance._limits import SPOT

__all__ = ["WeightBudget"]


class WeightBudget:
    """At most ``limit`` request weight in any ``window`` seconds, admitted in FIFO order.

    See ``trio_feed.rest`` for why a sliding window.  Uses trio's clock,
    so ``trio.testing.MockClock`` drives it.
    """

    def __init__(self, limit: int = SPOT.weight_limit, window: float = 60.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = window
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0
        self._paused_until = -math.inf
        self._lock = trio.Lock()
        self.peak = 0
        self.waits = 0
        #: Weight admitted by :meth:`acquire` since the budget was made, all callers.
        self.admitted = 0

    def used(self) -> int:
        """Weight admitted within the last ``window`` seconds."""
        self._expire(trio.current_time())
        return self._used

    def _expire(self, now: float) -> None:
        log = self._log
        while log and log[0][0] <= now - self.window:
            self._used -= log.popleft()[1]

    def _record(self, now: float, weight: int) -> None:
        self._log.append((now, weight))
        self._used += weight
        self.peak = max(self.peak, self._used)

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` fits in the window, then count it.

        Raises ``ValueError`` if ``weight`` exceeds ``limit``: it would never fit.
        """
        if weight > self.limit:
            raise ValueError(f"weight {weight} exceeds the budget of {self.limit}")
        waited = self._lock.locked()  # queued behind an earlier request
        async with self._lock:
            while True:
                now = trio.current_time()
                if now < self._paused_until:
                    waited = True
                    await trio.sleep_until(self._paused_until)
                    continue
                self._expire(now)
                excess = self._used + weight - self.limit
                if excess <= 0:
                    break
                # Sleep until enough of the oldest entries have left the window.
                freed = 0
                for stamp, spent in self._log:  # noqa: B007 (stamp is used after the loop)
                    freed += spent
                    if freed >= excess:
                        break
                waited = True
                await trio.sleep_until(stamp + self.window)
            self.waits += waited
            self.admitted += weight
            self._record(now, weight)

    def note_server_usage(self, used: int) -> None:
        """The server says ``used`` weight is spent this minute: never count less than that."""
        now = trio.current_time()
        self._expire(now)
        if used > self._used:
            self._record(now, used - self._used)

    def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` (a 429's or 418's ``Retry-After``)."""
        self._paused_until = max(self._paused_until, trio.current_time() + seconds)
