"""EventRecorder's assertions, on events built by hand."""

from __future__ import annotations

import pytest

from trio_feed.binance import AggTrade, BookTicker, DepthUpdate, Trade
from trio_feed.testing import EventRecorder, Gap


def t(trade_id: int, stream: str | None = "btcusdt@trade", price: str = "1.0") -> Trade:
    return Trade(1, "BTCUSDT", trade_id, price, "2.0", 1, False, stream)


def d(first: int, last: int, pu: int | None = None) -> DepthUpdate:
    return DepthUpdate(1, "BTCUSDT", first, last, [], [], pu, None, "btcusdt@depth")


def bt(update_id: int) -> BookTicker:
    return BookTicker(update_id, "BTCUSDT", "1", "1", "2", "1", stream="btcusdt@bookTicker")


def recorded(*events: object) -> EventRecorder:
    recorder = EventRecorder()
    for event in events:
        recorder(event)  # type: ignore[arg-type]
    return recorder


def test_exact_sequence_with_every_kind_of_expectation() -> None:
    r = recorded(t(1), bt(5), t(2, price="3.5"))
    r.assert_sequence([Trade, {"update_id": 5}, lambda e: e.price == "3.5"])
    r.assert_sequence([t(1), bt(5), t(2, price="3.5")])
    r.assert_sequence([Trade, Trade], stream="btcusdt@trade")
    with pytest.raises(AssertionError,
                       match=r"event #1 is .*bookTicker.*expected an instance of Trade"):
        r.assert_sequence([Trade, Trade, Trade])
    with pytest.raises(AssertionError, match="expected 2 events, recorded 3"):
        r.assert_sequence([Trade, BookTicker])
    with pytest.raises(AssertionError, match=r"expected an event with trade_id=9"):
        r.assert_sequence([{"trade_id": 9}, BookTicker, Trade])


def test_subsequence() -> None:
    r = recorded(t(1), bt(5), t(2), bt(6))
    r.assert_sequence([BookTicker, {"update_id": 6}], exact=False)
    r.assert_sequence([], exact=False)
    with pytest.raises(AssertionError, match=r"expectation #1 .* matches no event"):
        r.assert_sequence([{"update_id": 6}, {"update_id": 5}], exact=False)


def test_gaps_per_stream_and_kind() -> None:
    r = recorded(
        t(1), t(2), t(1, stream="ethusdt@trade"), t(2, stream="ethusdt@trade"), t(5),
        d(10, 12), d(13, 13), d(15, 16),
        AggTrade(1, "BTCUSDT", 7, "1", "1", 1, 1, 1, False, stream="btcusdt@aggTrade"),
        AggTrade(1, "BTCUSDT", 9, "1", "1", 2, 2, 1, False, stream="btcusdt@aggTrade"),
        t(3, stream=None), t(4, stream=None),
    )
    assert r.gaps() == [
        Gap("btcusdt@trade", "trade id", 4, 3, 5),
        Gap("btcusdt@depth", "update id", 7, 14, 15),
        Gap("btcusdt@aggTrade", "aggTrade id", 9, 8, 9),
    ]
    assert r.gaps(stream="ethusdt@trade") == []
    r.assert_no_gaps(stream="ethusdt@trade")
    with pytest.raises(AssertionError, match="3 id gaps in 12 events"):
        r.assert_no_gaps()


def test_futures_depth_chains_on_pu() -> None:
    recorded(d(10, 12, pu=9), d(20, 25, pu=12)).assert_no_gaps()
    assert recorded(d(10, 12, pu=9), d(13, 25, pu=11)).gaps() == [
        Gap("btcusdt@depth", "update id (pu)", 1, 12, 11)
    ]


def test_container_protocol() -> None:
    r = recorded(t(1), bt(2))
    assert len(r) == 2 and r[1] == bt(2) and list(r) == [t(1), bt(2)]
    assert r.of_type(BookTicker) == [bt(2)]
