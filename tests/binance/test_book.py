"""The pure order-book state machine: rules, exact levels, and the exchange as oracle.

The recorded captures in ``shared/binance/samples`` are read in place (never
copied into the repo); the tests that need them carry the ``shared`` marker (tests/shared_data.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_feed.binance import (
    BookState,
    Decoder,
    DepthUpdate,
    NeedSnapshot,
    OrderBook,
    PartialDepth,
    PriceLevel,
    Rules,
    parse_depth_snapshot,
)
from trio_feed.exchange import Market

from ..shared_data import SAMPLES

needs_samples = pytest.mark.shared

LIVE, SYNCING, RESYNCING = BookState.LIVE, BookState.SYNCING, BookState.RESYNCING


def diff(first: int, last: int, bids: Any = (), asks: Any = (), *, pu: int | None = None,
         symbol: str = "BTCUSDT") -> DepthUpdate:
    return DepthUpdate(1, symbol, first, last, [list(b) for b in bids], [list(a) for a in asks],
                       pu)


def snapshot(last_id: int, bids: Any, asks: Any) -> dict[str, Any]:
    return {"lastUpdateId": last_id, "bids": [list(b) for b in bids],
            "asks": [list(a) for a in asks]}


BASE = snapshot(100, [("10.00", "1"), ("9.00", "2")], [("11.00", "3"), ("12.00", "4")])


def live_book() -> OrderBook:
    """A spot book, live at id 101: bids 10.00 x1, 9.50 x5, 9.00 x2; asks 11.00 x3, 12.00 x4."""
    book = OrderBook("BTCUSDT")
    assert book.receive_update(diff(100, 100)) == NeedSnapshot("BTCUSDT", "start")
    assert book.receive_snapshot(BASE) is None
    assert book.state is SYNCING  # the buffered event is already in the snapshot
    book.receive_update(diff(101, 101, [("9.50", "5")], pu=100))
    assert book.state is LIVE
    return book


def plain(number: Decimal) -> str:
    return format(number.normalize(), "f")


def levels(book: OrderBook) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    def text(side: list[PriceLevel]) -> list[tuple[str, str]]:
        return [(plain(p.price), plain(p.quantity)) for p in side]
    return text(book.bids()), text(book.asks())


# -- the spot procedure ------------------------------------------------------------


def test_first_event_requests_the_snapshot_once() -> None:
    book = OrderBook("btcusdt")
    assert book.state is SYNCING and book.stale and not book.has_book
    assert book.best_bid() is None and book.spread() is None
    action = book.receive_update(diff(5, 6))
    assert action == NeedSnapshot("BTCUSDT", "start")
    assert book.needs_snapshot
    assert book.receive_update(diff(7, 9)) is None  # Rule 3: one request outstanding
    assert book.statistics().requests == 1 and book.statistics().buffered == 2


def test_snapshot_bridges_with_the_plus_one_rule() -> None:
    book = OrderBook("BTCUSDT")
    book.receive_update(diff(98, 100, [("10.00", "7")]))   # u <= L: dropped
    book.receive_update(diff(101, 102, [("9.00", "0")]))   # U <= L+1 <= u: bridges
    book.receive_update(diff(103, 103, asks=[("11.50", "1")]))
    assert book.receive_snapshot(BASE) is None
    assert book.state is LIVE and not book.stale and book.last_update_id == 103
    assert levels(book) == ([("10", "1")], [("11", "3"), ("11.5", "1"), ("12", "4")])
    stats = book.statistics()
    assert (stats.applied, stats.skipped, stats.gaps, stats.refetches) == (2, 1, 0, 0)


def test_snapshot_at_first_u_minus_one_bridges_exactly() -> None:
    book = OrderBook("BTCUSDT")
    book.receive_update(diff(101, 103, [("10.00", "2")]))
    assert book.receive_snapshot(BASE) is None  # L = 100 = U - 1: the state U applies to
    assert book.state is LIVE and book.best_bid() == PriceLevel(Decimal("10.00"), Decimal(2))


def test_stale_snapshot_is_refetched() -> None:
    book = OrderBook("BTCUSDT")
    book.receive_update(diff(105, 106))
    action = book.receive_snapshot(BASE)  # L = 100 < U - 1 = 104
    assert action == NeedSnapshot("BTCUSDT", "stale snapshot")
    assert book.state is SYNCING and book.needs_snapshot
    assert book.statistics().refetches == 1
    assert book.receive_snapshot(snapshot(105, [("1", "1")], [("2", "1")])) is None
    assert book.state is LIVE and book.last_update_id == 106


def test_snapshot_newer_than_every_buffered_event_waits_for_the_next() -> None:
    book = OrderBook("BTCUSDT")
    book.receive_update(diff(90, 95))
    assert book.receive_snapshot(BASE) is None
    assert book.state is SYNCING and not book.needs_snapshot
    book.receive_update(diff(96, 100))  # still inside the snapshot
    assert book.state is SYNCING
    book.receive_update(diff(101, 101))
    assert book.state is LIVE and book.last_update_id == 101


def test_pending_snapshot_overtaken_by_a_later_stream_is_refetched() -> None:
    book = OrderBook("BTCUSDT")
    book.receive_update(diff(90, 95))
    book.receive_snapshot(BASE)
    # The stream resumes past L + 1 (101 and 102 were lost): the snapshot cannot bridge.
    assert book.receive_update(diff(103, 104)) == NeedSnapshot("BTCUSDT", "stale snapshot")
    assert book.statistics().refetches == 1


def test_live_rules_apply_skip_and_gap() -> None:
    book = live_book()
    assert book.receive_update(diff(102, 103, [("10.00", "0")], [("11.00", "2")])) is None
    assert book.best_bid() == PriceLevel(Decimal("9.50"), Decimal(5))
    assert book.best_ask() == PriceLevel(Decimal("11.00"), Decimal(2))
    assert book.receive_update(diff(100, 103)) is None  # already applied: skipped
    assert book.receive_update(diff(103, 104, [("9.60", "1")])) is None  # overlap applies
    assert book.best_bid() == PriceLevel(Decimal("9.60"), Decimal(1))
    assert book.statistics().skipped == 2
    action = book.receive_update(diff(106, 107))  # 105 is missing
    assert action == NeedSnapshot("BTCUSDT", "gap")
    assert book.state is RESYNCING and book.stale and book.has_book
    assert book.statistics().gaps == 1 and book.statistics().resyncs == 1


def test_resync_keeps_serving_the_last_good_book_then_bridges() -> None:
    book = live_book()
    before = levels(book)
    book.receive_update(diff(103, 103, [("9.90", "1")]))  # gap: 102 missing
    assert book.state is RESYNCING
    book.receive_update(diff(104, 104, [("9.95", "1")]))
    assert levels(book) == before and book.last_update_id == 101  # stale, untouched
    assert book.receive_snapshot(snapshot(103, [("9.90", "1"), ("9.00", "2")],
                                          [("11.00", "3")])) is None
    assert book.state is LIVE and book.last_update_id == 104
    assert levels(book) == ([("9.95", "1"), ("9.9", "1"), ("9", "2")], [("11", "3")])


def test_out_of_order_event_is_a_gap_and_the_late_one_is_skipped() -> None:
    book = live_book()
    assert book.receive_update(diff(103, 103)) == NeedSnapshot("BTCUSDT", "gap")
    assert book.receive_update(diff(102, 102)) is None  # late: already behind the buffer
    assert book.statistics().buffered == 1
    assert book.statistics().skipped == 2  # and the [100..100] that bridged in live_book


def test_hole_in_the_buffer_restarts_it() -> None:
    book = OrderBook("BTCUSDT")
    book.receive_update(diff(10, 11))
    book.receive_update(diff(13, 14))  # 12 missing
    assert book.statistics().gaps == 1 and book.statistics().buffered == 1
    assert book.receive_snapshot(snapshot(11, [("1", "1")], [("2", "1")])) == NeedSnapshot(
        "BTCUSDT", "stale snapshot")
    assert book.receive_snapshot(snapshot(12, [("1", "1")], [("2", "1")])) is None
    assert book.state is LIVE and book.last_update_id == 14


def test_buffer_is_bounded_oldest_first() -> None:
    book = OrderBook("BTCUSDT", max_buffer=3)
    for first in range(10, 20):
        book.receive_update(diff(first, first))
    stats = book.statistics()
    assert stats.buffered == 3 and stats.buffer_dropped == 7
    assert book.receive_snapshot(snapshot(12, [("1", "1")], [("2", "1")])) == NeedSnapshot(
        "BTCUSDT", "stale snapshot")
    assert book.receive_snapshot(snapshot(17, [("1", "1")], [("2", "1")])) is None
    assert book.state is LIVE and book.last_update_id == 19


def test_crossed_live_book_is_a_fault() -> None:
    book = live_book()
    action = book.receive_update(diff(102, 102, [("11.00", "1")]))  # bid at the best ask
    assert action == NeedSnapshot("BTCUSDT", "crossed")
    assert book.state is RESYNCING and book.stale
    assert book.statistics().crossed == 1


def test_crossed_snapshot_is_refetched() -> None:
    book = OrderBook("BTCUSDT")
    book.receive_update(diff(101, 101))
    crossed = snapshot(100, [("12.00", "1")], [("11.00", "1")])
    assert book.receive_snapshot(crossed) == NeedSnapshot("BTCUSDT", "crossed snapshot")
    assert book.state is SYNCING and book.statistics().crossed == 1


def test_buffered_events_that_cross_the_new_book_keep_the_old_one() -> None:
    book = live_book()
    before = levels(book)
    book.receive_update(diff(103, 103, [("13.00", "1")]))  # gap, and a crossing bid
    action = book.receive_snapshot(snapshot(102, [("10.00", "1")], [("11.00", "1")]))
    assert action == NeedSnapshot("BTCUSDT", "crossed")
    assert book.state is RESYNCING and levels(book) == before


def test_reset_keeps_the_book_stale_and_asks_on_the_next_event() -> None:
    book = live_book()
    book.reset("reconnect")
    assert book.state is RESYNCING and book.stale and book.best_bid() is not None
    assert not book.needs_snapshot
    assert book.receive_update(diff(500, 501)) == NeedSnapshot("BTCUSDT", "reconnect")


def test_live_book_ignores_a_late_snapshot() -> None:
    book = live_book()
    assert book.receive_snapshot(snapshot(50, [("1", "1")], [("2", "1")])) is None
    assert book.last_update_id == 101 and book.best_bid() == PriceLevel(Decimal("10.00"),
                                                                         Decimal(1))


# -- futures ---------------------------------------------------------------------


def test_futures_rules_follow_pu() -> None:
    book = OrderBook("BTCUSDT", rules="usdm_futures")
    book.receive_update(diff(80, 90, pu=70))     # u < L: dropped
    book.receive_update(diff(95, 110, [("9.90", "1")], pu=90))   # U <= L <= u: bridges
    book.receive_update(diff(130, 140, pu=110))  # not contiguous, but pu chains
    assert book.receive_snapshot(snapshot(100, [("9.00", "1")], [("11.00", "1")])) is None
    assert book.state is LIVE and book.last_update_id == 140
    assert book.receive_update(diff(141, 150, pu=140)) is None
    assert book.receive_update(diff(151, 160, pu=150)) is None
    assert book.receive_update(diff(170, 180, pu=165)) == NeedSnapshot("BTCUSDT", "gap")


def test_futures_event_with_u_equal_to_snapshot_is_applied() -> None:
    book = OrderBook("BTCUSDT", rules=Rules.USDM_FUTURES)
    book.receive_update(diff(95, 100, [("9.50", "2")], pu=90))
    assert book.receive_snapshot(BASE) is None  # u == L: kept and applied (no + 1)
    assert book.state is LIVE and book.best_bid() == PriceLevel(Decimal("10.00"), Decimal(1))
    assert book.bids(2)[1] == PriceLevel(Decimal("9.50"), Decimal(2))


def test_futures_snapshot_between_events_bridges_by_pu() -> None:
    book = OrderBook("BTCUSDT", rules=Rules.USDM_FUTURES)
    book.receive_update(diff(105, 110, pu=98))  # pu <= L < U: nothing in between
    assert book.receive_snapshot(BASE) is None
    assert book.state is LIVE


def test_futures_stale_snapshot() -> None:
    book = OrderBook("BTCUSDT", rules=Rules.USDM_FUTURES)
    book.receive_update(diff(105, 110, pu=102))  # pu > L: an event is missing in between
    assert book.receive_snapshot(BASE) == NeedSnapshot("BTCUSDT", "stale snapshot")


def test_futures_rules_need_pu() -> None:
    book = OrderBook("BTCUSDT", rules=Rules.USDM_FUTURES)
    book.receive_update(diff(1, 2, pu=0))
    with pytest.raises(ValueError, match="pu"):
        book.receive_update(diff(3, 4))


# -- exact levels -------------------------------------------------------------------


def test_queries_top_spread_and_band() -> None:
    book = live_book()
    assert book.spread() == Decimal("1.00")
    bids, asks = book.top(2)
    assert bids == [PriceLevel(Decimal("10.00"), Decimal(1)),
                    PriceLevel(Decimal("9.50"), Decimal(5))]
    assert asks == [PriceLevel(Decimal("11.00"), Decimal(3)),
                    PriceLevel(Decimal("12.00"), Decimal(4))]
    assert book.top(0) == ([], [])
    assert book.depth() == (3, 2)
    assert book.depth_within("0.5") == (Decimal(6), Decimal(3))
    assert book.depth_within(Decimal(1)) == (Decimal(8), Decimal(7))
    assert book.depth_within("0") == (Decimal(1), Decimal(3))
    with pytest.raises(ValueError):
        book.depth_within("-1")
    assert "live" in repr(book)


def test_zero_spellings_and_deleting_unknown_levels() -> None:
    book = live_book()
    book.receive_update(diff(102, 102, [("10.00", "0.00000000"), ("5.00", "0")],
                             [("11.00", "00.0")]))
    assert book.best_bid() == PriceLevel(Decimal("9.50"), Decimal(5))
    assert book.best_ask() == PriceLevel(Decimal("12.00"), Decimal(4))
    assert book.depth() == (2, 1)


def test_a_price_spelled_two_ways_is_one_level() -> None:
    book = live_book()
    book.receive_update(diff(102, 102, [("10.0", "8")]))
    assert book.bids() == [PriceLevel(Decimal("10.00"), Decimal(8)),
                           PriceLevel(Decimal("9.50"), Decimal(5)),
                           PriceLevel(Decimal("9.00"), Decimal(2))]
    book.receive_update(diff(103, 103, [("10", "0")]))
    assert book.best_bid() == PriceLevel(Decimal("9.50"), Decimal(5))


def test_more_price_digits_rescale_the_book() -> None:
    book = live_book()
    book.receive_update(diff(102, 102, [("10.0000000001", "1")], [("10.00000000011", "2")]))
    assert book.best_bid() == PriceLevel(Decimal("10.0000000001"), Decimal(1))
    assert book.best_ask() == PriceLevel(Decimal("10.00000000011"), Decimal(2))
    assert book.depth_within("0.00000000001") == (Decimal(1), Decimal(2))
    assert book.bids()[1] == PriceLevel(Decimal("10.00"), Decimal(1))


def test_rescale_while_loading_a_snapshot() -> None:
    book = OrderBook("BTCUSDT", price_scale=2)
    book.receive_update(diff(101, 101))
    book.receive_snapshot(snapshot(100, [("1.5", "1"), ("1.25", "1"), ("1.125", "1")],
                                   [("2.0001", "1"), ("3", "1")]))
    assert book.state is LIVE
    assert [level.price for level in book.bids()] == [Decimal("1.5"), Decimal("1.25"),
                                                      Decimal("1.125")]
    assert [level.price for level in book.asks()] == [Decimal("2.0001"), Decimal(3)]


def test_decimal_levels_from_a_decimals_decoder() -> None:
    decoder = Decoder(["btcusdt@depth"], decimals=True)
    book = OrderBook("BTCUSDT")
    first = decoder.decode(orjson.dumps(
        {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 101, "u": 101,
         "b": [["10.00", "2.000"]], "a": [["11.00", "0.000"]]}))
    assert isinstance(first, DepthUpdate) and isinstance(first.bids[0][0], Decimal)
    book.receive_update(first)
    book.receive_snapshot(BASE)
    assert book.state is LIVE
    assert book.top(1) == ([PriceLevel(Decimal(10), Decimal(2))],
                           [PriceLevel(Decimal(12), Decimal(4))])


def test_invalid_prices_and_snapshots_raise_value_error() -> None:
    book = live_book()
    with pytest.raises(ValueError, match="price"):
        book.receive_update(diff(102, 102, [("1e5", "1")]))
    with pytest.raises(ValueError):
        parse_depth_snapshot(b'{"bids": []}')
    with pytest.raises(ValueError):
        parse_depth_snapshot({"lastUpdateId": "1", "bids": [], "asks": []})
    with pytest.raises(ValueError, match="twice"):
        OrderBook("X").receive_snapshot(snapshot(1, [("1.0", "1"), ("1.00", "2")], []))
    with pytest.raises(ValueError):
        OrderBook("X", max_buffer=0)


def test_parse_depth_snapshot_accepts_futures_bodies() -> None:
    body = b'{"lastUpdateId":7,"E":1,"T":2,"bids":[["1.0","2"]],"asks":[]}'
    depth = parse_depth_snapshot(body, "btcusdt")
    assert depth == PartialDepth(7, [["1.0", "2"]], [], "BTCUSDT")
    assert parse_depth_snapshot(depth) is depth


def test_ghost_levels_are_compacted() -> None:
    book = live_book()
    first = 102
    for i in range(3000):  # many distinct prices, each added then deleted
        price = f"{5 + i / 1000:.3f}"
        book.receive_update(diff(first, first, [(price, "1")]))
        book.receive_update(diff(first + 1, first + 1, [(price, "0")]))
        first += 2
    assert book.state is LIVE and book.depth() == (3, 2)
    side = book._bids  # white box: the ghosts stay bounded
    assert len(side.keys) <= 2 * side.live_hint + 1024 + 2
    assert len(side.qtys) == len(side.keys) == len(side.price_of) == len(side.key_of)


# -- the recorded captures ---------------------------------------------------------------


def _replay(kind: str, rules: Rules) -> dict[str, OrderBook]:
    """Feed a capture to one book per symbol; answer each request with its REST snapshot.

    Snapshots pair with symbols in the order the symbols first appear
    (``STREAMS.md`` §10 end, ``SOURCES.md``).  The book is checked for
    crossing after every event by the book itself; here the counters must
    show no gap, no crossing and no refetch.
    """
    decoder = Decoder()
    events = [decoder.decode(line)
              for line in (SAMPLES / f"recorded_cryptofeed_{kind}.jsonl").read_bytes().splitlines()]
    bodies = (SAMPLES / f"recorded_cryptofeed_{kind}_rest_depth.jsonl").read_bytes().splitlines()
    order = list(dict.fromkeys(e.symbol for e in events if isinstance(e, DepthUpdate)))
    assert len(order) == len(bodies) == 4
    snapshots = dict(zip(order, bodies, strict=True))
    books = {symbol: OrderBook(symbol, rules=rules) for symbol in order}
    for event in events:
        if not isinstance(event, DepthUpdate):
            continue
        book = books[event.symbol]
        action = book.receive_update(event)
        if action is not None:
            assert action.reason == "start"
            assert book.receive_snapshot(snapshots[event.symbol]) is None
        if book.has_book:
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is not None and ask is not None and bid.price < ask.price
    for book in books.values():
        stats = book.statistics()
        assert book.state is LIVE, (book, stats)
        assert (stats.gaps, stats.crossed, stats.refetches, stats.resyncs) == (0, 0, 0, 0)
        assert stats.snapshots == 1 and stats.applied > 0
    return books


@needs_samples
def test_recorded_spot_capture_syncs_without_gaps() -> None:
    books = _replay("spot", Rules.SPOT)
    assert books["NKNUSDT"].statistics().applied == 149  # [750..752] was in the snapshot
    assert books["NKNUSDT"].last_update_id == 499870179


@needs_samples
def test_recorded_futures_capture_syncs_by_pu() -> None:
    books = _replay("usdm_futures", Rules.USDM_FUTURES)
    assert books["SUSHIUSDT"].statistics().skipped == 3  # u < lastUpdateId


@needs_samples
def test_recorded_futures_capture_breaks_the_spot_rule() -> None:
    """Futures ids are not contiguous per symbol: under spot rules every event is a gap."""
    decoder = Decoder()
    lines = (SAMPLES / "recorded_cryptofeed_usdm_futures.jsonl").read_bytes().splitlines()
    events = [e for e in map(decoder.decode, lines)
              if isinstance(e, DepthUpdate) and e.symbol == "SUSHIUSDT"]
    book = OrderBook("SUSHIUSDT", rules=Rules.SPOT)
    for event in events:
        book.receive_update(event)
    assert book.statistics().gaps > 50


# -- the exchange's market as oracle ----------------------------------------------------


def truth(depth: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    def text(side: list[list[str]]) -> list[tuple[str, str]]:
        return [(plain(Decimal(p)), plain(Decimal(q))) for p, q in side]
    return text(depth["bids"]), text(depth["asks"])


#: What happens to each tick's diff event on its way to the client.
FATES = st.sampled_from(["deliver"] * 8 + ["drop", "hold"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    fates=st.lists(FATES, min_size=20, max_size=150),
    delays=st.lists(st.integers(0, 6), min_size=1, max_size=20),
    stale=st.lists(st.booleans(), min_size=1, max_size=20),
)
def test_book_matches_the_true_book_whenever_live(
    seed: int, fates: list[str], delays: list[int], stale: list[bool]
) -> None:
    """Random drops (gaps), reorderings and stale snapshots against the market as oracle.

    Whenever the client reports live, its book equals the market's true book
    as of the client's ``last_update_id``; every dropped event that the live
    book needed is detected at the next event; and every sync recovers.
    """
    symbol = "ethusdt"
    market = Market(seed, [symbol])
    decoder = Decoder([f"{symbol}@depth@100ms"])
    book = OrderBook(symbol)
    history: dict[int, dict[str, Any]] = {}  # u of each tick -> the true book after it
    snapshots: list[dict[str, Any]] = [market.depth_snapshot(symbol, 5000)]
    requests: list[tuple[int, dict[str, Any]]] = []  # (deliver at tick, snapshot)
    held: DepthUpdate | None = None
    dropped_while_live = 0

    def deliver(event: DepthUpdate) -> None:
        nonlocal dropped_while_live
        was_live = book.state is LIVE
        expected_gap = was_live and event.first_update_id > (book.last_update_id or 0) + 1
        action = book.receive_update(event)
        if expected_gap:
            assert book.state is not LIVE  # the gap was detected
            dropped_while_live -= 1
        if action is not None:
            request(action)
        check()

    def request(action: NeedSnapshot) -> None:
        number = book.statistics().requests
        delay = delays[number % len(delays)]
        if stale[number % len(stale)] and len(snapshots) > 3:
            body = snapshots[-3]  # older than what the client has buffered, or not
        else:
            body = snapshots[-1]
        requests.append((tick + delay, body))

    def check() -> None:
        if book.state is LIVE:
            assert book.last_update_id is not None
            assert levels(book) == truth(history[book.last_update_id])

    for tick, fate in enumerate(fates):
        market.step()
        (payload,) = market.payloads(f"{symbol}@depth@100ms")
        event = decoder.decode_object(payload)
        assert isinstance(event, DepthUpdate)
        snapshots.append(market.depth_snapshot(symbol, 5000))
        history[event.final_update_id] = snapshots[-1]
        if fate == "drop":
            if book.state is LIVE and book.last_update_id == event.first_update_id - 1:
                dropped_while_live += 1
            continue
        if fate == "hold" and held is None:
            if book.state is LIVE and book.last_update_id == event.first_update_id - 1:
                dropped_while_live += 1  # the next event will arrive first: a gap
            held = event
            continue
        deliver(event)
        if held is not None:
            deliver(held)
            held = None
        due = [r for r in requests if r[0] <= tick]
        for entry in due:
            requests.remove(entry)
            action = book.receive_snapshot(entry[1])
            if action is not None:
                request(action)
            check()
    # Recovery: with faults stopped, the book goes live again and matches.
    for _ in range(20):
        market.step()
        tick += 1
        (payload,) = market.payloads(f"{symbol}@depth@100ms")
        event = decoder.decode_object(payload)
        assert isinstance(event, DepthUpdate)
        snapshots.append(market.depth_snapshot(symbol, 5000))
        history[event.final_update_id] = snapshots[-1]
        deliver(event)
        for entry in list(requests):
            requests.remove(entry)
            action = book.receive_snapshot(snapshots[-1])
            if action is not None:
                request(action)
            check()
    assert book.state is LIVE
    check()
    # Every injected gap that the live book needed was seen by a later event.
    assert dropped_while_live == 0


# -- zero spellings and ids that go backwards ----------------------------------------------


@pytest.mark.parametrize("zero", ["0E-8", "-0", "0e0", "0.00E+3", "-0.000"])
def test_every_spelling_of_zero_deletes_the_level(zero: str) -> None:
    book = live_book()
    assert book.receive_update(diff(102, 102, [("9.50", zero)], [("12.00", zero)])) is None
    assert [level.price for level in book.bids()] == [Decimal(10), Decimal(9)]
    assert [level.price for level in book.asks()] == [Decimal(11)]
    assert book.depth() == (2, 1)
    # A zero for a price the book does not have adds nothing.
    book.receive_update(diff(103, 103, [("9.70", zero)]))
    assert book.depth() == (2, 1)


def test_a_small_quantity_with_an_exponent_is_not_zero() -> None:
    book = live_book()
    book.receive_update(diff(102, 102, [("9.70", "1E-8")]))
    assert PriceLevel(Decimal("9.70"), Decimal("1E-8")) in book.bids()


def _timed(first: int, last: int, when: int, *, pu: int | None = None,
           bids: Any = ()) -> DepthUpdate:
    update = diff(first, last, bids, pu=pu)
    update.event_time = when
    return update


@pytest.mark.parametrize("rules", [Rules.SPOT, Rules.USDM_FUTURES])
def test_ids_that_go_backwards_resync_instead_of_freezing(rules: Rules) -> None:
    """BOOK5: a newer event at or below the book's id is a restarted sequence."""
    book = OrderBook("BTCUSDT", rules=rules)
    book.receive_update(_timed(100, 101, 10, pu=99))
    assert book.receive_snapshot(BASE) is None and book.state is LIVE
    # A repeat of the applied event (not newer): a duplicate, skipped.
    assert book.receive_update(_timed(100, 101, 10, pu=99)) is None
    assert book.state is LIVE and book.statistics().skipped == 1
    # The exchange restarted: low ids, later times.  Skipping them would freeze the book.
    action = book.receive_update(_timed(5, 6, 11, pu=4, bids=[("9.90", "1")]))
    assert action == NeedSnapshot("BTCUSDT", "ids went backwards")
    assert book.state is RESYNCING and book.stale
    stats = book.statistics()
    assert (stats.backwards, stats.resyncs, stats.skipped) == (1, 1, 1)
    # The new sequence's snapshot brings it back, with the buffered event applied.
    book.receive_update(_timed(7, 8, 12, pu=6))
    assert book.receive_snapshot(snapshot(6, [("10.00", "1")], [("11.00", "3")])) is None
    assert book.state is LIVE and book.last_update_id == 8


@pytest.mark.parametrize("levels", [
    [[1e-8, "1"], [2e-8, "1"]],  # as floats these would merge into one level "0.000000"
    [["0.00000001", 1.5]],
    [["0.00000001", None]],
    [["0.00000001"]],
])
def test_a_snapshot_level_that_is_not_a_pair_of_strings_is_refused(levels: Any) -> None:
    book = OrderBook("BTCUSDT")
    book.receive_update(diff(101, 101))
    with pytest.raises(ValueError, match="pair of decimal strings"):
        book.receive_snapshot({"lastUpdateId": 100, "bids": levels, "asks": []})
    assert book.state is SYNCING


def test_a_float_price_never_becomes_a_level() -> None:
    book = live_book()
    with pytest.raises(ValueError, match="decimal string"):
        book.receive_update(DepthUpdate(1, "BTCUSDT", 102, 102, [[9.7, "1"]], [], 101))
