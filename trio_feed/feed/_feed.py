"""``open_feed``: stream names in, typed Binance events out, supervised.

::

    async with open_feed(["btcusdt@trade", "ethusdt@bookTicker"]) as feed:
        async for event in feed:
            print(event)

A feed is a small supervision tree, all in one nursery that the feed owns::

    Feed (the consumer's async for)            decode (channel mode), continuity, hand out
     └── Outbox                                batches from every connection, slow-consumer policy
          ├── Shard 0 (_shard.py)              <= 1024 streams: reconnect, backoff, rotation
          │    └── Link (_link.py)             one connection: subscribe, read, watchdog, pings
          └── Shard 1 ...                      more than 1024 streams: more shards, merged here

**Modes.**  ``mode="channel"`` (the default) is the copy strategy: each
connection task copies every payload into owned ``bytes`` and hands a batch
per receive chunk to the consumer, whose ``async for`` decodes it.
``mode="inline"`` is the borrow strategy: the connection task decodes each
payload straight from the view lent by the receive buffer, before it reads
the next frame, and hands over events; nothing is copied.  Either way no
view crosses an ``await`` or a task boundary, and the consumer only ever
sees owned events.

**Supervision.**  Connections are opened on the combined endpoint
(``/stream``, behind the stream kind's route on USD-M futures: ``/public`` or
``/market``, one shard per route) and subscribed with batched SUBSCRIBEs
through a token bucket (every client frame, pongs included, stays under the
market's limit: 5 per second on spot, 10 on USD-M).
A connection that fails is replaced after a jittered, growing backoff, under
an attempt budget (250 per 5 minutes); fatal errors (bad stream names, TLS
verification, an error reply) end the feed instead.  Connections are
rotated make-before-break before Binance's 24-hour limit and at once on
``serverShutdown``; a watchdog replaces a connection that goes silent.
The policies and their defaults are explained in ``docs/resilience.md``.

**Nothing is lost silently.**  Every event passes a continuity filter
(``trio_feed.feed._continuity``) that drops duplicates from overlapping
connections and counts ids missing on streams whose ids are consecutive,
and every message read is, in the end, handed out or counted: the identity
in ``trio_feed.feed._statistics`` holds after any fault.
With ``backfill=True`` the gaps of trade and aggTrade streams are also fetched
over REST and handed out in their place (``trio_feed.feed._backfill``): the
pending queue is then a :class:`~trio_feed.feed._backfill.BackfillQueue`, and
``_accept`` hands the back-fill's own batches to it.

The feed is a class with ``__aenter__``/``__aexit__`` and ``__anext__``, not
an async generator: an async generator cannot safely suspend inside the
nursery that holds the connection tasks.  Errors arrive in order: the events
read before a failure are handed out first.  With ``reconnect=False`` the
first connection to end ends the feed, with its ``ConnectionClosed``; a
normal closure by the server (1000), which says a connection's streams are
over, ends the feed only when every connection has ended, so that a replay
served on two routes is delivered whole.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import attrs
import orjson
import trio

from .._errors import (
    ConnectionClosed,
    DecodeError,
    RequestTimeout,
    SubscriptionError,
    lone_exception,
)
from ..binance import Decoder, Event, Stream
from ..binance._limits import SPOT, venue_named
from ..binance._urls import routed_url
from ..rest._budget import WeightBudget  # (trio only: no httpx)
from ._backoff import AttemptLimiter
from ._context import FeedContext, FeedOptions
from ._continuity import Continuity
from ._link import is_fatal, stream_named_in
from ._outbox import (
    DEFAULT_MAX_BACKLOG_BYTES,
    DEFAULT_MAX_QUEUED,
    EVENTS_AT_ONCE,
    Batch,
    Outbox,
    SlowConsumerPolicy,
)
from ._payloads import PayloadQueue
from ._refill import (
    DEFAULT_BACKFILL_RETRIES,
    DEFAULT_BACKFILL_TIMEOUT,
    DEFAULT_MAX_BACKFILL_HOLD,
    DEFAULT_MAX_BACKFILL_IDS,
    Refill,
)
from ._shard import Shard
from ._statistics import SKIPPED_PREFIX, FeedCounters, FeedStatistics
from ._subscriptions import Subscriptions

if TYPE_CHECKING:
    from ._backfill import BackfillConfig, BackfillQueue  # imported when a feed back-fills

__all__ = ["Feed", "FeedOptions", "open_feed"]

logger = logging.getLogger("trio_feed")

#: Stream kinds whose every message is a full snapshot: only these may be conflated.
CONFLATABLE_KINDS = frozenset(
    {"bookTicker", "depth_partial", "ticker", "miniTicker", "ticker_window", "avgPrice"}
)



class Feed:
    """A running feed: iterate it with ``async for``.  Made by :func:`open_feed`."""

    def __init__(
        self, streams: list[Stream], options: FeedOptions, attempt_limiter: AttemptLimiter,
        backfill: BackfillConfig | None = None, payloads: bool = False,
    ) -> None:
        self.options = options
        self.mode = options.mode
        self.subscriptions = Subscriptions(options.streams_per_connection,
                                           venue_named(options.market))
        self.subscriptions.add(streams)
        self.decoder = Decoder(streams, decimals=options.decimals, market=options.market)
        self.attempt_limiter = attempt_limiter
        self.counters = FeedCounters()
        self.continuity = Continuity(self.counters.per_stream)
        key = _stream_of_event if options.mode == "inline" else _stream_of_payload
        self.outbox = Outbox(policy=options.policy, max_queued=options.max_queued,
                             max_backlog_bytes=options.max_backlog_bytes, key=key)
        self.outbox.on_overflow = self._on_overflow
        #: All that the shards and links may touch of this feed.
        self.context = FeedContext(options=options, counters=self.counters, decoder=self.decoder,
                                   outbox=self.outbox, attempt_limiter=attempt_limiter,
                                   note_lag=self.note_lag)
        self.shards: list[Shard] = []
        #: Shards whose task is running (a normal end waits for the last one).
        self._running = 0
        self._pending: deque[Event] = deque()
        #: What ``__anext__`` returns: awaiting it takes the next event (``_NextEvent``).
        self._next = _NextEvent(self)
        #: Events put in ``_pending`` so far: handed out = this minus what is still pending
        #: (counted per batch, not per event).
        self._accepted = 0
        #: Channel mode: the batch being decoded, the index of its next payload, when it
        #: was read and by which connection (see ``_decode_some``).
        self._undecoded: tuple[list[Any], int, float, object] | None = None
        #: The back-fill (``_backfill.py``), when on: it is then the pending queue too.
        self.backfill: BackfillQueue | None = None
        if backfill is not None:
            from ._backfill import BackfillQueue  # only with backfill=True (see _refill.py)

            self.backfill = self._pending = BackfillQueue(backfill, self.outbox)
        #: ``payloads=True``: the pending queue keeps each event's frame (``_payloads.py``).
        self._payloads: PayloadQueue | None = None
        if payloads:
            self._payloads = self._pending = PayloadQueue()
        self._lagging = False
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        #: The shards' own nursery, inside a supervisor task: cancelling it stops
        #: every connection without cancelling the consumer's ``async with`` body,
        #: which runs inside ``_nursery``'s cancel scope.
        self._shards: trio.Nursery | None = None

    @property
    def streams(self) -> list[str]:
        """The names of every stream the feed is subscribed to."""
        return list(self.subscriptions.streams)

    # -- lifetime ----------------------------------------------------------------

    async def __aenter__(self) -> Feed:
        if self._nursery_manager is not None:
            raise RuntimeError("a feed can be entered only once")
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        try:
            if self.backfill is not None:
                await self._nursery.start(self.backfill.run)
            self._shards = await self._nursery.start(self._supervise)
            if self.options.url is not None:
                await self._start_shard(0, url=self.options.url, subscribe_on_connect=False)
            else:
                for index in range(len(self.subscriptions.shards)):
                    await self._start_shard(index)
        except BaseException as exc:
            self._nursery.cancel_scope.cancel()
            try:
                await self._nursery_manager.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup:
                pass
            finally:
                # What the connections read before the failure was never handed out.
                self._discard_queued()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None and self._nursery_manager is not None
        self._nursery.cancel_scope.cancel()
        try:
            await self._nursery_manager.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            leaf = lone_exception(group)
            raise leaf from leaf.__cause__  # keep the leaf's own cause
        finally:
            self._discard_queued()
        return None

    def _discard_queued(self) -> None:
        """Close the outbox; count what it and the consumer's pending events still held."""
        self.counters.discarded += self.outbox.close() + len(self._pending)
        self._accepted -= len(self._pending)  # never handed out
        self._pending.clear()
        if self._undecoded is not None:  # read, never decoded
            batch, offset, _, _ = self._undecoded
            self.counters.discarded += len(batch) - offset
            self._undecoded = None
        if self.backfill is not None:
            self.counters.discarded += self.backfill.close()  # the events it held

    async def _supervise(
        self, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as shards:
            task_status.started(shards)
            await trio.sleep_forever()

    def _stop_connections(self) -> None:
        if self._shards is not None:
            self._shards.cancel_scope.cancel()

    async def _start_shard(
        self, index: int, *, url: str | None = None, subscribe_on_connect: bool = True
    ) -> None:
        assert self._shards is not None
        # A cancel that lands after the previous start returned, before this task ran
        # again, may already have closed the shards' nursery (its tasks saw it first):
        # say Cancelled, as trio would, not "Nursery is closed to new arrivals".
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._shards.cancel_scope.cancel_called:
            # The connections were stopped (a fatal error, the 'disconnect' policy).
            raise self.outbox.error or trio.ClosedResourceError("the feed's connections stopped")
        streams = self.subscriptions.shards[index] if self.subscriptions.shards else {}
        route = self.subscriptions.routes[index] if self.subscriptions.routes else ""
        base = routed_url(self.options.base_url, route)
        shard = Shard(self.context, index, streams, url=url or f"{base}/stream",
                      subscribe_on_connect=subscribe_on_connect, base_url=base)
        self.shards.append(shard)
        await self._shards.start(self._run_shard, shard)

    async def _run_shard(
        self, shard: Shard, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._running += 1
        try:
            await shard.run(task_status=task_status)
        except Exception as exc:
            if not shard.started:
                raise
            if self._running > 1 and _is_normal_end(exc):
                # This connection's streams are over (a replay of a USD-M recording
                # ends one route before the other): the others go on delivering,
                # and the last one to end this way ends the feed.
                return
            # A fatal error after start: the consumer gets what was read, then this.
            self.outbox.fail(exc)
            self._stop_connections()
        finally:
            self._running -= 1

    def _on_overflow(self) -> None:
        # The 'disconnect' policy fired: stop every connection now.
        self._stop_connections()

    # -- subscriptions -----------------------------------------------------------

    async def subscribe(self, streams: Iterable[str | Stream]) -> None:
        """Add streams, on the connections that have room or on new ones.

        Returns once the server confirmed every SUBSCRIBE, or once the
        connection carrying it dropped (the reconnect then subscribes them).
        Raises :class:`~trio_feed.InvalidStreamName` before sending anything
        for a bad name, :class:`~trio_feed.SubscriptionError` if the
        server refuses (the refused streams are then not part of the feed),
        and :class:`~trio_feed.RequestTimeout` if no reply came within
        ``request_timeout`` (the connection is then replaced, and the
        replacement subscribes the streams, which stay part of the feed).
        The streams stay subscribed across reconnects.
        """
        parsed = [self.subscriptions.parse(s) for s in streams]
        _check_policy(self.options.policy, parsed)
        placed = self.subscriptions.add(parsed)
        for index, added in placed.items():
            names = [s.name for s in added]
            if index < len(self.shards):
                try:
                    await self.shards[index].request("SUBSCRIBE", names)
                except Exception as exc:
                    if is_fatal(exc):
                        refused = exc.streams if isinstance(exc, SubscriptionError) else ()
                        self.subscriptions.remove(refused or names)
                        raise
                    if isinstance(exc, RequestTimeout):
                        raise  # the streams stay wanted: the replacement subscribes them
                    # The connection dropped meanwhile: the streams stay wanted,
                    # and the replacement connection subscribes them.
                    logger.info("subscribe of %d streams deferred to the reconnect (%s)",
                                len(names), exc)
            else:
                await self._start_shard(index)

    async def unsubscribe(self, streams: Iterable[str | Stream]) -> None:
        """Remove streams; returns once the server confirmed.  Unknown names are ignored."""
        removed = self.subscriptions.remove(streams)
        for index, gone in removed.items():
            await self.shards[index].request("UNSUBSCRIBE", [s.name for s in gone])

    # -- iteration ---------------------------------------------------------------

    def __aiter__(self) -> Feed:
        return self

    def __anext__(self) -> Awaitable[Event]:
        # Not a coroutine: ``async for`` calls __anext__ and then awaits what it returns,
        # and a Ctrl-C landing between the two in the consumer's own code (which trio does
        # not protect) would leave a coroutine never awaited, and a RuntimeWarning at exit.
        # An un-started generator (``_NextEvent.__await__``) is dropped silently, and the
        # taking itself runs KI-protected, so an interrupt waits for the next checkpoint.
        return self._next

    async def receive(self) -> Event:
        """The next event, waiting for one: what ``async for event in feed`` does."""
        return await self.__anext__()

    def receive_nowait(self) -> Event:
        """The next event if one is already queued; raise ``trio.WouldBlock`` if none is.

        Like :meth:`receive`, it raises the feed's failure (a fatal error,
        :class:`SlowConsumerError`) once the events queued before it are gone.
        """
        pending = self._pending
        while not pending:
            if self._undecoded is not None:
                self._decode_some()
                continue
            batch, received = self.outbox.take_nowait()
            self._accept(batch, received)
        return pending.popleft()

    def _accept(self, batch: list[Any], received: float) -> None:
        """Take one batch from the outbox: its events, or its payloads to decode.

        In inline mode the connection task decoded and counted the events
        already: they pass continuity (S9) at once.  In channel mode the
        batch holds payloads, decoded :data:`EVENTS_AT_ONCE` at a time as the
        consumer asks for events (:meth:`_decode_some`).
        """
        if batch.__class__ is Refill:  # the back-fill's own batch (_backfill.py): no decoding
            return self._release(batch)
        # Which connection read the batch (continuity's reset rule, S9), once per batch.
        source = batch.source if batch.__class__ is Batch else None
        if self.mode == "inline":
            self.continuity.source = source
            pending = self._pending
            before = len(pending)
            try:
                self.continuity.accept_batch(batch, pending.append)
            finally:
                self._accepted += len(pending) - before
            return
        self._undecoded = (batch, 0, received, source)
        self._decode_some()

    def _decode_some(self) -> None:
        """Decode the next :data:`EVENTS_AT_ONCE` payloads of the batch in hand into events.

        A chunk at a time, not the whole receive chunk at once: a thousand
        decoded events alive together cost the garbage collector more than
        decoding them (docs/performance.md), while payloads, plain ``bytes``,
        cost it nothing.  Each chunk is decoded in one call
        (:meth:`Decoder.decode_batch`), then continuity (S9) and the
        per-stream counts take one pass over its events together.
        """
        assert self._undecoded is not None
        batch, offset, received, source = self._undecoded
        end = offset + EVENTS_AT_ONCE
        chunk = batch if offset == 0 and end >= len(batch) else batch[offset:end]
        self._undecoded = (batch, end, received, source) if end < len(batch) else None
        continuity = self.continuity
        continuity.source = source
        events: list[Event] = []
        started = time.perf_counter()
        skipped: list[int] | None = None  # indices in ``chunk`` skipped as undecodable
        rest: Any = chunk
        while True:
            try:
                self.decoder.decode_batch(rest, events)
                break
            except Exception as exc:
                index = len(events) + (len(skipped) if skipped else 0)
                if not self._undecodable(batch, offset + index, exc):
                    self._undecoded = None  # the rest of the batch is counted discarded
                    break
                skipped = [*(skipped or ()), index]
                rest = chunk[index + 1 :]
        if not events:
            return
        counters = self.counters
        counters.parse.add((time.perf_counter() - started) * 1e6 / len(events))
        self.note_lag(events, received)
        if skipped is None:
            sizes = map(len, chunk)  # zip stops at the last event, before a failure
        else:
            gone = set(skipped)
            sizes = map(len, [p for i, p in enumerate(chunk) if i not in gone])
        pending = self._pending
        before = len(pending)
        keep = pending.append
        if self._payloads is not None:
            keep = self._keep_with_payload(events, chunk, skipped)
        try:
            continuity.accept_batch(events, keep, sizes)
        finally:
            self._accepted += len(pending) - before

    def _release(self, batch: Refill) -> None:
        """A batch of the back-fill's: its queue hands it out (``_backfill.py``), counted."""
        pending = self._pending
        before = len(pending)
        try:
            pending.release(batch)  # type: ignore[attr-defined]
        finally:
            self._accepted += len(pending) - before

    def _keep_with_payload(
        self, events: list[Event], chunk: list[bytes], skipped: list[int] | None
    ) -> Callable[[Event], None]:
        """A ``keep`` for continuity that queues each kept event with its own payload."""
        assert self._payloads is not None
        if skipped:
            gone = set(skipped)
            chunk = [p for i, p in enumerate(chunk) if i not in gone]
        payload_of = {id(event): payload for event, payload in zip(events, chunk, strict=False)}
        push = self._payloads.push
        return lambda event: push(event, payload_of[id(event)])

    @property
    def keeps_payloads(self) -> bool:
        """Whether the feed was opened with ``payloads=True`` (see :attr:`last_payload`)."""
        return self._payloads is not None

    @property
    def last_payload(self) -> bytes | None:
        """The frame the event most recently handed out was decoded from (``payloads=True``).

        The payload exactly as the server sent it (the combined-stream
        envelope), as owned ``bytes``; ``None`` before the first event.
        Raises ``RuntimeError`` on a feed opened without ``payloads=True``.
        """
        if self._payloads is None:
            raise RuntimeError("open the feed with payloads=True to keep each event's payload")
        return self._payloads.last

    def _undecodable(self, batch: list[Any], index: int, exc: Exception) -> bool:
        """Count ``batch[index]``, which did not decode; ``True`` to go on with the batch.

        Under ``on_decode_error="skip"`` a :class:`DecodeError` is counted
        (``skipped``, per stream) and the batch goes on.  Otherwise the feed
        ends: the events decoded before it are handed out, then ``exc`` is
        raised; what was read after it (the rest of the batch, the batches
        queued behind it) is counted in ``discarded``.
        """
        counters = self.counters
        counters.discarded += 1  # read by its connection, never handed out
        if isinstance(exc, DecodeError) and self.options.on_decode_error == "skip":
            head = bytes(batch[index][:SKIPPED_PREFIX])
            counters.skip(stream_named_in(head), head)
            return True
        counters.discarded += len(batch) - index - 1 + self.outbox.drain()
        self.outbox.fail(exc)
        self._stop_connections()
        return False

    def note_lag(self, events: list[Any], received: float) -> None:
        """Record exchange lag (receipt time minus ``E``) for a batch read at ``received``."""
        now_ms = received * 1000.0
        threshold = self.options.lag_threshold * 1000.0
        counters = self.counters
        sample = None
        for event in events:
            when = getattr(event, "event_time", None)
            if when is None:
                continue
            lag = now_ms - when
            if sample is None:
                sample = lag
                counters.lag.add(lag)
            if lag > threshold:
                counters.lagging += 1
        if sample is not None and (sample > threshold) != self._lagging:
            self._lagging = not self._lagging
            if self._lagging:
                logger.warning("exchange lag %.0f ms is above lag_threshold (%.1f s)",
                               sample, self.options.lag_threshold)
            else:
                logger.info("exchange lag back to %.0f ms", sample)

    def _undecoded_count(self) -> int:
        if self._undecoded is None:
            return 0
        batch, offset, _, _ = self._undecoded
        return len(batch) - offset

    # -- statistics --------------------------------------------------------------

    def statistics(self) -> FeedStatistics:
        """A frozen snapshot of the feed's counters; see :class:`FeedStatistics`."""
        c = self.counters
        out = self.outbox
        links = [link for shard in self.shards for link in shard.links
                 if link.conn is not None and not link.done.is_set()]
        now = trio.current_time()
        connected = c.seconds_connected + sum(
            now - link.connected_at for link in links if link.connected_at is not None
        )
        continuity = self.continuity.streams()
        missing = self.continuity.missing
        bf = self.backfill
        if bf is not None and bf.filled:  # what a fill fetched is not missing any more
            missing -= bf.backfilled
            continuity = {name: attrs.evolve(sc, missing=sc.missing - bf.filled.get(name, 0))
                          for name, sc in continuity.items()}
        return FeedStatistics(
            mode=self.mode,
            policy=out.policy.value,
            messages=c.messages,
            bytes=c.bytes,
            streams=c.stream_statistics(continuity),
            copies=c.copies,
            control=c.control,
            events=self._accepted - len(self._pending),
            duplicates=self.continuity.duplicates,
            missing=missing,
            dropped=out.dropped,
            conflated=out.conflated,
            discarded=c.discarded,
            resets=self.continuity.resets,
            skipped=sum(c.skipped.values()),
            skipped_payloads=tuple(c.skipped_payloads),
            queued=(out.queued + len(self._pending) + self._undecoded_count()
                    + (bf.held() if bf is not None else 0)),
            peak_queued=out.peak_queued,
            max_queued=out.max_queued,
            stalls=out.stalls,
            stall_seconds=out.stall_time(),
            blocked_seconds=out.blocked_seconds,
            connections=len(links),
            connect_attempts=c.connect_attempts,
            connect_failures=c.connect_failures,
            reconnects=dict(c.reconnects),
            rotations=c.rotations,
            stale=c.stale,
            seconds_connected=connected,
            lag_p50=c.lag.percentile(50),
            lag_p99=c.lag.percentile(99),
            lagging=c.lagging,
            parse_p50=c.parse.percentile(50),
            parse_p99=c.parse.percentile(99),
            ping_rtt_p50=c.ping_rtt.percentile(50),
            ping_rtt_max=c.ping_rtt.maximum,
            open_connections=tuple(link.conn.statistics() for link in links if link.conn),
            **(_backfill_statistics(bf) if bf is not None else {}),
        )


def _backfill_statistics(bf: BackfillQueue) -> dict[str, Any]:
    return dict(
        backfilled=bf.backfilled, filled_ranges=tuple(bf.filled_ranges),
        missing_ranges=tuple(bf.missing_ranges), backfill_held=bf.held(),
        backfill_requests=bf.counters.requests, backfill_failures=bf.counters.failures,
        backfill_rate_limited=bf.counters.rate_limited, backfill_weight=bf.counters.weight,
        fill_latency_p50=bf.latency.percentile(50), fill_latency_max=bf.latency_max,
        backfilled_klines=bf.klines,
    )


def _is_normal_end(exc: BaseException) -> bool:
    """The server closed with 1000: this connection's streams are over."""
    return isinstance(exc, ConnectionClosed) and exc.code == 1000 and exc.initiated_by_peer


class _NextEvent:
    """The awaitable ``Feed.__anext__`` returns, one per feed: ``await`` takes the next event."""

    __slots__ = ("_feed",)

    def __init__(self, feed: Feed) -> None:
        self._feed = feed

    @trio.lowlevel.enable_ki_protection
    def __await__(self) -> Generator[Any, Any, Event]:
        feed = self._feed
        pending = feed._pending
        if pending:  # the hot path: no checkpoint per event (see docs/performance.md)
            return pending.popleft()
        while not pending:
            if feed._undecoded is not None:
                feed._decode_some()
                continue
            batch, received = yield from feed.outbox.take().__await__()
            feed._accept(batch, received)
        return pending.popleft()


def _stream_of_event(event: Any) -> object:
    stream = event.stream
    if stream is None:  # a raw payload: its kind and symbol tell its stream
        return (event.__class__, getattr(event, "symbol", None))
    return stream


def _stream_of_payload(payload: bytes) -> object:
    """The stream name of a payload, as bytes: what ``keep_latest`` conflates by."""
    if payload.startswith(b'{"stream":"'):  # Binance's order: the name ends at the next quote
        return payload[11 : payload.index(b'"', 11)]
    # Another key order ('{"data":...,"stream":...}') or no envelope: read it properly.
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload  # undecodable: conflated with nothing (the consumer reports it)
    if type(obj) is not dict:
        return payload
    stream = obj.get("stream")
    if type(stream) is str:
        return stream.encode()
    return (obj.get("e"), obj.get("s"))


def _check_policy(policy: SlowConsumerPolicy, streams: list[Stream]) -> None:
    if policy is not SlowConsumerPolicy.KEEP_LATEST:
        return
    wrong = [s.name for s in streams if s.kind not in CONFLATABLE_KINDS]
    if wrong:
        raise ValueError(
            f"keep_latest would drop messages that later ones do not replace on {wrong}: "
            "conflation is only sound for snapshot streams (bookTicker, partial depth, "
            "tickers, avgPrice); use 'block' or 'drop_newest' for trades and diff depth"
        )


def open_feed(
    streams: Iterable[str | Stream],
    *,
    mode: Literal["channel", "inline"] = "channel",
    url: str | None = None,
    base_url: str | None = None,
    market: str = "spot",
    decimals: bool = False,
    policy: SlowConsumerPolicy | str = SlowConsumerPolicy.BLOCK,
    max_queued: int = DEFAULT_MAX_QUEUED,
    max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
    reconnect: bool = True,
    retry_first_connect: bool = False,
    backoff_initial: float = 0.5,
    backoff_cap: float = 30.0,
    healthy_after: float = 10.0,
    max_retry_after: float = 300.0,
    attempt_limiter: AttemptLimiter | None = None,
    rotate_after: float | None = SPOT.connection_lifetime - 1800.0,
    rotation_timeout: float = 60.0,
    stale_after: float | None = None,
    ping_interval: float | None = 60.0,
    pong_timeout: float = 30.0,
    request_timeout: float = 5.0,
    no_data_after: float | None = 60.0,
    lag_threshold: float = 5.0,
    send_rate: float | None = None,
    send_burst: float = 1.0,
    streams_per_connection: int | None = None,
    max_url_length: int = 4096,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
    close_timeout: float = 5.0,
    max_message_size: int | None = None,
    poison: bool = False,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    on_decode_error: Literal["raise", "skip"] = "raise",
    payloads: bool = False,
    backfill: bool = False,
    rest_url: str | None = None,
    weight_budget: WeightBudget | None = None,
    backfill_timeout: float = DEFAULT_BACKFILL_TIMEOUT,
    backfill_retries: int = DEFAULT_BACKFILL_RETRIES,
    max_backfill_hold: int = DEFAULT_MAX_BACKFILL_HOLD,
    max_backfill_ids: int = DEFAULT_MAX_BACKFILL_IDS,
) -> Feed:
    """Open a supervised feed of typed events: ``async with open_feed(...) as feed``.

    Entering returns once every connection is up and subscribed.  If the
    first connection attempt fails, entering raises that error, since a new
    feed that cannot connect is most likely misconfigured; with
    ``retry_first_connect=True`` it retries retryable failures instead (wrap
    it in ``trio.fail_after`` to bound that).  Fatal errors are always raised.

    Where: ``market`` is ``"spot"`` (the default) or ``"usdm"`` (USD-M
    futures); its rules (``trio_feed.binance._limits``) validate the stream
    names, route each stream to the path that serves it, and give the
    defaults of ``base_url``, ``send_rate``, ``streams_per_connection`` and
    the watchdog.  One feed serves one market: a name of the other market
    raises :class:`~trio_feed.InvalidStreamName` saying so.  ``base_url``
    (the market's production host by default; pass the local exchange's) is
    connected at ``<route>/stream`` (USD-M: ``/public/stream`` for book
    data, ``/market/stream`` for the rest, on separate connections; spot:
    ``/stream``) and subscribed with SUBSCRIBE.
    ``url`` instead connects to exactly that URL (one connection, streams in
    the URL, no SUBSCRIBE), ``streams`` then only telling the decoder what
    the payloads are.  ``mode`` picks the copy or borrow strategy (module
    docstring); ``decimals=True`` turns prices into ``Decimal``.

    Slow consumer: ``policy`` (``"block"``, ``"drop_newest"``,
    ``"keep_latest"``, ``"disconnect"``; see ``docs/resilience.md``) applies
    past ``max_queued`` messages; under ``block`` reading stops only past
    ``max_backlog_bytes``.  ``keep_latest`` raises ``ValueError`` for streams
    that must not be conflated.

    Resilience: ``reconnect`` (off: the first connection to end ends the
    feed); ``retry_first_connect`` (above); ``backoff_initial`` and
    ``backoff_cap`` (seconds), reset after a connection delivered data for
    ``healthy_after`` seconds, and applied to rotations as well;
    ``max_retry_after`` (the longest ``Retry-After`` of a 429 handshake that
    is honoured, in seconds);
    ``attempt_limiter`` (share one between feeds to share the per-IP budget);
    ``rotate_after`` (``None``: never) and ``rotation_timeout``;
    ``stale_after`` (seconds without a complete message before reconnecting;
    default by stream kind and market, see ``docs/resilience.md``); ``no_data_after``
    (seconds after which a stream that never delivered is reported, in the
    log and in ``statistics().streams[name].no_data``; ``None``: never);
    ``ping_interval`` (``None``: no pings of our own) and
    ``pong_timeout``; ``request_timeout`` (seconds a SUBSCRIBE/UNSUBSCRIBE
    waits for its reply: past it :class:`~trio_feed.RequestTimeout` and the
    connection is replaced); ``lag_threshold`` (seconds of exchange lag counted in
    ``lagging``); ``send_rate``/``send_burst`` (the token bucket per
    connection; default: one below the market's limit, 4/s on spot and 9/s
    on USD-M); ``streams_per_connection`` (shard size, at most the market's
    1024);
    ``max_url_length``: streams that fit in a URL this long are subscribed in
    the URL, at no message cost, the rest by SUBSCRIBE (``0``: all by SUBSCRIBE).

    Payloads: ``on_decode_error`` says what a payload that is not a Binance
    message (not JSON, or not a known shape) does: ``"raise"`` (the default)
    hands out the events read before it, then raises its
    :class:`~trio_feed.DecodeError` and ends the feed; ``"skip"`` counts it
    (``statistics().skipped``, per stream, with its first bytes in
    ``skipped_payloads``) and goes on.  Invalid UTF-8 is a protocol
    violation either way: the connection closes with 1007 and is replaced.
    ``payloads=True`` (channel mode only) keeps each event's frame as
    received: after an event is handed out, :attr:`Feed.last_payload` is
    the ``bytes`` it was decoded from (``trio_feed.feed._payloads``).

    Back-fill (``docs/resilience.md``, ``trio_feed.feed._backfill``):
    ``backfill=True`` fetches the ids a gap skipped on ``trade`` and
    ``aggTrade`` streams (and the closed candles a kline stream missed)
    from the REST history at ``rest_url`` (by
    default the ``market``'s on Binance) and hands
    them out, as ``BackfilledTrade``/``BackfilledAggTrade``, before that
    stream's later events, which wait meanwhile.  Requests are charged to
    ``weight_budget`` (pass the order books' to share the IP's weight; by
    default the feed's own); a fill ends within ``backfill_timeout`` seconds
    of its gap, after at most ``backfill_retries`` failed requests in a row,
    or once its stream holds ``max_backfill_hold`` events, and a gap wider
    than ``max_backfill_ids`` is not fetched; what a fill did not fetch stays
    in ``missing``, with its ranges in ``statistics().missing_ranges``.
    Back-fill needs a policy that keeps messages (``block`` or
    ``disconnect``).

    The remaining arguments go to :func:`~trio_feed.open_connection`.
    ``wall_clock`` (for lag) and ``rng`` (for jitter) are there for tests.
    Raises :class:`~trio_feed.InvalidStreamName` at once for a bad name.
    """
    venue = venue_named(market)
    if base_url is None:
        base_url = venue.base_url
    if send_rate is None:
        send_rate = venue.client_messages_per_second - 1.0
    if streams_per_connection is None:
        streams_per_connection = venue.streams_per_connection
    parsed = [Subscriptions(venue=venue).parse(s) for s in streams]
    if mode not in ("channel", "inline"):
        raise ValueError(f"mode must be 'channel' or 'inline', not {mode!r}")
    if on_decode_error not in ("raise", "skip"):
        raise ValueError(f"on_decode_error must be 'raise' or 'skip', not {on_decode_error!r}")
    policy = SlowConsumerPolicy(policy)
    _check_policy(policy, parsed)
    connect_options: dict[str, Any] = dict(
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        poison=poison,
    )
    if max_message_size is not None:
        connect_options["max_message_size"] = max_message_size
    options = FeedOptions(
        mode=mode, base_url=base_url.rstrip("/"), url=url, decimals=decimals, policy=policy,
        max_queued=max_queued, max_backlog_bytes=max_backlog_bytes, reconnect=reconnect,
        retry_first_connect=retry_first_connect,
        backoff_initial=backoff_initial, backoff_cap=backoff_cap, healthy_after=healthy_after,
        max_retry_after=max_retry_after,
        rotate_after=rotate_after, rotation_timeout=rotation_timeout, stale_after=stale_after,
        ping_interval=ping_interval, pong_timeout=pong_timeout,
        request_timeout=request_timeout, no_data_after=no_data_after,
        lag_threshold=lag_threshold,
        send_rate=send_rate, send_burst=send_burst,
        streams_per_connection=streams_per_connection, max_url_length=max_url_length,
        connect_options=connect_options,
        wall_clock=wall_clock, rng=rng, on_decode_error=on_decode_error,
        market=venue.market, quiet_after=venue.quiet_after,
    )
    config = None
    if backfill:
        if policy in (SlowConsumerPolicy.DROP_NEWEST, SlowConsumerPolicy.KEEP_LATEST):
            raise ValueError(f"backfill=True fills gaps for completeness; the policy "
                             f"{policy.value!r} gives completeness up: use 'block' or "
                             "'disconnect'")
        from ._backfill import BackfillConfig

        config = BackfillConfig(
            venue=venue, rest_url=rest_url or venue.rest_url, budget=weight_budget,
            timeout=backfill_timeout, retries=backfill_retries, max_hold=max_backfill_hold,
            max_ids=max_backfill_ids, decimals=decimals,
        )
    if payloads and (mode != "channel" or backfill):
        raise ValueError("payloads=True keeps the frames the copy strategy owns: it needs "
                         "mode='channel', and back-filled events have no frame (backfill=False)")
    return Feed(parsed, options, attempt_limiter or AttemptLimiter(), config,
                payloads=payloads)
