"""What a feed reports about itself: one frozen snapshot, in trio's style.

:class:`FeedCounters` is the mutable record the feed's tasks update as they
go (plain attribute and dict updates: nothing on the data path awaits or
locks, since every task runs in one thread).  :meth:`Feed.statistics
<trio_feed.Feed.statistics>` freezes it into :class:`FeedStatistics`.

Accounting identity, checked by the tests after every fault, once the feed
is closed (while it runs, add ``queued`` and the batches in flight)::

    messages == events + duplicates + dropped + conflated + discarded

where ``messages`` counts data messages read off every connection (control
replies and ``serverShutdown`` notices are counted apart, in ``control``),
``events`` those handed to the consumer, ``duplicates`` those the
continuity filter recognised as already delivered, ``dropped`` and
``conflated`` those the slow-consumer policy gave up, and ``discarded`` those
read but still queued, held or in flight when the feed or a connection
closed, or read and not decodable (``skipped`` among them).  Messages the
*server* sent that never arrived are not in ``messages``; for streams with
consecutive ids they are in ``missing``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping

import attrs

from .._connection import ConnectionStatistics
from .._value import Value
from ._continuity import StreamContinuity
from ._samples import Samples

__all__ = ["SKIPPED_KEPT", "SKIPPED_PREFIX", "FeedCounters", "FeedStatistics", "StreamStatistics"]

#: Bytes kept of each payload skipped under ``on_decode_error="skip"``...
SKIPPED_PREFIX = 128
#: ... and how many of the latest such payloads are kept.
SKIPPED_KEPT = 8


_Bytes = bytes  # (the field ``bytes`` shadows the type inside the classes below)


@attrs.frozen(repr=False)
class StreamStatistics(Value):
    """One stream's traffic and continuity.

    ``no_data`` is true while a stream has delivered nothing although it was
    subscribed more than the feed's ``no_data_after`` seconds ago (an unknown
    symbol on Binance is accepted and then simply silent).
    """

    messages: int
    bytes: int
    duplicates: int
    gaps: int
    missing: int
    #: Times the stream's ids restarted far below their last position (a reset).
    resets: int = 0
    #: Payloads that did not decode, skipped under ``on_decode_error="skip"``.
    skipped: int = 0
    #: True if the stream had no event ``no_data_after`` s after it was subscribed.
    no_data: bool = False


@attrs.frozen(repr=False)
class FeedStatistics(Value):
    """A snapshot of a feed (see :meth:`Feed.statistics <trio_feed.Feed.statistics>`).

    Traffic: ``messages`` and ``bytes`` (data messages read, all streams),
    ``streams`` (per stream), ``copies`` (payloads copied into owned bytes: 0
    in inline mode), ``control`` (control replies and server notices).

    Delivery: ``events`` handed out; ``duplicates`` recognised and dropped;
    ``missing`` ids skipped on streams with consecutive ids; ``dropped`` and
    ``conflated`` by the slow-consumer ``policy``; ``discarded`` read but
    never handed out because something closed first or because it did not
    decode.  The identity in ``trio_feed.feed._statistics`` ties them
    together.  ``resets``: streams whose ids restarted (also per stream).
    ``skipped``: payloads that did not decode, skipped under
    ``on_decode_error="skip"`` (part of ``discarded``; also per stream,
    under the stream the payload names, or ``"None"``), and
    ``skipped_payloads``: the first ``SKIPPED_PREFIX`` bytes of the latest
    ``SKIPPED_KEPT`` of them, oldest first.

    Queue: ``queued`` and ``peak_queued`` messages (``max_queued`` is the
    capacity); ``stalls`` and ``stall_seconds`` (the consumer was behind by
    more than ``max_queued``); ``blocked_seconds`` (the ``block`` policy's
    backlog was full and reading stopped).

    Connections: ``connections`` (open now, one per shard, two during a
    rotation), ``connect_attempts`` and ``connect_failures``, ``reconnects``
    by cause (``"closed 1006"``, ``"stale"``, ``"ping timeout"``, ``"rotation"``,
    ``"server shutdown"``...), ``rotations``, ``stale`` (watchdog firings),
    ``seconds_connected`` (summed over connections; a shard counts once
    overlapping rotations aside), ``open_connections`` (their own statistics).

    Timing (recent window; ``None`` until measured): ``lag_p50``/``lag_p99``
    (ms from event time ``E`` to local receipt), ``lagging`` (events later
    than the feed's ``lag_threshold``), ``parse_p50``/``parse_p99`` (µs per
    message decoded), ``ping_rtt_p50``/``ping_rtt_max`` (seconds, our pings).

    Back-fill (``trio_feed.feed._backfill``): ``missing`` then counts only the
    ids no fill could fetch, ``backfilled`` the events fetched (the identity
    becomes ``messages + backfilled == events + duplicates + dropped +
    conflated + discarded``), ``filled_ranges``/``missing_ranges`` say which
    ids, and the ``backfill_*`` and ``fill_latency_*`` fields what it cost.
    """

    mode: str
    policy: str
    messages: int
    bytes: int
    streams: Mapping[str, StreamStatistics]
    copies: int
    control: int
    events: int
    duplicates: int
    missing: int
    dropped: int
    conflated: int
    discarded: int
    resets: int
    skipped: int
    skipped_payloads: tuple[_Bytes, ...]
    queued: int
    peak_queued: int
    max_queued: int
    stalls: int
    stall_seconds: float
    blocked_seconds: float
    connections: int
    connect_attempts: int
    connect_failures: int
    reconnects: Mapping[str, int]
    rotations: int
    stale: int
    seconds_connected: float
    lag_p50: float | None
    lag_p99: float | None
    lagging: int
    parse_p50: float | None
    parse_p99: float | None
    ping_rtt_p50: float | None
    ping_rtt_max: float | None
    open_connections: tuple[ConnectionStatistics, ...]
    # -- back-fill (``open_feed(backfill=True)``; all zero or empty without it) --
    #: Events fetched over REST and handed to the consumer's queue (not in ``messages``).
    backfilled: int = 0
    #: ``(stream, first id, last id)`` ranges filled, and ranges left missing (latest 1000 each).
    filled_ranges: tuple[tuple[str, int, int], ...] = ()
    missing_ranges: tuple[tuple[str, int, int], ...] = ()
    #: Events held now behind a fill; REST requests sent, failed and rate limited.
    backfill_held: int = 0
    backfill_requests: int = 0
    backfill_failures: int = 0
    backfill_rate_limited: int = 0
    #: REQUEST_WEIGHT the back-fill had admitted, and seconds from a gap seen to its fill queued.
    backfill_weight: int = 0
    fill_latency_p50: float | None = None
    fill_latency_max: float | None = None
    #: Closed klines a kline stream missed, fetched by time (part of ``backfilled``).
    backfilled_klines: int = 0


@attrs.define(repr=False)
class FeedCounters(Value):
    """The mutable counters behind :class:`FeedStatistics`."""

    messages: int = 0
    bytes: int = 0
    copies: int = 0
    control: int = 0
    discarded: int = 0
    connect_attempts: int = 0
    connect_failures: int = 0
    rotations: int = 0
    stale: int = 0
    lagging: int = 0
    seconds_connected: float = 0.0
    reconnects: Counter[str] = attrs.Factory(Counter)
    #: stream name -> [messages, bytes]
    per_stream: dict[str | None, list[int]] = attrs.Factory(dict)
    #: stream name (as the payload said, if it did) -> payloads skipped
    skipped: Counter[str | None] = attrs.Factory(Counter)
    skipped_payloads: deque[_Bytes] = attrs.Factory(lambda: deque(maxlen=SKIPPED_KEPT))
    #: Streams reported as silent since subscribed (``no_data_after``).
    no_data: set[str] = attrs.Factory(set)
    lag: Samples = attrs.Factory(Samples)
    parse: Samples = attrs.Factory(Samples)
    ping_rtt: Samples = attrs.Factory(lambda: Samples(256))

    def count_stream(self, name: str | None, nbytes: int) -> None:
        entry = self.per_stream.get(name)
        if entry is None:
            entry = self.per_stream[name] = [0, 0]
        entry[0] += 1
        entry[1] += nbytes

    def skip(self, stream: str | None, head: _Bytes) -> None:
        """Count a payload skipped because it did not decode (its first bytes: ``head``)."""
        self.skipped[stream] += 1
        self.skipped_payloads.append(head[:SKIPPED_PREFIX])

    def stream_statistics(
        self, continuity: Mapping[str | None, StreamContinuity]
    ) -> dict[str, StreamStatistics]:
        names = set(self.per_stream) | set(continuity) | set(self.skipped) | self.no_data
        result = {}
        for name in names:
            messages, nbytes = self.per_stream.get(name, (0, 0))
            c = continuity.get(name, StreamContinuity(0, 0, 0))
            silent = messages == 0 and name in self.no_data
            result[str(name)] = StreamStatistics(messages, nbytes, c.duplicates, c.gaps, c.missing,
                                                 c.resets, self.skipped.get(name, 0), silent)
        return result
