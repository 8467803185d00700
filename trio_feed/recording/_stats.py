"""What ``trio-feed stats`` reports of a recording: rates, silences and id gaps per stream.

Pure computation over :func:`~trio_feed.recording.read_recording`; the CLI only
prints the result.
"""

from __future__ import annotations

import statistics
from typing import Any

import attrs
import orjson

from ..binance._sequence import DUPLICATE, is_reset, label_of, object_ids
from ..binance._streams import ALL_BOOK_TICKER
from ._format import ReadReport, read_recording

__all__ = ["compute_stats"]


@attrs.define
class _StreamStats:
    messages: int = 0
    last_t: int | None = None
    largest_gap_ns: int = 0
    id_gaps: int = 0
    missing_ids: int = 0
    repeated_ids: int = 0
    resets: int = 0
    examples: list[dict[str, Any]] = attrs.Factory(list)
    #: The position the stream's ids reached, and the event that brought it there.
    last_id: int | None = None
    last_event: Any = None
    #: The id ranges the gaps skipped, and the ids that back-filled lines brought.
    skipped: list[tuple[int, int]] = attrs.Factory(list)
    backfilled: set[int] = attrs.Factory(set)

    def gap(self, kind: str, expected: int, got: int, index: int) -> None:
        self.id_gaps += 1
        self.missing_ids += max(0, got - expected)
        if got > expected:
            self.skipped.append((expected, got - 1))
        if len(self.examples) < 10:
            self.examples.append({"kind": kind, "index": index, "expected": expected, "got": got})


def _key_of(stream: str | None, obj: Any) -> str:
    if stream is not None:
        return stream
    if type(obj) is dict:
        symbol, e = obj.get("s"), obj.get("e")
        if type(symbol) is str:
            return f"(raw) {symbol.lower()}@{e}" if type(e) is str else f"(raw) {symbol.lower()}"
    return "(raw)"


def _check_ids(stats: _StreamStats, obj: Any, index: int) -> None:
    """Check the ids of ``obj`` against its stream's, by Binance's sequence rules.

    The rules are the feed's own (``trio_feed.binance._sequence``): trade and
    aggregate trade ids follow on by one, spot depth ``U`` follows the last
    ``u``, futures depth ``pu`` equals it, bookTicker and partial depth ids
    grow.  A repeat is counted in ``repeated_ids`` (and shown as a gap with
    nothing missing); an id far below, in an event not older, is a reset.
    """
    found = object_ids(obj)
    if found is None:
        return  # no id to check (klines, tickers, not a Binance event)
    rule, event = found
    last = stats.last_id
    if last is not None:
        verdict = rule.check(last, event)
        if verdict == DUPLICATE:
            if not is_reset(last, event, stats.last_event):
                stats.repeated_ids += 1
                expected, got = rule.expected(last, event)
                stats.gap(label_of(event), expected, got, index)
                return  # the stream stays where it was
            stats.resets += 1
        elif verdict:
            expected, got = rule.expected(last, event)
            stats.gap(label_of(event), expected, got, index)
    stats.last_id = rule.position(event)
    stats.last_event = event


def compute_stats(path: str) -> dict[str, Any]:
    """The ``stats`` report for the recording at ``path``, as a JSON-ready dict."""
    report = ReadReport()
    streams: dict[str, _StreamStats] = {}
    buckets: dict[int, int] = {}
    first_t: int | None = None
    last_t: int | None = None
    gap_ns, gap_index, gap_stream = 0, None, None
    unparsable = 0
    binary = 0
    backfilled = 0
    index = -1
    for index, rec in enumerate(read_recording(path, report=report)):
        if first_t is None:
            first_t = rec.t
        if last_t is not None and rec.t - last_t > gap_ns:
            gap_ns, gap_index, gap_stream = rec.t - last_t, index, rec.stream
        last_t = rec.t
        second = (rec.t - first_t) // 1_000_000_000
        buckets[second] = buckets.get(second, 0) + 1
        obj: Any = None
        if isinstance(rec.raw, bytes):
            binary += 1
            key = "(binary)"
        else:
            try:
                obj = orjson.loads(rec.raw)
            except orjson.JSONDecodeError:
                unparsable += 1
            if rec.stream is not None and type(obj) is dict:
                obj = obj.get("data")
            key = _key_of(rec.stream, obj)
        stats = streams.get(key)
        if stats is None:
            stats = streams[key] = _StreamStats()
        if rec.backfilled:  # fetched, not received: it fills a gap, it is not traffic
            backfilled += 1
            found = object_ids(obj)
            if found is not None:
                stats.backfilled.add(found[0].position(found[1]))
            continue
        stats.messages += 1
        if stats.last_t is not None:
            stats.largest_gap_ns = max(stats.largest_gap_ns, rec.t - stats.last_t)
        stats.last_t = rec.t
        if rec.stream != ALL_BOOK_TICKER:  # symbols mixed, each with its own ids
            _check_ids(stats, obj, index)
    messages = index + 1
    span = [buckets.get(i, 0) for i in range(max(buckets) + 1)] if buckets else []
    duration = (last_t - first_t) / 1e9 if first_t is not None and last_t is not None else 0.0
    return {
        "file": path,
        "messages": messages,
        "streams_count": len(streams),
        "first_t": first_t,
        "last_t": last_t,
        "duration_s": duration,
        "torn_last_line": report.torn,
        "unparsable": unparsable,
        "binary": binary,
        "backfilled": backfilled,
        "rate": {
            "buckets": len(span),
            "mean": statistics.fmean(span) if span else 0.0,
            "min": min(span) if span else 0,
            "median": statistics.median(span) if span else 0,
            "max": max(span) if span else 0,
            "busiest_second": span.index(max(span)) if span else None,
        },
        "largest_gap": {"seconds": gap_ns / 1e9, "index": gap_index, "stream": gap_stream},
        "streams": {
            key: {
                "messages": s.messages,
                "largest_gap_s": s.largest_gap_ns / 1e9,
                "id_gaps": s.id_gaps,
                "missing_ids": s.missing_ids,
                "repeated_ids": s.repeated_ids,
                "resets": s.resets,
                "filled_ids": (filled := _filled(s)),
                "left_ids": s.missing_ids - filled,
                "gap_examples": s.examples,
            }
            for key, s in sorted(streams.items())
        },
    }


def _filled(stats: _StreamStats) -> int:
    """How many ids the stream's gaps skipped that back-filled lines brought back."""
    if not stats.backfilled:
        return 0
    return sum(1 for first, last in stats.skipped for i in range(first, last + 1)
               if i in stats.backfilled)
