"""Back-fill: the trades a gap skipped, fetched over REST and handed out in their place.

With ``open_feed(..., backfill=True)``, a gap on a ``trade`` or ``aggTrade``
stream (a reconnect, a rotation that overran, a batch the server never sent)
is not only counted: its exact id range is fetched from Binance's trade
history (``historicalTrades`` / ``aggTrades``, ``binance/_limits.py`` has
the paths and weights) and handed out *before any later event of that
stream*, as :class:`~trio_feed.binance.BackfilledTrade` /
:class:`~trio_feed.binance.BackfilledAggTrade` (``event.backfilled`` is
true).  Other streams are never held up.  Kline streams are filled too, by
time: a candle that opened and was never seen closed (the next event opens
a later one) is fetched closed from ``klines`` as a
:class:`~trio_feed.binance.BackfilledKline`; klines have no ids, so they
are counted in ``backfilled_klines``, not in ``missing``.

Theory of operation
-------------------

The feed's pending queue is a :class:`BackfillQueue` (a ``deque`` of the
events ready to hand out) and every event the continuity filter let through
is appended to it.  Appending watches the ids of trade and aggTrade streams:

- an id past the previous one plus one is a gap ``[previous + 1, id - 1]``:
  a *fill* for it is queued on the stream, and the stream starts *holding*;
- while a stream holds, its events wait, in order, behind its fills, in a
  per-stream buffer; other streams' events go straight to the deque.

One task per holding stream serves its fills in order.  It fetches pages of
up to ``max_trades_limit`` ids from ``fromId``, each admitted first by the
:class:`~trio_feed.rest.WeightBudget` (shared with the order books when the
application passes the same one to both), with these bounds, all named:

- a failed request (no answer, an error status, a malformed page) is retried
  after a doubling backoff (``trio_feed.rest._history``: 0.5 s, doubling to
  8 s), at most ``retries`` times in a row; a 429/418 pauses the budget for
  its ``Retry-After`` and does not count as a failure;
- the whole fill must end within ``timeout`` seconds of the gap being
  seen, waits for the budget included; what is not fetched by then is
  given up;
- a stream holds at most ``max_hold`` events: past that its fill stops
  where it is;
- a gap wider than ``max_ids`` is not fetched at all.

When a fill ends (complete or not), the events it fetched and the held
events behind it, up to the stream's next fill, go into the feed's outbox as
one :class:`Refill` batch (``force=True``: the outbox's backlog limit does
not refuse it, and it queues behind what the connections already put).
When the consumer takes that batch, the feed's ``_accept`` hands it to
:meth:`BackfillQueue.release`, which hands its events out and lets the
stream's later held events follow, so the stream's order is kept although
the fill finished in another task.

BF1: a stream's ids are handed out in increasing order, each once.  A fill
    covers exactly the ids between two events the continuity filter let
    through, rows outside it are discarded, and the held events and the
    fill leave the stream's buffer in the order they entered it.

BF2: what a fill could not fetch stays in ``missing``, with its exact ranges.
    ``statistics().missing`` is the continuity filter's count minus the ids
    filled; ``filled_ranges`` and ``missing_ranges`` list both, per stream.
    A fill never drops what it fetched: it is handed out, or counted
    ``discarded`` if the feed closes first.

BF3: nothing waits unboundedly.  A stream is held at most ``timeout``
    seconds (plus the consumer's own time to reach its refill batch), its
    buffer at most ``max_hold`` events, and closing the feed cancels every
    fill.

Accounting: the back-filled events are not messages read off a connection,
so the feed's identity gains a term::

    messages + backfilled == events + duplicates + dropped + conflated + discarded
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..binance._events import AggTrade, Kline, Trade
from ..binance._history import history_id, parse_history_page, parse_kline_rows
from ..binance._limits import Venue
from ..rest._budget import WeightBudget
from ..rest._history import HistoryCounters, fetch_history, fetch_klines
from ._refill import (
    DEFAULT_BACKFILL_RETRIES,
    DEFAULT_BACKFILL_TIMEOUT,
    DEFAULT_MAX_BACKFILL_HOLD,
    DEFAULT_MAX_BACKFILL_IDS,
    Refill,
)
from ._samples import Samples

if TYPE_CHECKING:
    from ..rest._client import RestClient
    from ._outbox import Outbox

__all__ = [
    "DEFAULT_BACKFILL_TIMEOUT", "DEFAULT_MAX_BACKFILL_HOLD", "DEFAULT_MAX_BACKFILL_IDS",
    "BackfillConfig", "BackfillQueue", "Refill",
]

logger = logging.getLogger("trio_feed")

#: Ranges kept for ``statistics()`` (the latest ones), filled and missing each.
RANGES_KEPT = 1000

_KINDS: dict[type, str] = {Trade: "trade", AggTrade: "aggTrade"}


@attrs.frozen
class BackfillConfig:
    """What ``open_feed(backfill=True, ...)`` was given; see :func:`~trio_feed.open_feed`."""

    venue: Venue
    rest_url: str
    budget: WeightBudget | None = None
    timeout: float = DEFAULT_BACKFILL_TIMEOUT
    retries: int = DEFAULT_BACKFILL_RETRIES
    max_hold: int = DEFAULT_MAX_BACKFILL_HOLD
    max_ids: int = DEFAULT_MAX_BACKFILL_IDS
    max_concurrent: int = 2
    decimals: bool = False
    rest_timeout: float = 10.0

    def __attrs_post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 0 or self.max_hold < 1 or self.max_ids < 0 \
                or self.max_concurrent < 1:
            raise ValueError("backfill_timeout, max_backfill_hold and the concurrency must be "
                             "positive, backfill_retries and max_backfill_ids at least 0")


class _Fill:
    """One gap of one stream: ``[first, last]``, what was fetched, what it cost."""

    __slots__ = ("events", "first", "interval", "kind", "last", "scope", "seen", "stop",
                 "stream", "symbol")

    def __init__(self, stream: str | None, symbol: str, kind: str, first: int, last: int,
                 seen: float, interval: str = "") -> None:
        self.interval = interval
        self.stream = stream
        self.symbol = symbol
        self.kind = kind
        self.first = first
        self.last = last
        self.seen = seen
        self.events: list[Any] = []
        self.scope: trio.CancelScope | None = None
        self.stop = False  # the hold overflowed: end with what is fetched


class _InFlight:
    """Stands in a stream's buffer for its refill batch, queued and not yet taken."""


_IN_FLIGHT = _InFlight()


class _Stream:
    __slots__ = ("fills", "head", "held", "items", "position", "worker")

    def __init__(self) -> None:
        self.position: int | None = None
        #: Held events, fills and the in-flight marker, in hand-out order.
        self.items: deque[Any] = deque()
        self.held = 0
        self.fills: deque[_Fill] = deque()
        self.worker = False
        self.head = trio.Event()


class BackfillQueue(deque[Any]):
    """The feed's pending events, holding streams whose gaps are being filled.

    A ``deque`` of the events ready to hand out, so the feed's consumer side
    (``popleft``, ``len``) runs at deque speed; :meth:`append` and
    :meth:`extend` route each event (see the module docstring).
    """

    def __init__(self, config: BackfillConfig, outbox: Outbox) -> None:
        super().__init__()
        self.config = config
        self.outbox = outbox
        self._streams: dict[str | None, _Stream] = {}
        self._nursery: trio.Nursery | None = None
        self._client: RestClient | None = None
        self._limiter = trio.CapacityLimiter(config.max_concurrent)
        self._ready_append = super().append
        self._ready_extend = super().extend
        self.budget: WeightBudget | None = config.budget
        # -- counters (``Feed.statistics``) --
        #: Events fetched and put in the outbox (the identity's ``backfilled``).
        self.backfilled = 0
        #: stream -> ids filled.
        self.filled: dict[str | None, int] = {}
        self.filled_ranges: deque[tuple[str, int, int]] = deque(maxlen=RANGES_KEPT)
        self.missing_ranges: deque[tuple[str, int, int]] = deque(maxlen=RANGES_KEPT)
        self.gaps = 0
        #: Closed klines fetched (part of ``backfilled``).
        self.klines = 0
        #: REST requests sent, failed, answered 429/418, and the weight they had admitted.
        self.counters = HistoryCounters()
        self.latency = Samples(1024)
        self.latency_max: float | None = None

    # -- the consumer's side (the feed's task) -------------------------------------

    def append(self, event: Any) -> None:
        kind = _KINDS.get(event.__class__)
        if kind is None:
            if event.__class__ is Kline:
                self._kline(event)
                return
            state = self._streams.get(event.stream) if self._streams else None
            if state is None or not state.items:
                self._ready_append(event)
                return
        else:
            state = self._streams.get(event.stream)
            if state is None:
                state = self._streams[event.stream] = _Stream()
            ident = history_id(event)
            last = state.position
            state.position = ident
            if last is not None and ident > last + 1:
                self._gap(state, event, kind, last + 1, ident - 1)
            if not state.items:
                self._ready_append(event)
                return
        state.items.append(event)
        state.held += 1
        if state.held > self.config.max_hold and state.fills:
            fill = state.fills[0]
            if not fill.stop:
                fill.stop = True
                logger.warning("%s: %d events held while back-filling ids %d-%d: the fill stops "
                               "with what it has (max_backfill_hold)", event.stream, state.held,
                               fill.first, fill.last)
                if fill.scope is not None:
                    fill.scope.cancel()

    def _kline(self, event: Kline) -> None:
        """A kline: a candle that opened and never arrived closed is missed (by time)."""
        state = self._streams.get(event.stream)
        if state is None:
            state = self._streams[event.stream] = _Stream()
        # For a kline stream ``position`` is the open time of the next candle to close.
        expected = state.position
        opened = event.open_time
        # (``@+08:00`` candles are aligned to UTC+8; REST klines here are UTC: not filled.)
        utc = event.stream is None or not event.stream.endswith("@+08:00")
        if expected is not None and opened > expected and utc:
            self._gap(state, event, "kline", expected, opened - 1)
        if event.is_closed:
            state.position = event.close_time + 1
        elif expected is None or opened > expected:
            state.position = opened
        if state.items:
            state.items.append(event)
            state.held += 1
        else:
            self._ready_append(event)

    def extend(self, events: Iterable[Any]) -> None:
        for event in events:
            self.append(event)

    def release(self, batch: Refill) -> None:
        """The consumer took ``batch``: hand it out, and what the stream held behind it."""
        self._ready_extend(batch)
        state = batch.state
        items = state.items
        if items and items[0] is _IN_FLIGHT:
            items.popleft()
        self._drain(state)

    def _drain(self, state: _Stream) -> None:
        items = state.items
        while items and items[0].__class__ is not _Fill and items[0] is not _IN_FLIGHT:
            self._ready_append(items.popleft())
            state.held -= 1
        if items:
            state.head.set()

    def held(self) -> int:
        """Events held now, all streams."""
        return sum(state.held for state in self._streams.values())

    def close(self) -> int:
        """Forget what is held; return how many events that was (the feed counts them)."""
        lost = self.held()
        for state in self._streams.values():
            state.items.clear()
            state.held = 0
            state.fills.clear()
        return lost

    # -- gaps ----------------------------------------------------------------------

    def _gap(self, state: _Stream, event: Any, kind: str, first: int, last: int) -> None:
        self.gaps += 1
        name = str(event.stream)
        config = self.config
        too_wide = kind != "kline" and last - first + 1 > config.max_ids
        if self._nursery is None or too_wide or (
                kind == "trade" and config.venue.trades_need_key):
            self.missing_ranges.append((name, first, last))
            logger.warning("%s: ids %d-%d missing, not back-filled (%s)", name, first, last,
                           "the feed is closing" if self._nursery is None else
                           "wider than max_backfill_ids" if too_wide
                           else "the trade history endpoint needs an API key")
            return
        fill = _Fill(event.stream, event.symbol.upper(), kind, first, last,
                     trio.current_time(), getattr(event, "interval", ""))
        state.items.append(fill)
        state.fills.append(fill)
        if not state.worker:
            state.worker = True
            self._nursery.start_soon(self._serve, state)

    # -- the fills' side (one task per holding stream) -----------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the REST client and the fill tasks until cancelled (the feed's nursery)."""
        from ..rest._client import RestClient  # httpx only when back-fill is on

        if self.budget is None:
            self.budget = WeightBudget(self.config.venue.weight_limit)
        self._client = RestClient(self.config.rest_url, self.budget,
                                  timeout=self.config.rest_timeout)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self._client.aclose()

    async def _serve(self, state: _Stream) -> None:
        try:
            while state.fills:
                fill = state.fills[0]
                await self._fetch(fill)
                while state.items and state.items[0] is not fill:
                    state.head = trio.Event()
                    await state.head.wait()
                if not state.fills or state.fills[0] is not fill:
                    return  # closed meanwhile
                state.fills.popleft()
                self._finish(state, fill)
        finally:
            state.worker = False

    async def _fetch(self, fill: _Fill) -> None:
        config = self.config
        assert self._client is not None

        def convert(rows: list[Any]) -> list[Any]:
            if fill.kind == "kline":
                return parse_kline_rows(rows, fill.symbol, fill.interval, fill.stream,
                                        decimals=config.decimals)
            return parse_history_page(fill.kind, rows, fill.symbol, fill.stream,
                                      decimals=config.decimals)

        with trio.move_on_at(fill.seen + config.timeout) as scope:
            fill.scope = scope
            if fill.kind == "kline":
                nxt, failure = await fetch_klines(
                    self._client, config.venue, fill.symbol, fill.interval, fill.first,
                    fill.last, convert, fill.events.extend, retries=config.retries,
                    counters=self.counters, limiter=self._limiter, stop=lambda: fill.stop,
                )
            else:
                nxt, failure = await fetch_history(
                    self._client, config.venue, fill.kind, fill.symbol, fill.first, fill.last,
                    convert, fill.events.extend, retries=config.retries,
                    counters=self.counters, limiter=self._limiter, stop=lambda: fill.stop,
                )
            if failure is not None:
                logger.warning("%s: back-fill of ids %d-%d gave up after %d failed requests "
                               "in a row (backfill_retries); the last: %s", fill.stream, nxt,
                               fill.last, config.retries + 1, failure)
        fill.scope = None
        if scope.cancelled_caught and not fill.stop:
            logger.warning("%s: back-fill of ids %d-%d stopped after %.1f s (backfill_timeout)",
                           fill.stream, fill.first, fill.last, config.timeout)

    def _finish(self, state: _Stream, fill: _Fill) -> None:
        """Account for ``fill`` and queue its refill batch (it is at the stream's head)."""
        items = state.items
        items.popleft()
        name = str(fill.stream)
        events = fill.events
        if fill.kind == "kline":  # by time: no ids, nothing in ``missing`` to take back
            self.klines += len(events)
        else:
            self._ranges(name, fill.first, fill.last, [history_id(e) for e in events])
            self.filled[fill.stream] = self.filled.get(fill.stream, 0) + len(events)
        batch = Refill(state, len(events))
        batch.extend(events)
        while items and items[0].__class__ is not _Fill:
            batch.append(items.popleft())
            state.held -= 1
        self.backfilled += len(events)
        latency = trio.current_time() - fill.seen
        self.latency.add(latency)
        if self.latency_max is None or latency > self.latency_max:
            self.latency_max = latency
        if not batch:
            self._drain(state)
            return
        items.appendleft(_IN_FLIGHT)
        self.outbox.put(batch, force=True)

    def _ranges(self, name: str, first: int, last: int, ids: list[int]) -> None:
        """Record which of ``[first, last]`` the fetched ``ids`` (increasing) cover."""
        start = first
        run: int | None = None
        for ident in ids:
            if run is None:
                if ident > start:
                    self.missing_ranges.append((name, start, ident - 1))
                run = ident
            elif ident != start:
                self.filled_ranges.append((name, run, start - 1))
                self.missing_ranges.append((name, start, ident - 1))
                run = ident
            start = ident + 1
        if run is not None:
            self.filled_ranges.append((name, run, start - 1))
        if start <= last:
            self.missing_ranges.append((name, start, last))
