"""Connection-level faults and client-traffic accounting for the local exchange.

Three small pieces the server (``_server``) composes:

- :class:`ClientTraffic` sees every message a client sends (through the
  hooks in ``_hooks``), keeps its arrival times for
  ``LocalExchange.max_client_rate``, and enforces the per-connection budget
  (Binance: 5 per second, pings and pongs included) over a sliding window.
- :class:`Refusals` decides which handshakes get HTTP 503
  (``refuse_connections``) and which are accepted and then dropped
  (``accept_and_close``).
- :func:`half_close` and :func:`reset` end a TCP connection without a
  WebSocket Close frame, with a FIN or with an RST.

The budget.  A message arriving at ``t`` is counted in the window
``(t - 1 s, t]``; the message that makes that window hold more than the
limit is the violation.  It and every later message are not acted on: a
data message is not handed to the control handler, a ping is not answered.
The caller closes the connection (``on_violation``).  ``max_rate`` uses the
same half-open windows, so a client that stays within the budget has
``max_rate(times, 1.0) <= limit``.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import trio

__all__ = ["ClientTraffic", "Refusals", "half_close", "max_rate", "reset"]

#: The length of the budget's sliding window, in seconds.
WINDOW = 1.0


class ClientTraffic:
    """One connection's client messages: counts, arrival times, budget.

    ``counters`` is the exchange's ``_Counters``; ``answer_pings`` says
    whether the exchange currently answers pings (see ``_hooks``).
    """

    def __init__(self, counters: Any, limit: float | None,
                 answer_pings: Callable[[], bool]) -> None:
        self.counters = counters
        self.limit = limit
        self._answer_pings = answer_pings
        #: ``trio.current_time()`` of every message, ping and pong, in order.
        self.times: list[float] = []
        self._recent: deque[float] = deque()
        #: Data messages seen by the reader so far.
        self.messages = 0
        #: The 1-based index of the first data message over the budget, if any.
        self.refused_from: int | None = None
        #: True once the budget was exceeded.
        self.violated = False
        #: True once the connection is closing: pings are no longer answered.
        self.closing = False
        #: Called once, when the budget is first exceeded.
        self.on_violation: Callable[[], None] | None = None

    def arrived(self, kind: str) -> bool:
        now = trio.current_time()
        self.times.append(now)
        counters = self.counters
        counters.client_messages += 1
        if kind == "ping":
            counters.client_pings += 1
        elif kind == "pong":
            counters.client_pongs += 1
        else:
            self.messages += 1
        if not self.violated and self.limit is not None:
            recent = self._recent
            recent.append(now)
            while recent[0] <= now - WINDOW:
                recent.popleft()
            if len(recent) > self.limit:
                self.violated = True
                if self.on_violation is not None:
                    self.on_violation()
        if self.violated:
            if kind == "message" and self.refused_from is None:
                self.refused_from = self.messages
            return False
        return True

    def answer_ping(self) -> bool:
        if self.closing or not self._answer_pings():
            self.counters.client_pings_unanswered += 1
            return False
        return True

    def accepts(self, index: int) -> bool:
        """Whether the ``index``-th data message (1-based) was within the budget."""
        return self.refused_from is None or index < self.refused_from


def max_rate(times: Sequence[float], window: float) -> int:
    """The most entries of sorted ``times`` inside any window ``(t - window, t]``."""
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class Refusals:
    """Which handshakes to refuse with 503, and which to accept and then drop."""

    def __init__(self) -> None:
        self._count: int | None = None  # None: no count limit
        self._until: float | None = None  # None: no time limit
        self._active = False
        self.accept_and_close = 0

    def refuse(self, count: int | None, seconds: float | None) -> None:
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0 or None, got {count!r}")
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"seconds must be >= 0 or None, got {seconds!r}")
        self._count = count
        self._until = None if seconds is None else trio.current_time() + seconds
        self._active = count != 0 and seconds != 0

    def refuse_now(self) -> bool:
        """Whether this handshake is refused (consumes one of a count)."""
        if not self._active:
            return False
        if self._until is not None and trio.current_time() >= self._until:
            self._active = False
            return False
        if self._count is not None:
            self._count -= 1
            if self._count <= 0:
                self._active = False
        return True

    def close_next(self) -> bool:
        """Whether this accepted connection is dropped at once (consumes one)."""
        if self.accept_and_close <= 0:
            return False
        self.accept_and_close -= 1
        return True


def _transport(stream: trio.abc.Stream) -> trio.SocketStream | None:
    transport: Any = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    return transport if isinstance(transport, trio.SocketStream) else None


def half_close(stream: trio.abc.Stream) -> None:
    """Send a FIN after whatever is already queued, without a Close frame or TLS close_notify.

    The socket stays open for reading, so the client's own close (or data
    still in flight) does not turn into an RST; the caller closes it later.
    """
    transport = _transport(stream)
    if transport is not None:
        try:
            transport.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already gone


def reset(stream: trio.abc.Stream) -> None:
    """Close the socket now with an RST (SO_LINGER 0): unsent data is discarded."""
    transport = _transport(stream)
    if transport is not None:
        try:
            transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
        except OSError:
            pass
        transport.socket.close()
