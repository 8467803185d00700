"""The shared market: one market for the whole exchange, fanned out to every subscriber.

With ``open_exchange(shared_market=True)`` the exchange runs one
:class:`~trio_feed.exchange.Market`, stepped by one exchange-level task at
``rate`` ticks per second on trio's clock from the moment the exchange
opens, whether anyone is subscribed or not.  Each tick, every stream that
has at least one subscriber is encoded once (once per session while a
depth fault from ``exchange.faults`` is armed, since those faults are per
session, and once per payload form: bare or enveloped), and the same texts
are handed to each subscribed connection's outgoing queue.

What this buys a client's tests: a connection opened later continues the
same sequences (trade ids consecutive per symbol, diff-depth ``U``/``u``
contiguous across connections), and two connections subscribed to one
stream receive identical payloads for the ticks they both see.  So
reconnection, make-before-break rotation and de-duplication can be checked
by ids, and losses counted exactly.

Pacing follows the per-connection sender: tick ``k`` is due at
``open + k / rate``; a ticker that falls more than ``MAX_LAG`` behind
restarts its schedule (the skipped ticks never happen, so no sequence has a
gap because of it).  Delivery never blocks the ticker: a connection that
cannot keep up overflows its bounded queue and is closed (see ``_server``).
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from ..binance._streams import Stream
from ..binance._urls import envelope
from ._market import Market

__all__ = ["SharedMarket", "Subscriber"]


class Subscriber(Protocol):
    session: str
    combined: bool

    def deliver(self, name: str, texts: list[str]) -> None:
        """Queue this tick's ``texts`` for stream ``name`` (never blocks)."""


class SharedMarket:
    """The exchange-wide market and who is subscribed to what."""

    def __init__(self, market: Market, rate: float, faults: Any, max_lag: float) -> None:
        self.market = market
        self.rate = rate
        self.faults = faults
        self.max_lag = max_lag
        self._streams: dict[str, Stream] = {}
        self._subscribers: dict[str, dict[Subscriber, None]] = {}

    def subscribe(self, subscriber: Subscriber, stream: Stream) -> None:
        self._streams.setdefault(stream.name, stream)
        self._subscribers.setdefault(stream.name, {})[subscriber] = None

    def unsubscribe(self, subscriber: Subscriber, name: str) -> None:
        subscribers = self._subscribers.get(name)
        if subscribers is not None:
            subscribers.pop(subscriber, None)
            if not subscribers:
                del self._subscribers[name]
                del self._streams[name]

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        period = 1.0 / self.rate
        deadline = trio.current_time()
        task_status.started()
        while True:
            deadline += period
            now = trio.current_time()
            if now - deadline > self.max_lag:
                deadline = now
            await trio.sleep_until(deadline)
            self.market.step()
            self.fan_out()

    def fan_out(self) -> None:
        """Send the current tick's payloads to every subscriber."""
        market, faults = self.market, self.faults
        armed = faults.armed
        for name, subscribers in list(self._subscribers.items()):
            stream = self._streams.get(name)
            if stream is None:
                continue  # its last subscriber left during this tick
            batch = market.encoded(stream)
            if not batch and not armed:
                continue
            forms: dict[tuple[str, bool], list[str]] = {}
            filtered: dict[str, list[bytes]] = {}
            for subscriber in list(subscribers):
                session = subscriber.session if armed else ""
                key = (session, subscriber.combined)
                texts = forms.get(key)
                if texts is None:
                    raws = batch
                    if armed:
                        raws = filtered.get(session)  # type: ignore[assignment]
                        if raws is None:
                            raws = filtered[session] = faults.filter(session, stream, batch)
                    if subscriber.combined:
                        texts = [envelope(name, raw).decode() for raw in raws]
                    else:
                        texts = [raw.decode() for raw in raws]
                    forms[key] = texts
                if texts:
                    subscriber.deliver(name, texts)
