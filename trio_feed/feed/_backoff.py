"""When to try connecting again: jittered exponential backoff under an attempt budget.

Pure and synchronous: callers pass the time in (``trio.current_time()`` in the
feed, plain numbers in tests), so the schedule can be tested exactly.

S7: a server that accepts and at once drops cannot cause a tight loop.
    :class:`Backoff` grows with every failed attempt and is reset only by
    :meth:`Backoff.healthy`, which the feed calls once a connection has
    *delivered data* for ``healthy_after`` seconds.  A connection that opens
    and dies, however many times, keeps doubling the delay up to ``cap``.

S7, continued: connection attempts stay under the exchange's budget.
    :class:`AttemptLimiter` keeps the times of recent attempts in a sliding
    window and says how long to wait before the next one is allowed.
    Binance allows 300 attempts per 5 minutes per IP; the default leaves a
    margin (250) and one limiter is shared by every connection of a feed.
    Pass the same limiter to several feeds to share it across them too.

Jitter.  The delay before attempt *n* (counting from 0 after the last reset)
is drawn uniformly from ``[d/2, d]`` where ``d = min(cap, initial * 2**n)``
("equal jitter"): never near zero, so the floor also grows, and spread out,
so a thousand clients dropped by the same server restart do not return in
lockstep.
"""

from __future__ import annotations

import random
from collections import deque

from ..binance._limits import SPOT

__all__ = ["AttemptLimiter", "Backoff"]


class Backoff:
    """Delays between reconnection attempts; see the module docstring."""

    def __init__(
        self,
        *,
        initial: float = 0.5,
        cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial}, cap={cap}")
        self.initial = initial
        self.cap = cap
        self._rng = rng if rng is not None else random.Random()
        #: Failed attempts since the last reset.
        self.failures = 0

    def next_delay(self) -> float:
        """Record a failure and return how long to wait before the next attempt."""
        ceiling = min(self.cap, self.initial * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return ceiling / 2 + self._rng.random() * ceiling / 2

    def next_rotation_delay(self) -> float:
        """Like :meth:`next_delay`, for a make-before-break rotation: the first
        one since the last reset goes at once (the connection it replaces was
        fine), each later one waits as a failed attempt would."""
        if self.failures == 0:
            self.failures = 1
            return 0.0
        return self.next_delay()

    def healthy(self) -> None:
        """A connection proved healthy: start the schedule again from ``initial``."""
        self.failures = 0


class AttemptLimiter:
    """At most ``max_attempts`` connection attempts in any ``window`` seconds.

    The window is half-open: an attempt exactly ``window`` seconds after the
    oldest one counted is allowed (the default's margin below Binance's 300
    covers that boundary many times over).
    """

    def __init__(self, max_attempts: int = 250, window: float = SPOT.attempts_window) -> None:
        if max_attempts < 1 or window <= 0:
            raise ValueError("max_attempts must be >= 1 and window > 0")
        self.max_attempts = max_attempts
        self.window = window
        self._times: deque[float] = deque()
        #: Attempts recorded so far.
        self.attempts = 0

    def wait_time(self, now: float) -> float:
        """Seconds to wait from ``now`` before an attempt is allowed (0 if at once)."""
        times = self._times
        while times and times[0] + self.window <= now:
            times.popleft()
        if len(times) < self.max_attempts:
            return 0.0
        return times[0] + self.window - now

    def record(self, now: float) -> None:
        """Record an attempt made at ``now`` (call it only when ``wait_time(now) == 0``)."""
        if self.wait_time(now) > 0:
            raise RuntimeError("connection attempt over budget: wait_time() was not 0")
        self._times.append(now)
        self.attempts += 1
