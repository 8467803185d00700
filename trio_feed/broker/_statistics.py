"""Frozen statistics of the sink and the reader, and the bounded latency samples behind them."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import attrs

from ..feed import StreamStatistics

__all__ = ["DroppedRange", "Latencies", "RedisFeedStatistics", "SinkStatistics"]


class Latencies:
    """The last ``size`` samples, for percentiles (bounded memory, sorted only when asked)."""

    def __init__(self, size: int = 4096) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._samples.append(value)

    def percentile(self, p: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


@attrs.frozen
class DroppedRange:
    """Events a sink dropped under ``drop_oldest``: ``count`` events of ``stream``.

    ``first``/``last`` are their sequence numbers, ``None`` for streams without ids.
    """

    stream: str
    first: int | None
    last: int | None
    count: int


@attrs.frozen
class SinkStatistics:
    """A snapshot of a :class:`RedisSink`.

    ``pending_events``/``pending_bytes``: accepted, not yet acknowledged by the
    server (open batches, sealed entries, entries in flight).  ``entries``,
    ``events``, ``bytes``: written and acknowledged.  ``retries``: entries sent
    again after a failure; ``already_written``: retried entries the server
    rejected because their id was already there (the first attempt had landed).
    ``reconnects``: failed round trips after which the writer backed off.
    ``dropped_events`` and ``dropped_ranges`` (merged per stream, written as gap
    markers) under ``drop_oldest``; ``blocked_seconds``: time ``send`` waited
    under ``block``, a wait in progress included.  ``write_p50``/``write_p99``:
    milliseconds per pipelined round trip.  ``snapshots``: book snapshots written.
    Under ``spool``: ``spooled_events`` went to the spool (in all),
    ``spool_events`` of them (and ``spool_bytes`` on disk) are not written yet,
    ``replayed_events`` were written from it.
    """

    policy: str
    pending_events: int
    pending_bytes: int
    peak_pending_events: int
    entries: int
    events: int
    bytes: int
    retries: int
    already_written: int
    reconnects: int
    dropped_events: int
    dropped_ranges: tuple[DroppedRange, ...]
    notes_dropped: int
    blocked_seconds: float
    write_p50: float | None
    write_p99: float | None
    snapshots: int
    spooled_events: int = 0
    spool_events: int = 0
    spool_bytes: int = 0
    replayed_events: int = 0


@attrs.frozen
class RedisFeedStatistics:
    """A snapshot of a :class:`RedisFeed`, with the fields of :class:`~trio_feed.FeedStatistics`
    that mean something on a broker.

    ``messages``/``bytes``: entries and payload bytes read; ``events``: events
    handed out; ``duplicates``: events skipped as already handed out;
    ``missing``: ids absent on consecutive streams (with the entries' ranges);
    ``dropped``: events the sink reported dropped (gap markers); ``gaps``: the
    gaps reported, of either kind; ``notices``: control-stream entries by kind;
    ``queued``: events read and not yet handed out; ``reconnects``: failed reads
    retried; ``lag_p50``/``lag_p99``: milliseconds from the oldest event of an
    entry reaching the sink to the entry being read here (same clock only).
    """

    messages: int
    bytes: int
    streams: Mapping[str, StreamStatistics]
    events: int
    duplicates: int
    missing: int
    dropped: int
    gaps: int
    notices: Mapping[str, int]
    queued: int
    reconnects: int
    snapshots: int
    lag_p50: float | None
    lag_p99: float | None
    acked: int = 0
    claimed: int = 0
    deleted: int = 0
