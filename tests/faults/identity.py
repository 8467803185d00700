"""The one identity every fault-matrix test ends with.

After any fault, a feed keeps two promises, and :func:`assert_accounted` checks
both from what the server says it sent and what the consumer received:

1. **Nothing lost silently, nothing twice.**  Per stream, the ids delivered are
   strictly increasing (no duplicate, order kept), every one of them was sent,
   and the ids the server sent between the first and the last delivered id that
   were *not* delivered are exactly as many as the feed reported ``missing``
   for that stream.
2. **Every message read is accounted for.**  Once the feed is closed::

       messages == events + duplicates + dropped + conflated + discarded

   and ``events`` equals the number of data events the consumer received (when
   the caller passes ``received``).

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
    assert stats.messages == total, (
        f"messages {stats.messages} != events {stats.events} + duplicates {stats.duplicates}"
        f" + dropped {stats.dropped} + conflated {stats.conflated}"
        f" + discarded {stats.discarded} = {total}"
    )
    if received is not None:
        assert stats.events == received, (
            f"the feed counted {stats.events} events handed out, the consumer got {received}"
        )
