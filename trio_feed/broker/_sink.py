"""``open_redis_sink``: write a feed's events into Redis Streams as pipelined micro-batches.

::

    async with open_feed(streams) as feed, open_redis_sink("redis://host:6379") as sink:
        await publish(feed, sink)

Theory of operation
-------------------

:meth:`RedisSink.send` appends an event to the *open batch* of its stream
(``_keys`` names the Redis key).  A batch is *sealed* when it holds
``max_batch_events`` events or ``max_batch_bytes`` bytes, or when it has been
open ``flush_interval`` seconds.  One *writer* task takes up to
``max_entries_per_write`` sealed batches, oldest first, and writes them in
one pipelined round trip, one ``XADD`` per batch (``_codec`` describes an
entry), each with its retention (``MAXLEN ~`` or ``MINID ~``: a stream is
never unbounded).

BRK1: ids are explicit and monotonic per key.  Each entry gets its id
    (``<ms>-<seq>``, never below the key's last id, which is read from the
    server the first time the sink writes a key) when it is first taken, and
    keeps it across retries.  After an ambiguous failure (a timeout, a
    connection lost mid-reply) the same entries are sent again with the same
    ids, and the server rejects those that landed ("equal or smaller than the
    target stream top item"): they are counted in ``already_written``, not
    duplicated.  Entries of one key are written in order, on one connection,
    and each round trip is one ``MULTI``/``EXEC`` transaction (on a cluster,
    one per hash tag), so a round lands whole (per tag) or not at all: a write
    refused at queueing (``OOM`` under ``noeviction``) cannot let a later
    entry of the same stream land before an earlier one, and a rejected retry
    always means "already there".

BRK2: nothing is dropped without a count.  Every accepted event is
    pending until the server acknowledged its entry.  Past
    ``max_pending_events`` or ``max_pending_bytes``, the ``policy`` decides:
    ``block`` (the default) makes ``send`` wait, which holds the feed, whose
    own slow-consumer policy then applies; ``drop_oldest`` drops the oldest
    batches not yet in flight, counts them, merges each stream's dropped ids
    into one range, and writes that range both as a gap marker in the next
    entry of the stream and as a ``gap`` entry on the control stream, before
    (in the same round trip as) the entries that follow it.

BRK4: a spool keeps the order.  Under ``spool``, past the bounds the oldest
    batches not in flight are appended to a recording file (``_spool``)
    instead of being dropped, and ``send`` does not wait (until the spool
    holds ``max_spool_bytes``).  While the spool holds anything, the writer
    takes its entries from the spool, oldest first, and none from memory:
    what is in flight is older than the spool, the spool older than what
    is in memory, so every stream's entries land in the order the events
    came.  Nothing is counted written until the server acknowledged it.

BRK3: outages are waited out.  A failed round trip is retried after a
    jittered backoff (``backoff_initial`` doubling up to ``backoff_cap``),
    for as long as it takes; meanwhile ``block`` holds the feed and
    ``drop_oldest`` keeps the newest data.  Every wait on the server is bounded
    (``connect_timeout``, ``write_timeout``).

Book snapshots.  With ``rest_url``, the sink keeps an
:class:`~trio_feed.binance.OrderBook` for each diff-depth stream it publishes,
synced from the very events it writes plus REST snapshots it fetches (one per
symbol at a time).  Every ``snapshot_interval`` seconds, when a depth batch is
sealed while its book is live and exactly at the batch's last ``u``, the
book is written to the stream's ``:snapshot`` key (trimmed to
``snapshot_maxlen``) *with the same entry id as that batch*: a late reader
loads it and reads the depth stream after that id, with no overlap and no
hole.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import orjson
import trio

from .._errors import BrokerError, SinkClosed
from ..binance import Decoder, DepthUpdate, Event, OrderBook, parse_stream
from ..binance._limits import SPOT
from ..binance._sequence import span
from ..feed import Feed
from ..feed._backoff import Backoff
from ._client import ServerBusy, by_slot, enter, leave, redis_client, server_busy
from ._client import transient as transient_errors
from ._codec import SCHEMA_VERSION, decode_json_payload, encode_event
from ._keys import DEFAULT_PREFIX, control_key, snapshot_key, stream_key
from ._spool import Spool
from ._statistics import DroppedRange, Latencies, SinkStatistics

__all__ = ["RedisSink", "SinkPolicy", "open_redis_sink", "publish"]

logger = logging.getLogger("trio_feed.broker")

class SinkPolicy(enum.Enum):
    """What a full sink does: hold the feed (``block``), drop its oldest data (counted), or
    move it to a file replayed when the server catches up (``spool``)."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    SPOOL = "spool"


@attrs.define(slots=True, eq=False)
class _Batch:
    state: _Key
    fmt: bytes
    opened: float
    t0: int
    items: list[bytes] = attrs.Factory(list)
    nbytes: int = 0
    first: int | None = None
    last: int | None = None
    entry_id: str | None = None
    attempts: int = 0
    spooled: bool = False  # made from the spool: not counted in pending_events
    segment: Any = None  # the spool segment this batch ends, deleted once it is written

    def append(self, data: bytes, event: Event) -> None:
        """Add one event's element, widening the batch's sequence range by the event's ids."""
        seq = span(event)
        if seq is not None:
            if self.first is None:
                self.first = seq[0]
            self.last = seq[1]
        self.items.append(data)
        self.nbytes += len(data)
    gap: bytes = b""
    snapshot: dict[bytes, bytes] | None = None


@attrs.define(slots=True, eq=False)
class _Key:
    stream: str
    key: str
    ms: int = 0
    seq: int = -1
    checked: bool = False
    open: _Batch | None = None
    dropped: list[Any] | None = None  # [first, last, count] not yet marked in an entry
    book: OrderBook | None = None
    fetching: bool = False
    last_snapshot: float = float("-inf")

    def next_id(self, now_ms: int) -> str:
        if now_ms > self.ms:
            self.ms, self.seq = now_ms, 0
        else:
            self.seq += 1
        return f"{self.ms}-{self.seq}"


def _merge(ranges: list[DroppedRange], stream: str, first: int | None, last: int | None,
           count: int) -> None:
    if ranges:
        prev = ranges[-1]
        if prev.stream == stream and (
            first is None or prev.last is None or first == prev.last + 1 or first <= prev.last
        ):
            ranges[-1] = DroppedRange(
                stream, prev.first if prev.first is not None else first,
                last if last is not None else prev.last, prev.count + count,
            )
            return
    ranges.append(DroppedRange(stream, first, last, count))


def _text(value: int | None) -> bytes:
    return b"" if value is None else str(value).encode()


class RedisSink:
    """A running sink: :meth:`send` events, read :meth:`statistics`; see :func:`open_redis_sink`."""

    def __init__(self, client: Any, options: dict[str, Any]) -> None:
        self._client = client
        o = options
        self.market: str = o["market"]
        self.prefix: str = o["prefix"]
        self.policy = SinkPolicy(o["policy"])
        self.cluster: bool = o["cluster"]
        self.max_spool_bytes: int = o["max_spool_bytes"]
        self._spool: Spool | None = Spool(o["spool"]) if self.policy is SinkPolicy.SPOOL else None
        self._decoder = Decoder()  # replaying raw frames from the spool
        self.max_batch_events: int = o["max_batch_events"]
        self.max_batch_bytes: int = o["max_batch_bytes"]
        self.flush_interval: float = o["flush_interval"]
        self.max_pending_events: int = o["max_pending_events"]
        self.max_pending_bytes: int = o["max_pending_bytes"]
        self.max_entries_per_write: int = o["max_entries_per_write"]
        self.maxlen: int | None = o["maxlen"]
        self.max_age: float | None = o["max_age"]
        self.control_maxlen: int = o["control_maxlen"]
        self.snapshot_maxlen: int = o["snapshot_maxlen"]
        self.snapshot_interval: float = o["snapshot_interval"]
        self.snapshot_limit: int = o["snapshot_limit"]
        self.rest_url: str | None = o["rest_url"]
        self.backoff_initial: float = o["backoff_initial"]
        self.backoff_cap: float = o["backoff_cap"]
        self.close_timeout: float = o["close_timeout"]
        self._rng: random.Random = o["rng"] or random.Random()
        self._backoff = Backoff(initial=self.backoff_initial, cap=self.backoff_cap, rng=self._rng)
        self._wall_us: Callable[[], int] = o["wall_clock_us"]
        self._http: Any = None  # an httpx.AsyncClient, with rest_url only
        self._control = _Key("", control_key(market=self.market, prefix=self.prefix))
        self._keys: dict[str, _Key] = {}
        self._sealed: deque[_Batch] = deque()
        self._notes: deque[dict[bytes, bytes]] = deque()
        self._max_notes = 1024
        self._gap_notes: dict[str, list[Any]] = {}
        self._wake = trio.Event()
        self._space = trio.Event()
        self._progress = trio.Event()
        self._failure: BaseException | None = None
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._stack: AsyncExitStack | None = None
        # counters
        self._pending_events = 0
        self._pending_bytes = 0
        self._peak_pending = 0
        self._entries = self._events = self._bytes = 0
        self._retries = self._already = self._reconnects = 0
        self._dropped_events = 0
        self._dropped_ranges: list[DroppedRange] = []
        self._notes_dropped = 0
        self._blocked = 0.0
        self._blocked_since: float | None = None
        self._snapshots = 0
        self._write_ms = Latencies()
        self._spooled = self._spool_events = self._replayed = 0
        self._replaying = 0  # events taken from the spool, not yet acknowledged

    # -- lifetime ---------------------------------------------------------------

    async def __aenter__(self) -> RedisSink:
        self._stack = await enter(self._open)
        return self

    async def _open(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(self._client)
        await self._client.ping()
        if self.rest_url is not None:
            import httpx  # only for book snapshots

            self._http = await stack.enter_async_context(httpx.AsyncClient())
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._nursery.start_soon(self._writer)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: Any) -> None:
        assert self._stack is not None and self._nursery is not None
        try:
            if exc_type is None and self._failure is None:
                with trio.move_on_after(self.close_timeout):
                    await self.flush()
            self._closed = True
            if self._pending_events:
                logger.warning("sink closed with %d events not written (counted in "
                               "pending_events)", self._pending_events)
            self._nursery.cancel_scope.cancel()
            await leave(self._stack, exc_type, exc, tb)
        finally:
            self._closed = True
            if self._spool is not None:
                self._spool.close()

    # -- input ------------------------------------------------------------------

    def _full(self) -> bool:
        return (self._pending_events >= self.max_pending_events
                or self._pending_bytes >= self.max_pending_bytes)

    def _must_wait(self) -> bool:
        """Whether ``send`` waits: ``block`` when full; ``spool`` when full and so is the spool."""
        if self.policy is SinkPolicy.BLOCK:
            return self._full()
        if self.policy is SinkPolicy.SPOOL:
            assert self._spool is not None
            return self._spool.bytes >= self.max_spool_bytes and self._full()
        return False

    def _check_open(self) -> None:
        if self._failure is not None:
            raise SinkClosed("the sink's writer failed") from self._failure
        if self._closed:
            raise SinkClosed("the sink is closed")

    async def send(self, event: Event, *, raw: bytes | None = None) -> None:
        """Queue one event for its stream; under ``block``, wait while the sink is full.

        ``raw``, if given, is the frame the event was decoded from (the combined
        envelope), written instead of the normalised JSON (``fmt=raw``).  One
        call is one checkpoint: a producer with many events at hand should
        give them to :meth:`send_batch` instead.
        """
        await self.send_batch((event,), raws=None if raw is None else (raw,))

    async def send_batch(self, events: Sequence[Event], *,
                         raws: Sequence[bytes] | None = None) -> None:
        """Queue many events (of any streams) with one checkpoint; the batch is taken whole.

        Under ``block`` it waits while the sink is full, then takes every event
        of the batch, so ``pending_events`` can pass ``max_pending_events`` by
        less than one batch; cancelled while waiting, it has taken none.
        ``raws``, if given, holds each event's frame (see :meth:`send`).
        Raises ``ValueError`` before taking any, if an event has no stream or
        ``raws`` does not match ``events``.
        """
        self._check_open()
        self._check_batch(events, raws)
        if self._must_wait():
            await self._wait_for_space()
        else:
            await trio.lowlevel.checkpoint()
        self._add_all(events, raws)

    def send_nowait(self, event: Event, *, raw: bytes | None = None) -> None:
        """:meth:`send` without waiting: raise ``trio.WouldBlock`` if ``block`` would wait."""
        self.send_batch_nowait((event,), raws=None if raw is None else (raw,))

    def send_batch_nowait(self, events: Sequence[Event], *,
                          raws: Sequence[bytes] | None = None) -> None:
        """:meth:`send_batch` without waiting: ``trio.WouldBlock`` (none taken) if it would."""
        self._check_open()
        self._check_batch(events, raws)
        if self._must_wait():
            raise trio.WouldBlock
        self._add_all(events, raws)

    @staticmethod
    def _check_batch(events: Sequence[Event], raws: Sequence[bytes] | None) -> None:
        if raws is not None and len(raws) != len(events):
            raise ValueError(f"{len(raws)} raw frames for {len(events)} events")
        for event in events:
            if event.stream is None:
                raise ValueError(
                    f"{type(event).__name__} has no stream: the sink cannot place it")

    async def _wait_for_space(self) -> None:
        """Wait until the sink is not full (``block``), counted in ``blocked_seconds``."""
        self._blocked_since = started = trio.current_time()
        try:
            while self._must_wait():
                self._space = trio.Event() if self._space.is_set() else self._space
                await self._space.wait()
                self._check_open()
        finally:
            self._blocked_since = None
            self._blocked += trio.current_time() - started

    def _add_all(self, events: Sequence[Event], raws: Sequence[bytes] | None) -> None:
        add = self._add
        if raws is None:
            for event in events:
                add(event, None)
        else:
            for event, raw in zip(events, raws, strict=True):
                add(event, raw)

    def note(self, kind: str, **fields: str | int | float | None) -> None:
        """Write a control entry (``kind`` plus ``fields``), e.g. a resync or a rotation.

        At most 1024 notes wait for the server; past that the oldest is dropped
        and counted in ``notes_dropped``.
        """
        entry = {b"v": SCHEMA_VERSION, b"kind": kind.encode(), b"t": _text(self._wall_us())}
        for name, value in fields.items():
            entry[name.encode()] = b"" if value is None else str(value).encode()
        if len(self._notes) >= self._max_notes:
            self._notes.popleft()
            self._notes_dropped += 1
        self._notes.append(entry)
        self._wake.set()

    def _state(self, stream: str) -> _Key:
        parsed = parse_stream(stream)
        state = _Key(stream, stream_key(parsed, market=self.market, prefix=self.prefix))
        if self.rest_url is not None and parsed.kind == "depth" and parsed.symbol:
            state.book = OrderBook(parsed.symbol)
        self._keys[stream] = state
        return state

    def _add(self, event: Event, raw: bytes | None) -> None:
        stream: str = event.stream  # type: ignore[assignment]  # checked by _check_batch
        state = self._keys.get(stream) or self._state(stream)
        if raw is None:
            data, fmt = encode_event(event), b"json"
        else:
            data, fmt = bytes(raw), b"raw"
        batch = state.open
        if batch is None or batch.fmt != fmt:
            if batch is not None:
                self._seal(state)
            batch = state.open = _Batch(state, fmt, trio.current_time(), self._wall_us())
            self._wake.set()
        batch.append(data, event)
        self._pending_events += 1
        self._pending_bytes += len(data)
        if self._pending_events > self._peak_pending:
            self._peak_pending = self._pending_events
        book = state.book
        if book is not None and type(event) is DepthUpdate:
            if book.receive_update(event) is not None:
                self._request_snapshot(state)
        if len(batch.items) >= self.max_batch_events or batch.nbytes >= self.max_batch_bytes:
            self._seal(state)
        if self._full() and self.policy is not SinkPolicy.BLOCK:
            self._shed()

    def _seal(self, state: _Key) -> None:
        batch = state.open
        assert batch is not None
        state.open = None
        book = state.book
        if (book is not None and not book.stale and book.last_update_id == batch.last
                and batch.opened - state.last_snapshot >= self.snapshot_interval):
            state.last_snapshot = batch.opened
            levels = [[format(p, "f"), format(q, "f")] for p, q in book.bids()]
            asks = [[format(p, "f"), format(q, "f")] for p, q in book.asks()]
            batch.snapshot = {
                b"v": SCHEMA_VERSION, b"L": _text(book.last_update_id),
                b"bids": orjson.dumps(levels), b"asks": orjson.dumps(asks),
            }
        self._sealed.append(batch)
        self._wake.set()

    def _seal_due(self, now: float) -> float | None:
        """Seal the open batches older than ``flush_interval``; return the next deadline."""
        next_deadline = None
        for state in self._keys.values():
            batch = state.open
            if batch is None:
                continue
            deadline = batch.opened + self.flush_interval
            if deadline <= now:
                self._seal(state)
            elif next_deadline is None or deadline < next_deadline:
                next_deadline = deadline
        return next_deadline

    def _shed(self) -> None:
        """Make room: drop (``drop_oldest``) or spill (``spool``) the oldest batches not sent."""
        while self._full():
            batch: _Batch | None
            if self._sealed:
                batch = self._sealed.popleft()
            else:
                opened = [s for s in self._keys.values() if s.open is not None]
                if not opened:
                    return  # everything left is in flight
                state = min(opened, key=lambda s: s.open.opened)  # type: ignore[union-attr]
                batch, state.open = state.open, None
            assert batch is not None
            if self.policy is SinkPolicy.SPOOL:
                self._spill(batch)
            else:
                self._drop(batch)

    def _spill(self, batch: _Batch) -> None:
        assert self._spool is not None
        if not self._spool_events:
            logger.warning("sink full: spooling the oldest events to %s", self._spool.base)
        self._spool.spill(batch.state.stream, batch.t0 * 1000, batch.items)
        count = len(batch.items)
        self._pending_events -= count
        self._pending_bytes -= batch.nbytes
        self._spooled += count
        self._spool_events += count
        self._wake.set()

    def _drop(self, batch: _Batch) -> None:
        state, count = batch.state, len(batch.items)
        if state.dropped is None:
            logger.warning("sink full: dropping the oldest events of %s (drop_oldest)",
                           state.stream)
        self._pending_events -= count
        self._pending_bytes -= batch.nbytes
        self._dropped_events += count
        _merge(self._dropped_ranges, state.stream, batch.first, batch.last, count)
        if len(self._dropped_ranges) > 1000:
            del self._dropped_ranges[0]
        for holder in (state, None):
            current = state.dropped if holder is state else self._gap_notes.get(state.stream)
            if current is None:
                current = [batch.first, batch.last, 0]
            else:
                if current[0] is None:
                    current[0] = batch.first
                if batch.last is not None:
                    current[1] = batch.last
            current[2] += count
            if holder is state:
                state.dropped = current
            else:
                self._gap_notes[state.stream] = current
        self._wake.set()

    async def flush(self) -> None:
        """Seal every open batch and wait until everything sent so far is acknowledged."""
        for state in self._keys.values():
            if state.open is not None:
                self._seal(state)
        while (self._pending_events > 0 or self._notes or self._gap_notes or self._replaying
               or (self._spool is not None and self._spool.has_data())):
            self._check_open()
            self._progress = trio.Event() if self._progress.is_set() else self._progress
            await self._progress.wait()

    # -- snapshots --------------------------------------------------------------

    def _request_snapshot(self, state: _Key) -> None:
        if not state.fetching and self._nursery is not None:
            state.fetching = True
            self._nursery.start_soon(self._fetch_snapshot, state)

    async def _fetch_snapshot(self, state: _Key) -> None:
        import httpx

        assert self._http is not None and state.book is not None
        book = state.book
        backoff = Backoff(initial=self.backoff_initial, cap=self.backoff_cap, rng=self._rng)
        try:
            while True:
                try:
                    response = await self._http.get(
                        f"{self.rest_url}{SPOT.snapshot_path}",
                        params={"symbol": book.symbol, "limit": self.snapshot_limit},
                    )
                    response.raise_for_status()
                    if book.receive_snapshot(response.content) is None:
                        return
                    backoff.healthy()  # too old: fetch again soon
                except (httpx.HTTPError, ValueError) as exc:
                    logger.info("book snapshot of %s failed: %s", book.symbol, exc)
                await trio.sleep(backoff.next_delay())
        finally:
            state.fetching = False

    # -- the writer -------------------------------------------------------------

    def _retention(self, key: str) -> dict[str, Any]:
        from coredis import PureToken

        if self.max_age is not None:
            floor = max(0, self._wall_us() // 1000 - int(self.max_age * 1000))
            return dict(trim_strategy=PureToken.MINID, trim_operator=PureToken.APPROXIMATELY,
                        threshold=f"{floor}-0")
        return dict(trim_strategy=PureToken.MAXLEN, trim_operator=PureToken.APPROXIMATELY,
                    threshold=self.maxlen)

    async def _writer(self) -> None:
        try:
            while True:
                while True:
                    deadline = self._seal_due(trio.current_time())
                    if (self._sealed or self._notes or self._gap_notes
                            or (self._spool is not None and self._spool.has_data())):
                        break
                    self._wake = trio.Event()
                    with trio.move_on_at(deadline if deadline is not None else float("inf")):
                        await self._wake.wait()
                await self._write_round()
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                self._failure = exc
            self._space.set()
            self._progress.set()
            raise

    def _take(self) -> list[_Batch]:
        if self._spool is not None and self._spool.has_data():
            return self._take_spooled(self._spool)  # BRK4: the spool before what is newer
        taken: list[_Batch] = []
        while self._sealed and len(taken) < self.max_entries_per_write:
            batch = self._sealed.popleft()
            state = batch.state
            if state.dropped is not None:
                first, last, count = state.dropped
                batch.gap = b"%s:%s:%d" % (_text(first), _text(last), count)
                state.dropped = None
            taken.append(batch)
        return taken

    def _take_spooled(self, spool: Spool) -> list[_Batch]:
        """Batches remade from the oldest spooled events, one stream's run at a time."""
        records, done = spool.take(self.max_batch_events * self.max_entries_per_write)
        self._replaying += len(records)
        taken: list[_Batch] = []
        batch: _Batch | None = None
        for record in records:
            stream = record.stream or ""
            item = record.raw.encode() if isinstance(record.raw, str) else record.raw
            raw = item.startswith(b'{"stream":')
            if (batch is None or batch.state.stream != stream or (b"raw" if raw else b"json")
                    != batch.fmt or len(batch.items) >= self.max_batch_events
                    or batch.nbytes >= self.max_batch_bytes):
                state = self._keys.get(stream) or self._state(stream)
                batch = _Batch(state, b"raw" if raw else b"json", trio.current_time(),
                               record.t // 1000, spooled=True)
                taken.append(batch)
            event = (self._decoder.decode(item) if raw
                     else decode_json_payload(b"[" + item + b"]")[0])
            batch.append(item, event)
        if done is not None:
            if taken:
                taken[-1].segment = done
            else:
                spool.delete(done)
        return taken

    def _take_notes(self) -> list[dict[bytes, bytes]]:
        notes = list(self._notes)
        self._notes.clear()
        for stream, (first, last, count) in self._gap_notes.items():
            notes.append({b"v": SCHEMA_VERSION, b"kind": b"gap", b"t": _text(self._wall_us()),
                          b"stream": stream.encode(), b"first": _text(first),
                          b"last": _text(last), b"count": _text(count)})
        self._gap_notes.clear()
        return notes

    async def _check_keys(self, batches: list[_Batch]) -> None:
        """Read the last id of keys written for the first time, so ours stay above it."""
        fresh = {b.state.key: b.state for b in batches if not b.state.checked}
        if not self._control.checked:
            fresh[self._control.key] = self._control
        if not fresh:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            requests = [(state, pipe.xrevrange(key, count=1)) for key, state in fresh.items()]
        for state, request in requests:
            entries = await request
            if entries:
                ms, seq = entries[0].identifier.decode().split("-")
                if (int(ms), int(seq)) > (state.ms, state.seq):
                    state.ms, state.seq = int(ms), int(seq)
            state.checked = True

    async def _write_round(self) -> None:
        from coredis.exceptions import ResponseError

        transient = transient_errors()
        batches = self._take()
        notes = self._take_notes()
        failures = 0
        ids_checked = False
        while True:
            try:
                if not ids_checked:
                    await self._check_keys(batches)
                    ids_checked = True
                    now_ms = self._wall_us() // 1000
                    for batch in batches:
                        batch.entry_id = batch.state.next_id(now_ms)
                    for note in notes:
                        note[b"id"] = self._control.next_id(now_ms).encode()
                started = time.perf_counter()
                sent_at = _text(self._wall_us())
                commands: list[tuple[_Batch | None, str, dict[bytes, bytes], dict[str, Any]]]
                commands = []
                for note in notes:
                    fields = {k: v for k, v in note.items() if k != b"id"}
                    commands.append((None, self._control.key, fields, dict(
                        identifier=note[b"id"], trim_strategy=_maxlen(),
                        trim_operator=_approx(), threshold=self.control_maxlen)))
                for batch in batches:
                    batch.attempts += 1
                    fields = {
                        b"v": SCHEMA_VERSION, b"fmt": batch.fmt,
                        b"n": b"%d" % len(batch.items), b"first": _text(batch.first),
                        b"last": _text(batch.last), b"t0": b"%d" % batch.t0,
                        b"t": sent_at, b"gap": batch.gap,
                        b"p": b"[" + b",".join(batch.items) + b"]",
                    }
                    commands.append((batch, batch.state.key, fields, dict(
                        identifier=batch.entry_id, **self._retention(batch.state.key))))
                    if batch.snapshot is not None:
                        commands.append((None, snapshot_key(
                            batch.state.stream, market=self.market, prefix=self.prefix),
                            batch.snapshot, dict(
                                identifier=batch.entry_id, trim_strategy=_maxlen(),
                                trim_operator=_approx(), threshold=self.snapshot_maxlen)))
                requests: list[tuple[_Batch | None, Any]] = []
                try:
                    # One transaction a round; on a cluster one per hash tag (one slot each).
                    for group in by_slot(commands, lambda c: c[1], self.cluster):
                        async with self._client.pipeline(transaction=True,
                                                         raise_on_error=False) as pipe:
                            for owner, key, fields, options in group:
                                requests.append((owner, pipe.xadd(key, fields, **options)))
                except ResponseError as exc:
                    if server_busy(exc):
                        raise ServerBusy(str(exc)) from exc
                    raise BrokerError(f"the server refused a write: {exc}") from exc
                retried = failures > 0
                for owner, request in requests:
                    try:
                        await request
                    except ResponseError as exc:
                        if server_busy(exc):
                            raise ServerBusy(str(exc)) from exc
                        if "equal or smaller" not in str(exc):
                            raise BrokerError(f"the server refused an XADD: {exc}") from exc
                        if not retried:
                            key = owner.state.key if owner else "the control stream"
                            raise BrokerError(
                                f"another writer is writing {key}: its last id is above ours"
                            ) from exc
                        if owner is not None:
                            self._already += 1
                self._write_ms.add((time.perf_counter() - started) * 1000.0)
                self._backoff.healthy()
                break
            except transient as exc:
                failures += 1
                self._retries += len(batches)
                self._reconnects += 1
                delay = self._backoff.next_delay()
                logger.warning("redis write failed (%s: %.200s); retrying %d entries in %.2f s",
                               type(exc).__name__, exc, len(batches), delay)
                await trio.sleep(delay)
        for batch in batches:
            count = len(batch.items)
            self._entries += 1
            self._events += count
            self._bytes += batch.nbytes
            if batch.spooled:
                self._spool_events = max(0, self._spool_events - count)
                self._replaying -= count
                self._replayed += count
                if batch.segment is not None:
                    assert self._spool is not None
                    self._spool.delete(batch.segment)
            else:
                self._pending_events -= count
                self._pending_bytes -= batch.nbytes
            if batch.snapshot is not None:
                self._snapshots += 1
        self._space.set()
        self._progress.set()

    # -- statistics -------------------------------------------------------------

    def statistics(self) -> SinkStatistics:
        """A frozen snapshot of the sink's counters; see :class:`SinkStatistics`."""
        return SinkStatistics(
            policy=self.policy.value,
            pending_events=self._pending_events,
            pending_bytes=self._pending_bytes,
            peak_pending_events=self._peak_pending,
            entries=self._entries,
            events=self._events,
            bytes=self._bytes,
            retries=self._retries,
            already_written=self._already,
            reconnects=self._reconnects,
            dropped_events=self._dropped_events,
            dropped_ranges=tuple(self._dropped_ranges),
            notes_dropped=self._notes_dropped,
            blocked_seconds=self._blocked + (
                trio.current_time() - self._blocked_since if self._blocked_since is not None
                else 0.0),
            write_p50=self._write_ms.percentile(50),
            write_p99=self._write_ms.percentile(99),
            snapshots=self._snapshots,
            spooled_events=self._spooled,
            spool_events=self._spool_events,
            spool_bytes=self._spool.bytes if self._spool is not None else 0,
            replayed_events=self._replayed,
        )


def _maxlen() -> Any:
    from coredis import PureToken

    return PureToken.MAXLEN


def _approx() -> Any:
    from coredis import PureToken

    return PureToken.APPROXIMATELY


def open_redis_sink(
    url: str,
    *,
    market: str = "spot",
    prefix: str = DEFAULT_PREFIX,
    policy: SinkPolicy | str = SinkPolicy.BLOCK,
    spool: str | os.PathLike[str] | None = None,
    max_spool_bytes: int = 1 << 30,
    cluster: bool = False,
    max_batch_events: int = 100,
    max_batch_bytes: int = 256 * 1024,
    flush_interval: float = 0.005,
    max_pending_events: int = 100_000,
    max_pending_bytes: int = 64 * 1024 * 1024,
    max_entries_per_write: int = 64,
    maxlen: int | None = 100_000,
    max_age: float | None = None,
    control_maxlen: int = 10_000,
    snapshot_maxlen: int = 4,
    snapshot_interval: float = 5.0,
    snapshot_limit: int = 1000,
    rest_url: str | None = None,
    connect_timeout: float = 5.0,
    write_timeout: float = 5.0,
    close_timeout: float = 10.0,
    backoff_initial: float = 0.05,
    backoff_cap: float = 5.0,
    rng: random.Random | None = None,
    wall_clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
) -> RedisSink:
    """Open a sink writing events into Redis Streams: ``async with open_redis_sink(url) as sink``.

    ``url`` is a ``redis://`` (or ``rediss://``) URL.  Entering pings the
    server and raises if it cannot be reached.  Leaving without an error
    flushes what is pending (for at most ``close_timeout`` seconds).

    Batching: an entry holds at most ``max_batch_events`` events or
    ``max_batch_bytes`` bytes, and waits at most ``flush_interval`` seconds;
    up to ``max_entries_per_write`` entries go in one pipelined round trip.
    Bounds: ``max_pending_events`` / ``max_pending_bytes``, past which
    ``policy`` applies (``"block"``, ``"drop_oldest"``, or ``"spool"`` with
    ``spool``, the path of the spool's files, holding at most
    ``max_spool_bytes`` before ``send`` waits; module docstring).
    Retention: ``MAXLEN ~ maxlen`` per stream, or with ``max_age`` (seconds)
    ``MINID ~`` that old; one of them is required.  ``control_maxlen`` and
    ``snapshot_maxlen`` bound the control and snapshot streams.  Book
    snapshots: ``rest_url`` (e.g. ``https://api.binance.com``; ``None``: no
    snapshots), every ``snapshot_interval`` seconds, ``snapshot_limit`` levels
    per REST request.  ``market`` and ``prefix`` name the keys (``_keys``).
    ``cluster=True``: ``url`` is any node of a Redis Cluster; each round trip
    is then one transaction per hash tag (a symbol's streams share one).
    Timeouts and backoff are in seconds; ``rng`` and ``wall_clock_us`` are for
    tests.
    """
    if maxlen is None and max_age is None:
        raise ValueError("a stream must be bounded: give maxlen or max_age")
    if (SinkPolicy(policy) is SinkPolicy.SPOOL) != (spool is not None):
        raise ValueError('policy="spool" and spool (a file path) go together')
    if max_batch_events < 1 or max_entries_per_write < 1:
        raise ValueError("max_batch_events and max_entries_per_write must be at least 1")
    if max_pending_events < max_batch_events * max_entries_per_write:
        raise ValueError("max_pending_events must hold at least one full write "
                         "(max_batch_events * max_entries_per_write)")
    client = redis_client(url, connect_timeout=connect_timeout, read_timeout=write_timeout,
                          cluster=cluster)
    options = dict(
        market=market, prefix=prefix, policy=SinkPolicy(policy), spool=spool, cluster=cluster,
        max_spool_bytes=max_spool_bytes,
        max_batch_events=max_batch_events, max_batch_bytes=max_batch_bytes,
        flush_interval=flush_interval, max_pending_events=max_pending_events,
        max_pending_bytes=max_pending_bytes, max_entries_per_write=max_entries_per_write,
        maxlen=maxlen, max_age=max_age, control_maxlen=control_maxlen,
        snapshot_maxlen=snapshot_maxlen, snapshot_interval=snapshot_interval,
        snapshot_limit=snapshot_limit, rest_url=rest_url.rstrip("/") if rest_url else None,
        backoff_initial=backoff_initial, backoff_cap=backoff_cap, close_timeout=close_timeout,
        rng=rng, wall_clock_us=wall_clock_us,
    )
    return RedisSink(client, options)


async def publish(feed: Feed | AsyncIterator[Event], sink: RedisSink, *,
                  limit: int | None = None, note_interval: float = 1.0,
                  max_batch: int = 1024) -> int:
    """Send every event of ``feed`` to ``sink`` (at most ``limit``); return how many were sent.

    Events go to the sink in batches, one :meth:`RedisSink.send_batch` (one
    checkpoint) per batch: after waiting for an event, everything the feed
    already holds (up to ``max_batch`` events, through ``receive_nowait``)
    goes with it.  A source without ``receive_nowait`` is sent event by event.

    A feed opened with ``payloads=True`` has its frames written exactly as
    Binance sent them (``fmt=raw``); otherwise the events are normalised JSON.

    For a :class:`~trio_feed.Feed`, every ``note_interval`` seconds the feed's
    reconnects, rotations and missing ids are compared with the last look, and
    what changed is written to the control stream (``resync``, ``rotation``,
    ``missing``).
    """
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    sent = 0
    last = None
    next_look = trio.current_time() + note_interval
    more: Callable[[], Event] | None = getattr(feed, "receive_nowait", None)
    # A feed opened with payloads=True: its frames go out exactly as received (fmt=raw).
    frames = isinstance(feed, Feed) and feed.keeps_payloads
    async for event in feed:
        room = max_batch if limit is None else min(max_batch, limit - sent)
        batch = [event]
        raws: list[bytes] | None = None
        if frames:
            assert isinstance(feed, Feed) and feed.last_payload is not None
            raws = [feed.last_payload]
        failure: BaseException | None = None
        if more is not None:
            while len(batch) < room:
                try:
                    batch.append(more())
                except (trio.WouldBlock, trio.EndOfChannel, StopAsyncIteration):
                    break
                except Exception as exc:  # the feed's failure, after what it had queued
                    failure = exc
                    break
                if raws is not None:
                    raws.append(feed.last_payload)  # type: ignore[union-attr,arg-type]
        await sink.send_batch(batch, raws=raws)
        sent += len(batch)
        if failure is not None:
            raise failure
        if isinstance(feed, Feed) and trio.current_time() >= next_look:
            next_look = trio.current_time() + note_interval
            last = _note_changes(feed, sink, last)
        if limit is not None and sent >= limit:
            break
    return sent


def _note_changes(feed: Feed, sink: RedisSink, last: tuple[int, int, int] | None
                  ) -> tuple[int, int, int]:
    stats = feed.statistics()
    now = (sum(stats.reconnects.values()), stats.rotations, stats.missing)
    if last is not None:
        if now[0] > last[0]:
            sink.note("resync", reconnects=now[0] - last[0])
        if now[1] > last[1]:
            sink.note("rotation", rotations=now[1] - last[1])
        if now[2] > last[2]:
            sink.note("missing", ids=now[2] - last[2])
    return now
