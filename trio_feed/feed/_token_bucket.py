"""A token bucket for client-to-server messages, pure and synchronous.

Binance closes a connection (1008) that sends more than 5 messages in a
second, and pings, pongs and SUBSCRIBEs all count.  The feed gives each
connection one bucket and awaits it before every frame it sends
(``Connection(send_gate=...)``), pongs included.

S7: no more than ``burst + rate * T`` messages leave in any interval of
length ``T``.  With the defaults (``rate=4``, ``burst=1``) that is at most 5
in any closed one-second window, the exchange's limit, and 4 per second
sustained, so a SUBSCRIBE burst at reconnect cannot trip it.  The bucket
starts full.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; see the module docstring."""

    def __init__(self, rate: float = 4.0, burst: float = 1.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp: float | None = None
        #: Tokens taken so far (messages sent through the bucket).
        self.taken = 0
        #: Total seconds callers were told to wait.
        self.waited = 0.0

    def reserve(self, now: float) -> float:
        """Take one token; return how long the caller must wait before using it.

        Tokens are reserved in call order, so callers that each sleep their
        returned delay send in that order and never faster than the rule.
        """
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1.0
        self.taken += 1
        if self._tokens >= 0:
            return 0.0
        delay = -self._tokens / self.rate
        self.waited += delay
        return delay
