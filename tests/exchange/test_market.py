"""The simulated market: reproducible, self-consistent, and shaped like Binance."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal
from typing import Any

import pytest

from trio_feed import InvalidStreamName
from trio_feed.binance import parse_stream
from trio_feed.exchange import EPOCH_MS, TICK_MS, Market
from trio_feed.exchange._market import candle_bounds, format_decimal

DECIMAL_8 = re.compile(r"-?\d+\.\d{8}")
PERCENT = re.compile(r"-?\d+\.\d{3}")

# Key order and types as in STREAMS.md §4 (and the samples it cites).
KEYS: dict[str, dict[str, type]] = {
    "trade": {"e": str, "E": int, "s": str, "t": int, "p": str, "q": str, "T": int,
              "m": bool, "M": bool},
    "aggTrade": {"e": str, "E": int, "s": str, "a": int, "p": str, "q": str, "f": int,
                 "l": int, "T": int, "m": bool, "M": bool},
    "blockTrade": {"e": str, "E": int, "s": str, "t": int, "p": str, "q": str, "T": int,
                   "m": bool},
    "kline": {"e": str, "E": int, "s": str, "k": dict},
    "kline.k": {"t": int, "T": int, "s": str, "i": str, "f": int, "L": int, "o": str,
                "c": str, "h": str, "l": str, "v": str, "n": int, "x": bool, "q": str,
                "V": str, "Q": str, "B": str},
    "miniTicker": {"e": str, "E": int, "s": str, "c": str, "o": str, "h": str, "l": str,
                   "v": str, "q": str},
    "ticker": {"e": str, "E": int, "s": str, "p": str, "P": str, "w": str, "x": str,
               "c": str, "Q": str, "b": str, "B": str, "a": str, "A": str, "o": str,
               "h": str, "l": str, "v": str, "q": str, "O": int, "C": int, "F": int,
               "L": int, "n": int},
    "ticker_window": {"e": str, "E": int, "s": str, "p": str, "P": str, "o": str, "h": str,
                      "l": str, "c": str, "w": str, "v": str, "q": str, "O": int, "C": int,
                      "F": int, "L": int, "n": int},
    "avgPrice": {"e": str, "E": int, "s": str, "i": str, "w": str, "T": int},
    "bookTicker": {"u": int, "s": str, "b": str, "B": str, "a": str, "A": str},
    "depth_partial": {"lastUpdateId": int, "bids": list, "asks": list},
    "depth": {"e": str, "E": int, "s": str, "U": int, "u": int, "b": list, "a": list},
    "referencePrice": {"e": str, "s": str, "r": str, "t": int},
}
# Which keys hold 8-decimal strings, per kind.
DECIMAL_KEYS = {
    "trade": "pq", "aggTrade": "pq", "blockTrade": "pq", "kline.k": "ochlvqVQ",
    "miniTicker": "cohlvq", "ticker": "pwxcQbBaAohlvq", "ticker_window": "pohlcwvq",
    "avgPrice": "w", "bookTicker": "bBaA", "referencePrice": "r",
}

ALL_STREAMS = [
    "btcusdt@trade", "btcusdt@aggTrade", "btcusdt@blockTrade", "btcusdt@kline_1s",
    "btcusdt@kline_1m", "btcusdt@kline_1h@+08:00", "btcusdt@miniTicker", "btcusdt@ticker",
    "btcusdt@ticker_1h", "btcusdt@ticker_4h", "btcusdt@ticker_1d", "btcusdt@avgPrice",
    "btcusdt@bookTicker", "btcusdt@depth5", "btcusdt@depth20@100ms", "btcusdt@depth",
    "btcusdt@depth@100ms", "btcusdt@referencePrice", "!miniTicker@arr", "!ticker@arr",
    "!ticker_1h@arr", "ethusdt@trade", "bnbusdt@depth@100ms",
]


def run(market: Market, streams: list[str], ticks: int) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    for _ in range(ticks):
        market.step()
        events.extend(market.events(streams))
    return events


def check_shape(kind: str, payload: dict[str, Any]) -> None:
    expected = KEYS[kind]
    assert list(payload) == list(expected), (kind, payload)
    for key, value in payload.items():
        assert type(value) is expected[key], (kind, key, value)
        if key == "P":
            assert isinstance(value, str) and PERCENT.fullmatch(value), (kind, value)
        elif key in DECIMAL_KEYS.get(kind, ""):
            assert isinstance(value, str) and DECIMAL_8.fullmatch(value), (kind, key, value)
    if kind in ("depth", "depth_partial"):
        for side in ("b", "a") if kind == "depth" else ("bids", "asks"):
            for price, qty in payload[side]:
                assert DECIMAL_8.fullmatch(price) and DECIMAL_8.fullmatch(qty)


def test_every_stream_has_binances_keys_and_types() -> None:
    market = Market(seed=1)
    seen: set[str] = set()
    for name, payload in run(market, ALL_STREAMS, 1000):
        stream = parse_stream(name)
        kind = stream.kind.removesuffix("_arr")
        items = payload if stream.is_array else [payload]
        for item in items:
            check_shape(kind, item)
            if kind == "kline":
                check_shape("kline.k", item["k"])
                assert item["k"]["B"] == "0"
            if kind == "ticker_window":
                assert item["e"] == f"{stream.interval}Ticker"
        seen.add(name)
    assert seen == set(ALL_STREAMS)


def test_same_seed_same_history_different_seed_different() -> None:
    first = run(Market(seed=5), ALL_STREAMS, 200)
    second = run(Market(seed=5), ALL_STREAMS, 200)
    other = run(Market(seed=6), ALL_STREAMS, 200)
    assert first == second
    assert first != other


def test_what_is_asked_does_not_change_history() -> None:
    busy, quiet = Market(seed=3), Market(seed=3)
    run(busy, ALL_STREAMS, 500)
    for _ in range(500):
        quiet.step()
    assert busy.depth_snapshot("btcusdt", 5000) == quiet.depth_snapshot("btcusdt", 5000)
    assert busy.payloads("ethusdt@ticker") == quiet.payloads("ethusdt@ticker")
    assert busy.encoded("btcusdt@depth") == quiet.encoded("btcusdt@depth")


def test_trades_aggregates_and_tickers_agree() -> None:
    market = Market(seed=2)
    last_trade: dict[str, Any] | None = None
    tick_trades: list[dict[str, Any]] = []
    for _ in range(2000):
        market.step()
        tick_trades = market.payloads("btcusdt@trade")
        for trade in tick_trades:
            if last_trade is not None:
                assert trade["t"] == last_trade["t"] + 1
            assert trade["T"] <= trade["E"]
            last_trade = trade
        for agg in market.payloads("btcusdt@aggTrade"):
            assert [t["t"] for t in tick_trades] == list(range(agg["f"], agg["l"] + 1))
            assert {t["p"] for t in tick_trades} == {agg["p"]}
            assert sum(Decimal(t["q"]) for t in tick_trades) == Decimal(agg["q"])
            assert agg["m"] == tick_trades[0]["m"]
        for ticker in market.payloads("btcusdt@ticker"):
            assert last_trade is not None
            assert ticker["L"] == last_trade["t"]
            assert ticker["c"] == last_trade["p"]
            assert ticker["n"] == ticker["L"] - ticker["F"] + 1
            assert Decimal(ticker["l"]) <= Decimal(ticker["c"]) <= Decimal(ticker["h"])
            assert Decimal(ticker["b"]) < Decimal(ticker["a"])
            assert ticker["C"] == ticker["E"] and ticker["O"] % 60_000 == 0


def test_one_second_klines_are_built_from_the_trades() -> None:
    market = Market(seed=4)
    trades: list[dict[str, Any]] = []
    closed = 0
    previous_last = None
    for _ in range(600):
        market.step()
        trades.extend(market.payloads("ethusdt@trade"))
        for kline in market.payloads("ethusdt@kline_1s"):
            k = kline["k"]
            assert k["T"] == k["t"] + 999
            mine = [t for t in trades if k["t"] <= t["T"] <= k["T"]]
            if not k["x"] or not mine:
                continue
            closed += 1
            prices = [Decimal(t["p"]) for t in mine]
            assert (k["f"], k["L"], k["n"]) == (mine[0]["t"], mine[-1]["t"], len(mine))
            assert Decimal(k["o"]) == prices[0] and Decimal(k["c"]) == prices[-1]
            assert Decimal(k["h"]) == max(prices) and Decimal(k["l"]) == min(prices)
            assert Decimal(k["v"]) == sum(Decimal(t["q"]) for t in mine)
            assert Decimal(k["V"]) == sum(Decimal(t["q"]) for t in mine if not t["m"])
            if previous_last is not None:
                assert k["f"] == previous_last + 1
            previous_last = k["L"]
    assert closed > 50


def test_minute_klines_close_on_the_boundary_and_chain() -> None:
    market = Market(seed=4)
    candles = [p["k"] for _, p in run(market, ["bnbusdt@kline_1m"], 3000)]
    final = [k for k in candles if k["x"]]
    assert len(final) >= 4
    for before, after in itertools.pairwise(final):
        assert after["t"] == before["T"] + 1
        assert after["f"] == before["L"] + 1
    assert all(k["t"] % 60_000 == 0 for k in candles)


def book_from(snapshot: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {"b": dict(snapshot["bids"]), "a": dict(snapshot["asks"])}


def apply(book: dict[str, dict[str, str]], event: dict[str, Any]) -> None:
    for side in ("b", "a"):
        for price, qty in event[side]:
            if Decimal(qty) == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty


def best(book: dict[str, dict[str, str]]) -> tuple[str, str]:
    return max(book["b"], key=Decimal), min(book["a"], key=Decimal)


@pytest.mark.parametrize("stream", ["btcusdt@depth@100ms", "btcusdt@depth"])
def test_diff_depth_rebuilds_the_true_book(stream: str) -> None:
    market = Market(seed=9)
    snapshot = market.depth_snapshot("btcusdt", 5000)
    book, last = book_from(snapshot), snapshot["lastUpdateId"]
    for _ in range(1500):
        market.step()
        for event in market.payloads(stream):
            assert event["U"] == last + 1
            assert event["u"] >= event["U"]
            last = event["u"]
            apply(book, event)
            bid, ask = best(book)
            assert Decimal(bid) < Decimal(ask)
        for ticker in market.payloads("btcusdt@bookTicker"):
            if stream.endswith("100ms"):
                assert ticker["u"] == last
                bid, ask = best(book)
                assert (ticker["b"], ticker["B"]) == (bid, book["b"][bid])
                assert (ticker["a"], ticker["A"]) == (ask, book["a"][ask])
    assert market.depth_snapshot("btcusdt", 5000)["lastUpdateId"] == last
    assert book_from(market.depth_snapshot("btcusdt", 5000)) == book


def test_partial_depth_is_the_top_of_the_snapshot() -> None:
    market = Market(seed=11)
    for _ in range(300):
        market.step()
        for partial in market.payloads("ethusdt@depth10@100ms"):
            snapshot = market.depth_snapshot("ethusdt", 10)
            assert partial == snapshot
            assert len(partial["bids"]) == len(partial["asks"]) == 10
            bids = [Decimal(p) for p, _ in partial["bids"]]
            asks = [Decimal(p) for p, _ in partial["asks"]]
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
            assert bids[0] < asks[0]


def test_cadences() -> None:
    market = Market(seed=0)
    counts: dict[str, int] = {}
    for name, _ in run(market, ["btcusdt@depth@100ms", "btcusdt@depth", "btcusdt@depth5",
                                 "btcusdt@kline_5m", "btcusdt@kline_1s", "!miniTicker@arr",
                                 "btcusdt@referencePrice"], 100):
        counts[name] = counts.get(name, 0) + 1
    assert counts["btcusdt@depth@100ms"] == 100
    assert counts["btcusdt@depth"] == counts["btcusdt@depth5"] == 10
    assert counts["btcusdt@kline_1s"] == 10
    assert counts["btcusdt@kline_5m"] == 5
    assert counts["!miniTicker@arr"] == counts["btcusdt@referencePrice"] == 10


def test_simulated_clock_and_injected_clock() -> None:
    market = Market()
    market.step()
    assert market.time_ms == EPOCH_MS + TICK_MS
    assert market.tick == 1
    times = iter([1_000, 1_050, 1_040, 2_000])
    clocked = Market(clock=lambda: next(times))
    first_id = clocked.depth_snapshot("btcusdt")["lastUpdateId"] + 1
    stamps, events = [], []
    for _ in range(3):
        clocked.step()
        stamps.append(clocked.time_ms)
        events.extend(clocked.payloads("btcusdt@depth@100ms"))
    assert stamps == [1_050, 1_050, 2_000]
    [event] = events
    assert (event["E"], event["U"]) == (2_000, first_id)
    assert clocked.server_shutdown() == {"e": "serverShutdown", "E": 2_000}


def test_unknown_symbols_and_event_only_streams_emit_nothing() -> None:
    market = Market(symbols=["btcusdt"])
    market.step()
    assert market.payloads("dogeusdt@trade") == []
    assert market.payloads("!serverShutdown") == []
    with pytest.raises(InvalidStreamName):
        market.payloads("BTCUSDT@trade")
    with pytest.raises(KeyError):
        market.depth_snapshot("dogeusdt")


def test_other_symbols_get_a_stable_made_up_spec() -> None:
    market = Market(symbols=["solusdt"])
    for _ in range(50):
        market.step()
    snapshot = market.depth_snapshot("SOLUSDT", 3)
    assert len(snapshot["bids"]) == 3
    assert Decimal(snapshot["bids"][0][0]) < Decimal(snapshot["asks"][0][0])
    with pytest.raises(ValueError):
        Market(symbols=[])


def test_depth_snapshot_limits() -> None:
    market = Market()
    assert len(market.depth_snapshot("btcusdt", 7)["bids"]) == 7
    assert len(market.depth_snapshot("btcusdt", 100_000)["asks"]) <= 5000
    with pytest.raises(ValueError):
        market.depth_snapshot("btcusdt", 0)


def test_candle_bounds() -> None:
    day = 86_400_000
    monday = 1_699_833_600_000  # 2023-11-13T00:00:00Z
    t = monday + 3 * day + 5
    assert candle_bounds("1w", 0, t) == (monday, monday + 7 * day)
    assert candle_bounds("1M", 0, t) == (1_698_796_800_000, 1_701_388_800_000)
    assert candle_bounds("1d", 8 * 3_600_000, monday) == (monday - 8 * 3_600_000,
                                                          monday + 16 * 3_600_000)
    assert candle_bounds("1m", 0, 61_000) == (60_000, 120_000)


def test_format_decimal() -> None:
    assert format_decimal(2_500_010_000_000) == "25000.10000000"
    assert format_decimal(-1) == "-0.00000001"
    assert format_decimal(0) == "0.00000000"
