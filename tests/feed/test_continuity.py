"""Continuity: duplicates dropped and counted, skipped ids counted as missing, per stream."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_feed.binance import (
    AggTrade,
    AvgPrice,
    BookTicker,
    ControlResponse,
    DepthUpdate,
    Kline,
    MiniTicker,
    MiniTickerArray,
    PartialDepth,
    Trade,
)
from trio_feed.feed._continuity import Continuity, StreamContinuity

ONE = Decimal("1")
T = "btcusdt@trade"


def trade(tid: int, stream: str | None = T, time: int | None = None) -> Trade:
    return Trade(
        event_time=1_000 + tid if time is None else time,
        symbol="BTCUSDT",
        trade_id=tid,
        price=ONE,
        quantity=ONE,
        trade_time=1_000 + tid,
        buyer_is_maker=False,
        stream=stream,
    )


def agg(aid: int, stream: str = "btcusdt@aggTrade") -> AggTrade:
    return AggTrade(
        event_time=5_000 + aid,
        symbol="BTCUSDT",
        agg_trade_id=aid,
        price=ONE,
        quantity=ONE,
        first_trade_id=aid * 3,
        last_trade_id=aid * 3 + 2,
        trade_time=5_000 + aid,
        buyer_is_maker=True,
        stream=stream,
    )


def depth(first: int, final: int, stream: str = "btcusdt@depth@100ms") -> DepthUpdate:
    return DepthUpdate(
        event_time=9_000 + final,
        symbol="BTCUSDT",
        first_update_id=first,
        final_update_id=final,
        bids=[[ONE, ONE]],
        asks=[],
        stream=stream,
    )


def book(uid: int, stream: str = "btcusdt@bookTicker") -> BookTicker:
    return BookTicker(
        update_id=uid,
        symbol="BTCUSDT",
        best_bid_price=ONE,
        best_bid_quantity=ONE,
        best_ask_price=ONE,
        best_ask_quantity=ONE,
        stream=stream,
    )


def partial(lid: int, stream: str = "btcusdt@depth5") -> PartialDepth:
    return PartialDepth(last_update_id=lid, bids=[], asks=[], symbol="btcusdt", stream=stream)


def avg(time: int, price: str = "1", stream: str = "btcusdt@avgPrice") -> AvgPrice:
    return AvgPrice(
        event_time=time,
        symbol="BTCUSDT",
        interval="5m",
        average_price=Decimal(price),
        last_trade_time=time - 1,
        stream=stream,
    )


def kline(time: int, close: str = "1", stream: str = "btcusdt@kline_1m") -> Kline:
    return Kline(
        event_time=time,
        symbol="BTCUSDT",
        interval="1m",
        open_time=0,
        close_time=59_999,
        first_trade_id=1,
        last_trade_id=2,
        open=ONE,
        high=ONE,
        low=ONE,
        close=Decimal(close),
        volume=ONE,
        trade_count=2,
        is_closed=False,
        quote_volume=ONE,
        taker_buy_volume=ONE,
        taker_buy_quote_volume=ONE,
        stream=stream,
    )


def feed(c: Continuity, events: list[Any]) -> list[bool]:
    return [c.accept(e) for e in events]


# -- consecutive ids -------------------------------------------------------------------


def test_consecutive_trades_all_accepted() -> None:
    c = Continuity()
    assert feed(c, [trade(i) for i in range(10, 20)]) == [True] * 10
    assert c.stream(T) == StreamContinuity(duplicates=0, gaps=0, missing=0)
    assert (c.duplicates, c.missing) == (0, 0)


def test_first_event_is_never_a_gap() -> None:
    c = Continuity()
    assert c.accept(trade(1_000_000))
    assert c.stream(T).missing == 0


def test_trade_duplicates_equal_and_older_ids_dropped() -> None:
    c = Continuity()
    results = feed(c, [trade(1), trade(2), trade(2), trade(1), trade(3), trade(3)])
    assert results == [True, True, False, False, True, False]
    assert c.stream(T) == StreamContinuity(duplicates=3, gaps=0, missing=0)
    assert c.duplicates == 3


def test_trade_gap_counts_skipped_ids() -> None:
    c = Continuity()
    assert feed(c, [trade(1), trade(2), trade(6), trade(7), trade(10)]) == [True] * 5
    # 3,4,5 and 8,9 skipped: two gaps, five ids.
    assert c.stream(T) == StreamContinuity(duplicates=0, gaps=2, missing=5)
    assert c.missing == 5
    # A late arrival of a skipped id is behind the position: dropped as a duplicate.
    assert c.accept(trade(4)) is False
    assert c.stream(T) == StreamContinuity(duplicates=1, gaps=2, missing=5)


def test_aggtrade_uses_agg_trade_id() -> None:
    c = Continuity()
    s = "btcusdt@aggTrade"
    assert feed(c, [agg(5), agg(6), agg(6), agg(9), agg(8), agg(10)]) == [
        True,
        True,
        False,
        True,
        False,
        True,
    ]
    assert c.stream(s) == StreamContinuity(duplicates=2, gaps=1, missing=2)


def test_trade_position_is_trade_id_not_event_time() -> None:
    c = Continuity()
    # Same event time, consecutive ids: all distinct trades.
    assert feed(c, [trade(1, time=7), trade(2, time=7), trade(3, time=7)]) == [True] * 3
    # Later event time but an old id: duplicate.
    assert c.accept(trade(2, time=999)) is False


def test_depth_updates_follow_u_and_count_gap_from_first_update_id() -> None:
    c = Continuity()
    s = "btcusdt@depth@100ms"
    assert c.accept(depth(100, 110))
    assert c.accept(depth(111, 120))  # U == last u + 1: no gap
    assert c.stream(s) == StreamContinuity(0, 0, 0)
    assert c.accept(depth(126, 130))  # 121..125 skipped
    assert c.stream(s) == StreamContinuity(0, 1, 5)
    assert c.accept(depth(125, 140))  # overlaps the last event (U <= u+1): no gap
    assert c.stream(s) == StreamContinuity(0, 1, 5)
    assert c.accept(depth(130, 140)) is False  # u == last u
    assert c.accept(depth(100, 139)) is False  # u < last u
    assert c.stream(s) == StreamContinuity(2, 1, 5)
    assert c.accept(depth(142, 142))  # U == last + 2: one missing
    assert c.stream(s) == StreamContinuity(2, 2, 6)
    assert (c.duplicates, c.missing) == (2, 6)


# -- monotonic ids ---------------------------------------------------------------------


def test_book_ticker_update_id_monotonic_without_missing_count() -> None:
    c = Continuity()
    s = "btcusdt@bookTicker"
    assert feed(c, [book(10), book(11), book(50), book(50), book(49), book(51)]) == [
        True,
        True,
        True,
        False,
        False,
        True,
    ]
    # bookTicker ids are not consecutive: a jump is not counted as missing.
    assert c.stream(s) == StreamContinuity(duplicates=2, gaps=0, missing=0)
    assert c.missing == 0


def test_partial_depth_last_update_id_monotonic() -> None:
    c = Continuity()
    s = "btcusdt@depth5"
    assert feed(c, [partial(1), partial(5), partial(5), partial(3), partial(100)]) == [
        True,
        True,
        False,
        False,
        True,
    ]
    assert c.stream(s) == StreamContinuity(duplicates=2, gaps=0, missing=0)


# -- event_time ------------------------------------------------------------------------


def test_event_time_older_is_duplicate_newer_is_accepted() -> None:
    c = Continuity()
    s = "btcusdt@avgPrice"
    assert feed(c, [avg(100), avg(200), avg(150), avg(99), avg(300)]) == [
        True,
        True,
        False,
        False,
        True,
    ]
    assert c.stream(s) == StreamContinuity(duplicates=2, gaps=0, missing=0)


def test_event_time_equal_and_equal_fields_is_duplicate() -> None:
    c = Continuity()
    s = "btcusdt@kline_1m"
    assert c.accept(kline(100, close="5"))
    assert c.accept(kline(100, close="5")) is False  # a fresh but equal object
    assert c.stream(s).duplicates == 1


def test_event_time_equal_but_different_fields_is_distinct() -> None:
    c = Continuity()
    assert c.accept(kline(100, close="5"))
    assert c.accept(kline(100, close="6"))  # two events in one millisecond
    assert c.accept(kline(100, close="6")) is False
    assert c.accept(kline(101, close="5"))
    assert c.stream("btcusdt@kline_1m").duplicates == 1


def test_event_time_same_millisecond_pair_replayed_by_second_connection() -> None:
    """Rule 1: two distinct events A and B share a millisecond; an overlapping
    connection delivers them again.  Neither may be handed out a second time."""
    c = Continuity()
    a, b = avg(100, "1.5"), avg(100, "1.6")
    first = [c.accept(a), c.accept(b)]
    replay = [c.accept(avg(100, "1.5")), c.accept(avg(100, "1.6"))]
    assert first == [True, True]
    assert replay == [False, False], "an event equal to one already handed out was handed out again"
    assert c.stream("btcusdt@avgPrice").duplicates == 2


def test_events_without_order_are_always_accepted() -> None:
    c = Continuity()
    reply = ControlResponse(id=1, result=None)
    arr = MiniTickerArray(events=[], stream="!miniTicker@arr")
    assert feed(c, [reply, reply, arr, arr]) == [True] * 4
    assert c.duplicates == 0


def test_other_event_time_streams_use_event_time() -> None:
    c = Continuity()
    m = MiniTicker(
        event_time=10,
        symbol="BTCUSDT",
        last_price=ONE,
        open_price=ONE,
        high_price=ONE,
        low_price=ONE,
        volume=ONE,
        quote_volume=ONE,
        stream="btcusdt@miniTicker",
    )
    assert c.accept(m)
    assert c.accept(m) is False


# -- per-stream bookkeeping ------------------------------------------------------------


def test_streams_are_independent() -> None:
    c = Continuity()
    e = "ethusdt@trade"
    assert c.accept(trade(100))
    assert c.accept(trade(5, stream=e))  # a lower id on another stream is fine
    assert c.accept(trade(3, stream=e)) is False
    assert c.accept(trade(9, stream=e))  # 6,7,8 missing on ethusdt
    assert c.accept(trade(101))
    assert c.stream(T) == StreamContinuity(0, 0, 0)
    assert c.stream(e) == StreamContinuity(duplicates=1, gaps=1, missing=3)
    assert (c.duplicates, c.missing) == (1, 3)


def test_stream_none_is_a_stream_too() -> None:
    c = Continuity()
    assert c.accept(trade(1, stream=None))
    assert c.accept(trade(1, stream=None)) is False
    assert c.accept(trade(3, stream=None))
    assert c.stream(None) == StreamContinuity(duplicates=1, gaps=1, missing=1)


def test_stream_and_streams_reporting() -> None:
    c = Continuity()
    assert c.stream("never@trade") == StreamContinuity(0, 0, 0)
    assert c.streams() == {}
    c.accept(trade(1))
    c.accept(book(1))
    c.accept(book(1))
    assert c.streams() == {
        T: StreamContinuity(0, 0, 0),
        "btcusdt@bookTicker": StreamContinuity(1, 0, 0),
    }
    # stream() of an unknown name does not register it.
    c.stream("other@trade")
    assert set(c.streams()) == {T, "btcusdt@bookTicker"}


def test_totals_are_sums_over_streams() -> None:
    c = Continuity()
    feed(c, [trade(1), trade(4), trade(4), agg(1), agg(3), agg(2), depth(1, 2), depth(5, 6)])
    per = c.streams().values()
    assert c.duplicates == sum(s.duplicates for s in per) == 2
    assert c.missing == sum(s.missing for s in per) == 2 + 1 + 2


# -- property: overlapping connections, FIFO-merged -------------------------------------


@st.composite
def merged_connections(draw: st.DrawFn) -> tuple[int, list[list[int]], list[int]]:
    """The server's ids 1..n, a few connections each carrying some segments of it
    (a reconnect replays from an earlier point) with random drops, and a FIFO
    merge that keeps each connection's order."""
    n = draw(st.integers(1, 120))
    connections = []
    for _ in range(draw(st.integers(1, 3))):
        ids: list[int] = []
        for _ in range(draw(st.integers(1, 3))):
            lo = draw(st.integers(1, n))
            hi = draw(st.integers(lo, n))
            # Drops: a random subset of the segment's ids, kept in order.
            dropped = draw(st.sets(st.integers(lo, hi), max_size=hi - lo + 1))
            ids.extend(i for i in range(lo, hi + 1) if i not in dropped)
            # Occasional immediate duplication inside a connection.
            if ids and draw(st.booleans()):
                ids.append(ids[-1])
        connections.append(ids)
    # FIFO merge: a random interleaving that keeps each connection's order.
    tags = [k for k, c in enumerate(connections) for _ in c]
    tags = draw(st.permutations(tags))
    cursors = [0] * len(connections)
    order: list[int] = []
    for k in tags:
        order.append(connections[k][cursors[k]])
        cursors[k] += 1
    return n, connections, order


@given(merged_connections())
@settings(max_examples=80, deadline=None)
def test_property_trades_delivered_plus_missing_cover_range(
    case: tuple[int, list[list[int]], list[int]],
) -> None:
    _, _, order = case
    c = Continuity()
    delivered = [e.trade_id for e in map(trade, order) if c.accept(e)]
    # Oracle: an event is handed out iff its id is beyond every id seen before it.
    expected, high = [], None
    for i in order:
        if high is None or i > high:
            expected.append(i)
            high = i
    assert delivered == expected
    assert all(a < b for a, b in pairwise(delivered))
    assert len(set(delivered)) == len(delivered)
    s = c.stream(T)
    assert len(delivered) + s.duplicates == len(order)
    if delivered:
        assert len(delivered) + s.missing == delivered[-1] - delivered[0] + 1
    else:
        assert s.missing == 0
    assert s.gaps == sum(1 for a, b in pairwise(delivered) if b > a + 1)
    assert c.missing == s.missing and c.duplicates == s.duplicates


@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=40),
    data=st.data(),
)
@settings(max_examples=70, deadline=None)
def test_property_depth_delivered_ranges_plus_missing_cover_range(
    sizes: list[int], data: st.DataObject
) -> None:
    # The server's diff-depth events partition update ids 1..N into [U, u] ranges.
    ranges, start = [], 1
    for size in sizes:
        ranges.append((start, start + size - 1))
        start += size
    conns = []
    for _ in range(data.draw(st.integers(1, 3))):
        lo = data.draw(st.integers(0, len(ranges) - 1))
        hi = data.draw(st.integers(lo, len(ranges) - 1))
        conns.append([r for r in ranges[lo : hi + 1] if data.draw(st.booleans())])
    tags = data.draw(st.permutations([k for k, x in enumerate(conns) for _ in x]))
    order, cursors = [], [0] * len(conns)
    for k in tags:
        order.append(conns[k][cursors[k]])
        cursors[k] += 1
    c = Continuity()
    delivered = [
        (e.first_update_id, e.final_update_id) for e in (depth(*r) for r in order) if c.accept(e)
    ]
    finals = [u for _, u in delivered]
    assert all(a < b for a, b in pairwise(finals))
    s = c.stream("btcusdt@depth@100ms")
    assert len(delivered) + s.duplicates == len(order)
    if delivered:
        covered = sum(u - first + 1 for first, u in delivered)
        assert covered + s.missing == delivered[-1][1] - delivered[0][0] + 1
    else:
        assert s.missing == 0


def test_reset_needs_a_new_connection_a_far_drop_and_an_event_not_older() -> None:
    from trio_feed.feed._continuity import RESET_THRESHOLD

    c = Continuity()
    c.source = "connection 1"
    top = RESET_THRESHOLD + 100
    assert c.accept(trade(top))
    assert c.accept(trade(1, time=10**9)) is False  # same connection: a duplicate
    c.source = "connection 2"
    assert c.accept(trade(top - RESET_THRESHOLD)) is False  # not far enough: an overlap
    assert c.accept(trade(1, time=5)) is False  # older than the last: a repeat
    assert c.stream(T) == StreamContinuity(duplicates=3, gaps=0, missing=0, resets=0)
    assert c.accept(trade(1, time=10**9))  # far below, newer, new connection: a reset
    assert c.accept(trade(2, time=10**9 + 1))
    assert c.accept(trade(2, time=10**9 + 1)) is False  # the new sequence has duplicates too
    assert c.stream(T) == StreamContinuity(duplicates=4, gaps=0, missing=0, resets=1)
    assert (c.resets, c.missing) == (1, 0)
