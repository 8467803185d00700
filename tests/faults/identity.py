"""The one identity every fault-matrix test ends with.

After any fault, a feed keeps two promises, and :func:`assert_accounted` checks
both from what the server says it sent and what the consumer received:

1. **Nothing lost silently, nothing twice.**  Per stream, the ids delivered are
   strictly increasing (no duplicate, order kept), every one of them was sent,
   and the ids the server sent between the first and the last delivered id that
   were *not* delivered are exactly as many as the feed reported ``missing``
   for that stream.
2. **Every message read is accounted for.**  Once the feed is closed::

       messages + backfilled == events + duplicates + dropped + conflated + discarded

   (``backfilled``, the events a back-fill fetched over REST, is 0 without
   one) and ``events`` equals the number of data events the consumer received
   (when the caller passes ``received``).
3. **With back-fill, what is missing is exactly what is reported**
   (:func:`assert_filled`): per stream, the ids not delivered between the
   first and the last delivered are exactly the union of the feed's
   ``missing_ranges``, and the events marked ``backfilled`` are exactly the
   ids of its ``filled_ranges``.

Both halves fail loudly with the stream and the numbers that disagree.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def assert_ordered_unique(stream: str, ids: Sequence[int]) -> None:
    for a, b in itertools.pairwise(ids):
        assert b > a, f"{stream}: id {b} delivered after {a} (duplicate or out of order)"


def assert_accounted(
    stats: Any,
    delivered: Mapping[str, Sequence[int]],
    sent: Mapping[str, Iterable[int]] | None = None,
    *,
    received: int | None = None,
) -> None:
    """Check the fault matrix's identity; see the module docstring.

    ``delivered`` maps each stream to the ids the consumer received, in order.
    ``sent`` maps each stream to every id the server sent on it (any order,
    repeats allowed: a replay after a reconnect sends some twice); when it is
    ``None``, the server's sequence is taken to be consecutive ids, as the
    embedded exchange's shared market makes them.
    """
    for stream, ids in delivered.items():
        if not ids:
            continue
        assert_ordered_unique(stream, ids)
        first, last = ids[0], ids[-1]
        if sent is None:
            expected = set(range(first, last + 1))
        else:
            all_sent = set(sent.get(stream, ()))
            stray = set(ids) - all_sent
            assert not stray, f"{stream}: delivered ids the server never sent: {sorted(stray)[:5]}"
            expected = {i for i in all_sent if first <= i <= last}
        lost = len(expected) - len(ids)
        per_stream = stats.streams.get(stream)
        reported = per_stream.missing if per_stream is not None else 0
        assert lost == reported, (
            f"{stream}: {lost} ids sent but not delivered between {first} and {last}, "
            f"the feed reported {reported} missing"
        )
    total = (stats.events + stats.duplicates + stats.dropped + stats.conflated
             + stats.discarded)
    backfilled = getattr(stats, "backfilled", 0)
    assert stats.messages + backfilled == total, (
        f"messages {stats.messages} + backfilled {backfilled} != events {stats.events}"
        f" + duplicates {stats.duplicates}"
        f" + dropped {stats.dropped} + conflated {stats.conflated}"
        f" + discarded {stats.discarded} = {total}"
    )
    if received is not None:
        assert stats.events == received, (
            f"the feed counted {stats.events} events handed out, the consumer got {received}"
        )


def _ranges_of(ranges: Iterable[tuple[str, int, int]], stream: str) -> set[int]:
    ids: set[int] = set()
    for name, first, last in ranges:
        if name == stream:
            ids.update(range(first, last + 1))
    return ids


def assert_filled(stats: Any, delivered: Mapping[str, Sequence[int]],
                  backfilled: Mapping[str, Sequence[int]]) -> None:
    """Promise 3 (see the module docstring), for a feed opened with ``backfill=True``.

    ``backfilled`` maps each stream to the ids of the events delivered with
    ``backfilled`` true.  The server's sequence is taken to be consecutive ids.
    """
    for stream, ids in delivered.items():
        if not ids:
            continue
        assert_ordered_unique(stream, ids)
        holes = set(range(ids[0], ids[-1] + 1)) - set(ids)
        reported = _ranges_of(stats.missing_ranges, stream)
        assert holes == reported, (
            f"{stream}: ids not delivered {_spans(holes)} != reported missing {_spans(reported)}"
        )
        filled = _ranges_of(stats.filled_ranges, stream)
        marked = set(backfilled.get(stream, ()))
        assert marked == filled, (
            f"{stream}: back-filled events {_spans(marked)} != filled ranges {_spans(filled)}"
        )


def _spans(ids: set[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for i in sorted(ids):
        if spans and spans[-1][1] == i - 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    return spans[:10]
