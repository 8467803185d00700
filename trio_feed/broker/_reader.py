"""``open_redis_feed``: the events a sink published, on any process or machine.

::

    async with open_redis_feed("redis://host:6379", ["btcusdt@trade"]) as feed:
        async for event in feed:
            print(event)

It yields the same typed events as :func:`~trio_feed.open_feed`, plus
:class:`Gap` items where events are known to be missing, in order within each
stream (streams interleave as they are read).

Theory of operation
-------------------

One task reads every stream's key and the control stream with one blocking
``XREAD`` (``count`` entries per key, ``block`` milliseconds), decodes each
entry (``_codec``), checks continuity, and hands the events to the consumer
through a channel of ``max_queued`` entries; when the consumer is slow the
reader stops reading, and the data waits in Redis (until retention trims it:
a hole that then shows up as missing ids).  A failed read is retried after a
jittered backoff from the last id read, so nothing is skipped or repeated.

Continuity.  Events are judged by Binance's sequence rules, the same ones
``open_feed`` uses (``trio_feed.binance._sequence``).  For streams with
consecutive ids (trades, aggTrades, diff depth) a hole between events becomes
a ``Gap(reason="missing")`` and is counted in ``missing``; an event at or
below the last id seen is skipped and counted in ``duplicates``.  A sink's
gap marker (``drop_oldest``) becomes a ``Gap(reason="dropped")`` carrying
the sink's own count, and continuity resumes after it, so one hole is
reported once.  Control-stream entries are
counted by kind in ``notices``.

Consumer groups.  With ``group=`` and ``consumer=``, the feed reads with
``XREADGROUP``: the consumers of one group share the entries, each entry going
to one of them.  An entry is acknowledged (``XACK``) once the consumer has
been handed all its events and asks for the next item, so an entry a consumer
was in the middle of when it died is not lost: it stays pending, and after
``claim_idle`` seconds another consumer of the group takes it over
(``XAUTOCLAIM``) and hands it out again (at least once).  A consumer that
restarts under its name first hands out its own pending entries.  Within a
group each consumer sees a share of the entries, so continuity is judged
within each entry only (the sink's gap markers still become gaps); the
control stream and book snapshots are for plain readers.  ``start`` places a
group that does not exist yet; an existing group keeps its position.

Where to start: ``start="latest"`` (entries written from now on), ``"earliest"``
(everything retained), an entry id (entries after it), or a time (a
``datetime`` or epoch seconds: entries written from then on).  With
``books=True`` a diff-depth stream starts from the newest book snapshot at or
before that point, handed out first as a :class:`~trio_feed.binance.PartialDepth`;
its entry id is that of the depth entry it follows, so the diff events after it
chain onto it: feed both to an :class:`~trio_feed.binance.OrderBook`.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Iterable
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

import attrs
import orjson
import trio

from .._errors import SchemaError
from ..binance import Decoder, Event, PartialDepth, Stream, parse_stream
from ..binance._sequence import BROKEN, DUPLICATE, RULES
from ..feed import StreamStatistics
from ..feed._backoff import Backoff
from ._client import by_slot, enter, leave, redis_client
from ._client import transient as transient_errors
from ._codec import SCHEMA_VERSION, decode_json_payload, load_payload
from ._keys import DEFAULT_PREFIX, control_key, snapshot_key, stream_key
from ._statistics import Latencies, RedisFeedStatistics

__all__ = ["Gap", "RedisFeed", "open_redis_feed"]

logger = logging.getLogger("trio_feed.broker")

_MAX_SEQ = 18446744073709551615


@attrs.frozen
class Gap:
    """Events of ``stream`` known to be missing just before the next event of that stream.

    ``reason`` is ``"dropped"`` (the sink dropped them under ``drop_oldest``;
    ``count`` is its count) or ``"missing"`` (ids absent from the stream).
    ``first``/``last`` are the missing ids, ``None`` where unknown.
    """

    stream: str
    first: int | None
    last: int | None
    count: int
    reason: str

    def describe(self) -> str:
        """One readable line, e.g. ``btcusdt@trade  gap: 120 events dropped (ids 5-124)``."""
        ids = f" (ids {self.first}-{self.last})" if self.first is not None else ""
        return f"{self.stream}  gap: {self.count} events {self.reason}{ids}"


@attrs.define(slots=True, eq=False)
class _StreamState:
    stream: Stream
    key: str
    last: int | None = None
    events: int = 0
    bytes: int = 0
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0


@attrs.frozen
class _Ack:
    """Queued after the events of a group's entry: reached, the entry is acknowledged."""

    key: str
    entry_id: str


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _start_id(start: str | float | datetime.datetime) -> str | None:
    """The id to read after, or ``None`` for "latest"."""
    if isinstance(start, datetime.datetime):
        start = start.timestamp()
    if isinstance(start, (int, float)):
        ms = int(start * 1000)
        return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"
    if start == "latest":
        return None
    if start == "earliest":
        return "0-0"
    head, _, seq = start.partition("-")
    if not head.isdigit() or (seq and not seq.isdigit()):
        raise ValueError(
            f"start must be 'latest', 'earliest', an entry id or a time, not {start!r}")
    return start if seq else f"{start}-0"


def _levels(raw: bytes, decimals: bool) -> list[list[Any]]:
    levels: list[list[Any]] = orjson.loads(raw)
    if decimals:
        return [[Decimal(p), Decimal(q)] for p, q in levels]
    return levels


class RedisFeed:
    """A running broker feed: iterate it with ``async for``.  Made by :func:`open_redis_feed`."""

    def __init__(self, client: Any, streams: list[Stream], options: dict[str, Any]) -> None:
        self._client = client
        self.market: str = options["market"]
        self.prefix: str = options["prefix"]
        self._start = options["start"]
        self._books: bool = options["books"]
        self._decimals: bool = options["decimals"]
        self._count: int = options["count"]
        self._block: int = options["block_ms"]
        self._max_queued: int = options["max_queued"]
        self._backoff_initial: float = options["backoff_initial"]
        self._backoff_cap: float = options["backoff_cap"]
        self._rng: random.Random = options["rng"] or random.Random()
        self._group: str | None = options["group"]
        self._cluster: bool = options["cluster"]
        self._consumer: str | None = options["consumer"]
        self._claim_idle_ms: int = int(options["claim_idle"] * 1000)
        self._claim_interval: float = options["claim_interval"]
        self._ack_timeout: float = options["ack_timeout"]
        self._decoder = Decoder(streams, decimals=self._decimals)
        self._states: dict[str, _StreamState] = {}
        for stream in streams:
            key = stream_key(stream, market=self.market, prefix=self.prefix)
            self._states[key] = _StreamState(stream, key)
        self._control = control_key(market=self.market, prefix=self.prefix)
        self._ids: dict[str, str] = {}
        self._pending: deque[Any] = deque()
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._receive: trio.MemoryReceiveChannel[Any] | None = None
        self._entries = self._bytes = self._events = 0
        self._dropped = self._gaps = self._reconnects = self._snapshots = 0
        self._queued = 0
        self._notices: Counter[str] = Counter()
        self._lag = Latencies()
        # consumer groups: entries to acknowledge, per key; entries held (read, not acked)
        self._acks: dict[str, list[str]] = {}
        self._held: set[tuple[str, str]] = set()
        self._cursors: dict[str, str] = {}
        self._next_claim: dict[str, float] = {}
        self._acked = self._claimed = self._deleted = 0

    @property
    def streams(self) -> list[str]:
        """The names of the streams read."""
        return [s.stream.name for s in self._states.values()]

    # -- lifetime ---------------------------------------------------------------

    async def __aenter__(self) -> RedisFeed:
        self._stack = await enter(self._open)
        return self

    async def _open(self, stack: AsyncExitStack) -> None:
        await stack.enter_async_context(self._client)
        await self._position()
        stack.push_async_callback(self._last_acks)  # after the nursery's exit, before the client's
        send, self._receive = trio.open_memory_channel[Any](self._max_queued)
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        with send:  # one reading task per slot on a cluster (XREAD cannot span slots)
            for keys in by_slot(self._ids, lambda key: key, self._cluster):
                self._nursery.start_soon(self._read, send.clone(), keys)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: Any) -> None:
        assert self._stack is not None and self._nursery is not None
        self._nursery.cancel_scope.cancel()
        await leave(self._stack, exc_type, exc, tb)

    async def _last_acks(self) -> None:
        """On leaving, once the reading task is gone: acknowledge what was handed out since."""
        if not self._acks:
            return
        with trio.move_on_after(self._ack_timeout, shield=True):
            try:
                await self._send_acks()
            except transient_errors() as exc:  # they stay pending: claimed later
                logger.warning("acknowledging on close failed (%s: %s)", type(exc).__name__, exc)

    async def _position(self) -> None:
        """Resolve the start into one id per key; load the book snapshots to hand out first."""
        if self._group is not None:
            await self._join_group()
            return
        after = _start_id(self._start)
        keys = [*self._states, self._control]
        if after is None:
            async with self._client.pipeline(transaction=False) as pipe:
                requests = [(key, pipe.xrevrange(key, count=1)) for key in keys]
            for key, request in requests:
                entries = await request
                self._ids[key] = entries[0].identifier.decode() if entries else "0-0"
        else:
            for key in keys:
                self._ids[key] = after
        if not self._books:
            return
        depth = [s for s in self._states.values() if s.stream.kind == "depth"]
        if not depth:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            requests2 = [
                (state, pipe.xrevrange(
                    snapshot_key(state.stream, market=self.market, prefix=self.prefix),
                    end=self._ids[state.key] if after is not None else "+", count=1))
                for state in depth
            ]
        for state, request in requests2:
            entries = await request
            if not entries:
                continue
            entry = entries[0]
            fields = entry.field_values
            if fields.get(b"v") != SCHEMA_VERSION:
                raise SchemaError(f"book snapshot of version {fields.get(b'v')!r}")
            last_update_id = int(fields[b"L"])
            symbol = state.stream.symbol.upper() if state.stream.symbol else None
            self._pending.append(PartialDepth(
                last_update_id, _levels(fields[b"bids"], self._decimals),
                _levels(fields[b"asks"], self._decimals), symbol, state.stream.name,
            ))
            self._snapshots += 1
            self._ids[state.key] = entry.identifier.decode()
            state.last = last_update_id

    async def _join_group(self) -> None:
        """Create the group on every key (from the start) unless it exists; read own pending first.

        The group's position is shared: ``start`` only matters to the consumer
        that creates it.  ``"0-0"`` makes the first reads return this consumer's
        own pending entries (a restart under the same name), then ``">"``.
        """
        from coredis.exceptions import StreamDuplicateConsumerGroupError

        after = _start_id(self._start)
        for key in self._states:
            try:
                await self._client.xgroup_create(key, self._group, "$" if after is None else after,
                                                 mkstream=True)
            except StreamDuplicateConsumerGroupError:
                pass  # the group exists: it keeps its position
            self._ids[key] = "0-0"
            self._cursors[key] = "0-0"

    async def _send_acks(self) -> None:
        acks, self._acks = self._acks, {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                requests = [pipe.xack(key, self._group, ids) for key, ids in acks.items()]
            for request in requests:
                await request
        except BaseException:
            for key, ids in acks.items():  # not acknowledged: try again
                self._acks.setdefault(key, [])[:0] = ids
            raise
        for key, ids in acks.items():
            self._acked += len(ids)
            self._held.difference_update((key, i) for i in ids)

    async def _fetch(self, keys: list[str]) -> list[tuple[str, Any]]:
        """The next entries of ``keys`` as ``(key, entry)``: XREAD, or in a group XREADGROUP
        and XAUTOCLAIM."""
        ids = {key: self._ids[key] for key in keys}
        if self._group is None:
            result = await self._client.xread(ids, count=self._count, block=self._block)
            return [(_text(k), e) for k, entries in (result or {}).items() for e in entries]
        if self._acks:
            await self._send_acks()
        out: list[tuple[str, Any]] = []
        now = trio.current_time()
        if now >= self._next_claim.get(keys[0], float("-inf")):
            self._next_claim[keys[0]] = now + self._claim_interval
            out.extend(await self._claim(keys))
            if out:
                return out
        recovering = any(i != ">" for i in ids.values())
        result = await self._client.xreadgroup(
            self._group, self._consumer, ids, count=self._count,
            block=None if recovering else self._block)
        got = {_text(k): entries for k, entries in (result or {}).items()}
        for key, position in ids.items():
            entries = got.get(key, ())
            if position != ">":  # own pending entries, oldest first: until none are left
                if entries:
                    self._ids[key] = entries[-1].identifier.decode()
                else:
                    self._ids[key] = ">"
            for entry in entries:
                out.append((key, entry))
        return out

    async def _claim(self, keys: list[str]) -> list[tuple[str, Any]]:
        """Take over entries other consumers of the group held unacknowledged too long."""
        out: list[tuple[str, Any]] = []
        for key in keys:
            reply = await self._client.xautoclaim(key, self._group, self._consumer,
                                                  self._claim_idle_ms, self._cursors[key],
                                                  count=self._count)
            cursor, entries = reply[0], reply[1]
            self._cursors[key] = _text(cursor)
            if len(reply) > 2 and reply[2]:  # pending entries trimmed before anyone read them
                self._deleted += len(reply[2])
                logger.warning("%d pending entries of %s were trimmed before being read",
                               len(reply[2]), key)
            for entry in entries:
                if (key, entry.identifier.decode()) not in self._held:
                    self._claimed += 1
                    out.append((key, entry))
        return out

    # -- reading ----------------------------------------------------------------

    async def _read(self, send: trio.MemorySendChannel[Any], keys: list[str]) -> None:
        transient = transient_errors()
        backoff = Backoff(initial=self._backoff_initial, cap=self._backoff_cap, rng=self._rng)
        async with send:
            while True:
                try:
                    fetched = await self._fetch(keys)
                    backoff.healthy()
                except transient as exc:
                    self._reconnects += 1
                    delay = backoff.next_delay()
                    logger.warning("redis read failed (%s: %s); retrying in %.2f s",
                                   type(exc).__name__, exc, delay)
                    await trio.sleep(delay)
                    continue
                group = self._group is not None
                for key, entry in fetched:
                    entry_id = entry.identifier.decode()
                    if not group:
                        self._ids[key] = entry_id
                    fields = entry.field_values
                    if fields is None:  # a pending entry deleted by trimming
                        self._deleted += 1
                        self._acks.setdefault(key, []).append(entry_id)
                        continue
                    try:
                        items = self._entry(key, fields)
                    except Exception as exc:
                        await send.send(exc)
                        return
                    ack = None
                    if group:
                        self._held.add((key, entry_id))
                        ack = _Ack(key, entry_id)
                    if items or ack:
                        self._queued += len(items)
                        await send.send((items, ack))

    def _entry(self, key: str, fields: dict[bytes, bytes]) -> list[Any]:
        if fields.get(b"v") != SCHEMA_VERSION:
            raise SchemaError(f"an entry of {key} has schema version {fields.get(b'v')!r}; "
                              f"this reader knows {SCHEMA_VERSION.decode()}")
        if key == self._control:
            self._notices[fields.get(b"kind", b"?").decode()] += 1
            return []
        state = self._states[key]
        if self._group is not None:
            state.last = None  # a consumer sees a share of the entries: judge each alone
        name = state.stream.name
        payload = fields[b"p"]
        self._entries += 1
        self._bytes += len(payload)
        state.bytes += len(payload)
        t0 = fields.get(b"t0")
        if t0:
            self._lag.add((time.time_ns() // 1000 - int(t0)) / 1000.0)
        out: list[Any] = []
        gap = fields.get(b"gap")
        if gap:
            first_s, last_s, count_s = gap.split(b":")
            first = int(first_s) if first_s else None
            last = int(last_s) if last_s else None
            out.append(Gap(name, first, last, int(count_s), "dropped"))
            self._dropped += int(count_s)
            self._gaps += 1
            state.gaps += 1
            if last is not None:
                state.last = last
        fmt = fields.get(b"fmt")
        if fmt == b"json":
            events: list[Event] = decode_json_payload(payload, decimals=self._decimals)
        elif fmt == b"raw":
            decode = self._decoder.decode_object
            events = [decode(frame, name) for frame in load_payload(payload)]
        else:
            raise SchemaError(f"an entry of {key} has the unknown format {fmt!r}")
        rules = RULES
        last_seen = state.last
        append = out.append
        duplicates = 0
        for event in events:
            rule = rules.get(event.__class__)
            if rule is not None:
                if last_seen is not None:
                    verdict = rule.check(last_seen, event)
                    if verdict == DUPLICATE:
                        duplicates += 1
                        continue
                    if verdict:
                        state.gaps += 1
                        self._gaps += 1
                        if verdict == BROKEN:  # a futures chain broken, nothing countable
                            append(Gap(name, None, None, 0, "missing"))
                        else:
                            state.missing += verdict
                            append(Gap(name, last_seen + 1, last_seen + verdict, verdict,
                                       "missing"))
                last_seen = rule.position(event)
            append(event)
        state.last = last_seen
        state.duplicates += duplicates
        state.events += len(events) - duplicates
        return out

    # -- iteration --------------------------------------------------------------

    def __aiter__(self) -> RedisFeed:
        return self

    async def __anext__(self) -> Event | Gap:
        pending = self._pending
        while not pending:
            assert self._receive is not None
            try:
                item = await self._receive.receive()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
            if isinstance(item, BaseException):
                raise item
            items, ack = item
            self._queued -= len(items)
            pending.extend(items)
            if ack is not None:
                pending.append(ack)
        out: Event | Gap | _Ack = pending.popleft()
        while out.__class__ is _Ack:  # the entry before it is handed out whole: acknowledge it
            self._acks.setdefault(out.key, []).append(out.entry_id)
            if not pending:
                return await self.__anext__()
            out = pending.popleft()
        self._events += 1
        return out  # type: ignore[return-value]

    async def receive(self) -> Event | Gap:
        """The next event or gap, waiting for one: what ``async for`` does."""
        return await self.__anext__()

    # -- statistics -------------------------------------------------------------

    def statistics(self) -> RedisFeedStatistics:
        """A frozen snapshot of the counters; see :class:`RedisFeedStatistics`."""
        states = self._states.values()
        return RedisFeedStatistics(
            messages=self._entries,
            bytes=self._bytes,
            streams={s.stream.name: StreamStatistics(s.events, s.bytes, s.duplicates, s.gaps,
                                                     s.missing) for s in states},
            events=self._events,
            duplicates=sum(s.duplicates for s in states),
            missing=sum(s.missing for s in states),
            dropped=self._dropped,
            gaps=self._gaps,
            notices=dict(self._notices),
            queued=self._queued + sum(1 for item in self._pending if item.__class__ is not _Ack),
            reconnects=self._reconnects,
            snapshots=self._snapshots,
            lag_p50=self._lag.percentile(50),
            lag_p99=self._lag.percentile(99),
            acked=self._acked,
            claimed=self._claimed,
            deleted=self._deleted,
        )


def open_redis_feed(
    url: str,
    streams: Iterable[str | Stream],
    *,
    market: str = "spot",
    prefix: str = DEFAULT_PREFIX,
    start: str | float | datetime.datetime = "latest",
    books: bool = True,
    decimals: bool = False,
    count: int = 64,
    block_ms: int = 1000,
    max_queued: int = 64,
    connect_timeout: float = 5.0,
    read_timeout: float = 5.0,
    backoff_initial: float = 0.05,
    backoff_cap: float = 5.0,
    rng: random.Random | None = None,
    group: str | None = None,
    consumer: str | None = None,
    claim_idle: float = 30.0,
    claim_interval: float = 5.0,
    ack_timeout: float = 1.0,
    cluster: bool = False,
) -> RedisFeed:
    """Read what a sink published: ``async with open_redis_feed(url, streams) as feed``.

    ``streams`` are Binance stream names, as given to the publishing feed;
    ``market`` and ``prefix`` must match the sink's.  ``start``, ``books``:
    see the module docstring.  ``decimals=True`` turns prices into ``Decimal``.
    Each ``XREAD`` asks for ``count`` entries per stream and blocks up to
    ``block_ms``; ``max_queued`` entries wait for the consumer before reading
    pauses.  A read waits at most ``read_timeout`` seconds beyond ``block_ms``;
    failed reads are retried with a jittered backoff (``backoff_initial``
    doubling up to ``backoff_cap``).  Entering resolves the start (and raises
    if the server cannot be reached within ``connect_timeout``).

    With ``group`` and ``consumer`` (names), the feed is one consumer of a
    consumer group: the group's consumers share the entries (``XREADGROUP``),
    each entry is acknowledged once all its events were handed out and the
    next item was asked for, and every ``claim_interval`` seconds the
    consumer takes over entries that another one has held unacknowledged for
    ``claim_idle`` seconds (``XAUTOCLAIM``): at least once, for the group as
    a whole.  ``ack_timeout`` bounds the last acknowledgements on leaving.
    ``cluster=True``: ``url`` is any node of a Redis Cluster; the feed reads
    each hash tag's keys (a symbol's streams) in a task of its own.
    See the module docstring for what a group changes.
    """
    parsed = [parse_stream(s) for s in streams]
    if not parsed:
        raise ValueError("open_redis_feed needs at least one stream")
    if (group is None) != (consumer is None):
        raise ValueError("a consumer group needs both group and consumer")
    _start_id(start)  # a bad start fails here, not on entering
    client = redis_client(url, connect_timeout=connect_timeout,
                          read_timeout=read_timeout + block_ms / 1000.0, cluster=cluster)
    options = dict(market=market, prefix=prefix, start=start, books=books, decimals=decimals,
                   count=count, block_ms=block_ms, max_queued=max_queued,
                   backoff_initial=backoff_initial, backoff_cap=backoff_cap, rng=rng,
                   group=group, consumer=consumer, claim_idle=claim_idle,
                   claim_interval=claim_interval, ack_timeout=ack_timeout, cluster=cluster)
    return RedisFeed(client, parsed, options)
