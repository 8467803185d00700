"""Every sample payload in shared/binance/samples decodes to its typed event.

The samples live beside the repository (``../shared/binance/samples``, see
its ``SOURCES.md``), and are read in place: they are never copied into the
repo.  Without that folder these tests are skipped.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

import attrs
import pytest

from trio_feed.binance import (
    AggTrade,
    AvgPrice,
    BlockTrade,
    BookTicker,
    ControlError,
    ControlResponse,
    Decoder,
    DepthUpdate,
    Event,
    Kline,
    MiniTicker,
    MiniTickerArray,
    PartialDepth,
    ReferencePrice,
    RollingWindowTicker,
    RollingWindowTickerArray,
    ServerShutdown,
    Ticker,
    TickerArray,
    Trade,
    UnknownEvent,
    format_event,
)

from ..shared_data import SAMPLES

pytestmark = pytest.mark.shared


def read(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def lines(name: str) -> list[bytes]:
    return [line for line in read(name).splitlines() if line.strip()]


# file, the stream it is documented for, expected class, spot checks
DOCUMENTED: list[tuple[str, str, type, dict[str, Any]]] = [
    ("trade.json", "bnbbtc@trade", Trade, {
        "event_time": 1672515782136, "symbol": "BNBBTC", "trade_id": 12345, "price": "0.001",
        "quantity": "100", "trade_time": 1672515782136, "buyer_is_maker": True,
    }),
    ("aggTrade.json", "bnbbtc@aggTrade", AggTrade, {
        "agg_trade_id": 12345, "price": "0.001", "quantity": "100", "first_trade_id": 100,
        "last_trade_id": 105, "buyer_is_maker": True,
    }),
    ("blockTrade.json", "bnbbtc@blockTrade", BlockTrade, {
        "event_time": 1772506983582, "trade_id": 582, "price": "0.052", "quantity": "5838",
        "trade_time": 1772506983321, "buyer_is_maker": True,
    }),
    ("kline.json", "bnbbtc@kline_1m", Kline, {
        "symbol": "BNBBTC", "interval": "1m", "open_time": 1672515780000,
        "close_time": 1672515839999, "first_trade_id": 100, "last_trade_id": 200,
        "open": "0.0010", "close": "0.0020", "high": "0.0025", "low": "0.0015",
        "volume": "1000", "trade_count": 100, "is_closed": False, "quote_volume": "1.0000",
        "taker_buy_volume": "500", "taker_buy_quote_volume": "0.500",
    }),
    ("kline_tz.json", "bnbbtc@kline_1m@+08:00", Kline, {"interval": "1m", "close": "0.0020"}),
    ("miniTicker.json", "bnbbtc@miniTicker", MiniTicker, {
        "last_price": "0.0025", "open_price": "0.0010", "high_price": "0.0025",
        "low_price": "0.0010", "volume": "10000", "quote_volume": "18",
    }),
    ("ticker.json", "bnbbtc@ticker", Ticker, {
        "price_change": "0.0015", "price_change_percent": "250.00",
        "weighted_average_price": "0.0018", "prev_close_price": "0.0009",
        "last_price": "0.0025", "last_quantity": "10", "best_bid_price": "0.0024",
        "best_bid_quantity": "10", "best_ask_price": "0.0026", "best_ask_quantity": "100",
        "open_time": 0, "close_time": 86400000, "first_trade_id": 0, "last_trade_id": 18150,
        "trade_count": 18151,
    }),
    ("ticker_window.json", "bnbbtc@ticker_1h", RollingWindowTicker, {
        "window": "1h", "last_price": "0.0025", "weighted_average_price": "0.0018",
        "close_time": 1675216573749, "trade_count": 18151,
    }),
    ("avgPrice.json", "btcusdt@avgPrice", AvgPrice, {
        "event_time": 1693907033000, "symbol": "BTCUSDT", "interval": "5m",
        "average_price": "25776.86000000", "last_trade_time": 1693907032213,
    }),
    ("bookTicker.json", "bnbusdt@bookTicker", BookTicker, {
        "update_id": 400900217, "symbol": "BNBUSDT", "best_bid_price": "25.35190000",
        "best_bid_quantity": "31.21000000", "best_ask_price": "25.36520000",
        "best_ask_quantity": "40.66000000", "event_time": None, "transaction_time": None,
    }),
    ("depth_partial.json", "bnbbtc@depth5", PartialDepth, {
        "last_update_id": 160, "bids": [["0.0024", "10"]], "asks": [["0.0026", "100"]],
        "symbol": "BNBBTC",
    }),
    ("depth_diff.json", "bnbbtc@depth", DepthUpdate, {
        "symbol": "BNBBTC", "first_update_id": 157, "final_update_id": 160,
        "bids": [["0.0024", "10"]], "asks": [["0.0026", "100"]],
        "prev_final_update_id": None, "transaction_time": None,
    }),
    ("referencePrice.json", "bazusd@referencePrice", ReferencePrice, {
        "symbol": "BAZUSD", "reference_price": "1.00", "engine_time": 1770313263917,
    }),
    ("serverShutdown.json", "!serverShutdown", ServerShutdown, {"event_time": 1770123456789}),
    ("miniTicker_arr.json", "!miniTicker@arr", MiniTickerArray, {}),
    ("ticker_arr_deprecated.json", "!ticker@arr", TickerArray, {}),
    ("ticker_window_arr.json", "!ticker_1h@arr", RollingWindowTickerArray, {"window": "1h"}),
]


def check(event: Event, cls: type, fields: dict[str, Any]) -> None:
    assert type(event) is cls, format_event(event)
    for name, value in fields.items():
        assert getattr(event, name) == value, name


@pytest.mark.parametrize(("name", "stream", "cls", "fields"), DOCUMENTED,
                         ids=[d[0] for d in DOCUMENTED])
def test_documented_raw_payloads(name: str, stream: str, cls: type, fields: dict[str, Any]) -> None:
    """Each file is what ``/ws/<stream>`` delivers; a one-stream decoder types it."""
    event = Decoder([stream]).decode(read(name))
    check(event, cls, fields)
    assert event.stream == stream
    assert format_event(event)


@pytest.mark.parametrize(("name", "stream", "cls", "fields"), DOCUMENTED,
                         ids=[d[0] for d in DOCUMENTED])
def test_documented_payloads_without_a_stream(
    name: str, stream: str, cls: type, fields: dict[str, Any]
) -> None:
    """Typed by ``e``, by elements' ``e`` or by key set; only partial depth loses its symbol."""
    event = Decoder().decode(read(name))
    if cls is PartialDepth:
        fields = {**fields, "symbol": None}
    check(event, cls, fields)
    assert event.stream is None


def test_documented_arrays() -> None:
    mini = Decoder().decode(read("miniTicker_arr.json"))
    assert isinstance(mini, MiniTickerArray)
    assert [type(e) for e in mini.events] == [MiniTicker]
    assert mini.events[0].symbol == "BNBBTC" and mini.events[0].last_price == "0.0025"
    tickers = Decoder().decode(read("ticker_arr_deprecated.json"))
    assert isinstance(tickers, TickerArray) and tickers.events[0].trade_count == 18151
    window = Decoder().decode(read("ticker_window_arr.json"))
    assert isinstance(window, RollingWindowTickerArray)
    assert window.events[0].window == "1h" and window.events[0].last_trade_id == 18150


def test_documented_decimals() -> None:
    kline = Decoder(decimals=True).decode(read("kline.json"))
    assert isinstance(kline, Kline)
    assert kline.quote_volume == Decimal("1.0000") and str(kline.quote_volume) == "1.0000"
    depth = Decoder(["bnbbtc@depth5"], decimals=True).decode(read("depth_partial.json"))
    assert isinstance(depth, PartialDepth)
    assert depth.bids == [[Decimal("0.0024"), Decimal("10")]]


def test_combined_matches_raw() -> None:
    """Every line of combined.jsonl is the raw sample of the same stream, wrapped."""
    by_stream = {stream: name for name, stream, _, _ in DOCUMENTED}
    decoder = Decoder()
    seen = set()
    for line in lines("combined.jsonl"):
        stream = json.loads(line)["stream"]
        event = decoder.decode(line)
        raw = Decoder([stream]).decode(read(by_stream[stream]))
        assert event == raw, stream
        assert event.stream == stream
        seen.add(stream)
    assert seen == set(by_stream)


def test_recorded_spot() -> None:
    decoder = Decoder()
    counts: Counter[str] = Counter()
    last_u: dict[str, int] = {}
    for line in lines("recorded_cryptofeed_spot.jsonl"):
        envelope = json.loads(line)
        event = decoder.decode(line)
        counts[type(event).__name__] += 1
        assert event.stream == envelope["stream"]
        assert getattr(event, "symbol", None) == envelope["stream"].split("@")[0].upper()
        if isinstance(event, DepthUpdate):
            assert event.prev_final_update_id is None and event.transaction_time is None
            if event.symbol in last_u:  # the capture has no gaps: U == previous u + 1
                assert event.first_update_id == last_u[event.symbol] + 1
            last_u[event.symbol] = event.final_update_id
        elif isinstance(event, BookTicker):
            assert event.event_time is None and type(event.update_id) is int
    assert counts == {"DepthUpdate": 177, "BookTicker": 84, "AggTrade": 2, "Kline": 2}


def test_recorded_spot_values() -> None:
    first = Decoder().decode(lines("recorded_cryptofeed_spot.jsonl")[0])
    assert first == DepthUpdate(
        1633998512068, "NKNUSDT", 499869750, 499869752,
        [["0.35130000", "6195.00000000"], ["0.34750000", "5548.00000000"],
         ["0.34640000", "6222.00000000"]],
        [], None, None, "nknusdt@depth@100ms",
    )


def test_recorded_spot_decimals() -> None:
    decoder = Decoder(decimals=True)
    for line in lines("recorded_cryptofeed_spot.jsonl"):
        event = decoder.decode(line)
        if isinstance(event, DepthUpdate):
            for price, quantity in event.bids + event.asks:
                assert type(price) is Decimal and type(quantity) is Decimal
        elif isinstance(event, BookTicker):
            assert type(event.best_bid_price) is Decimal
        elif isinstance(event, AggTrade):
            assert type(event.price) is Decimal
        elif isinstance(event, Kline):
            assert type(event.close) is Decimal


def test_recorded_futures() -> None:
    decoder = Decoder()
    counts: Counter[str] = Counter()
    last_u: dict[str, int] = {}
    for line in lines("recorded_cryptofeed_usdm_futures.jsonl"):
        envelope = json.loads(line)
        event = decoder.decode(line)
        counts[type(event).__name__] += 1
        assert event.stream == envelope["stream"]
        if isinstance(event, DepthUpdate):
            assert event.transaction_time is not None
            if event.symbol in last_u:  # futures chain: pu == previous u
                assert event.prev_final_update_id == last_u[event.symbol]
            last_u[event.symbol] = event.final_update_id
        elif isinstance(event, BookTicker):
            assert event.event_time is not None and event.transaction_time is not None
    assert counts == {"DepthUpdate": 235, "BookTicker": 124, "AggTrade": 24, "Kline": 17}


def test_recorded_futures_book_ticker_values() -> None:
    first = Decoder().decode(lines("recorded_cryptofeed_usdm_futures.jsonl")[0])
    assert first == BookTicker(600859600576, "SUSHIUSDT", "7.6110", "2", "7.6120", "297",
                               1626992741017, 1626992741012, "sushiusdt@bookTicker")


@pytest.mark.parametrize(
    ("name", "ids"),
    [
        ("recorded_cryptofeed_spot_rest_depth.jsonl", [499869752, 281916627, 259345543, 15602511]),
        ("recorded_cryptofeed_usdm_futures_rest_depth.jsonl", None),
    ],
)
def test_rest_depth_snapshots_decode_as_partial_depth(name: str, ids: list[int] | None) -> None:
    events = [Decoder().decode(line) for line in lines(name)]
    assert all(type(e) is PartialDepth for e in events)
    if ids is not None:
        assert [e.last_update_id for e in events] == ids  # type: ignore[union-attr]
    rest = Decoder().decode(read("rest_depth_snapshot.json"))
    assert rest == PartialDepth(1027024, [["4.00000000", "431.00000000"]],
                                [["4.00000200", "12.00000000"]])


def test_control_messages() -> None:
    control = json.loads(read("control_messages.json"))
    decoder = Decoder(["btcusdt@trade"])
    for title, example in control.items():
        if title == "error_message_templates":
            continue
        reply = example["response"]
        event = decoder.decode(json.dumps(reply).encode())
        assert event == ControlResponse(reply["id"], reply["result"]), title
    assert decoder.decode(b'{"result":["btcusdt@aggTrade"],"id":3}') == ControlResponse(
        3, ["btcusdt@aggTrade"]
    )


def test_control_error_templates() -> None:
    control = json.loads(read("control_messages.json"))
    decoder = Decoder()
    for template in control["error_message_templates"]:
        text = template["template"].replace("%s", "7")
        event = decoder.decode(text.encode())
        assert isinstance(event, ControlError), text
        assert event.code == template["code"]
        assert event.msg == json.loads(text)["msg"]
        assert event.id == (7 if '"id"' in template["template"] else None)


def test_futures_examples() -> None:
    examples = json.loads(read("futures_usdm_examples.json"))
    decoder = Decoder()
    (diff_title, diff), (partial_title, partial), (agg_title, agg) = examples.items()
    assert "diff" in diff_title and "partial" in partial_title and "aggTrade" in agg_title

    event = decoder.decode_object(diff, "btcusdt@depth")
    check(event, DepthUpdate, {"first_update_id": 157, "final_update_id": 160,
                               "prev_final_update_id": 149, "transaction_time": 123456788})

    event = decoder.decode(json.dumps({"stream": "btcusdt@depth5", "data": partial}).encode())
    check(event, DepthUpdate, {"prev_final_update_id": 390497794, "stream": "btcusdt@depth5"})
    assert isinstance(event, DepthUpdate)
    assert event.bids[0] == ["7403.89", "0.002"] and len(event.asks) == 5

    event = decoder.decode(json.dumps(agg).encode())
    check(event, AggTrade, {"agg_trade_id": 5933014, "quantity": "100",
                            "trade_time": 123456785, "buyer_is_maker": True})


def test_no_sample_is_unknown() -> None:
    decoder = Decoder()
    payloads = [read(name) for name, *_ in DOCUMENTED]
    for name in ("combined.jsonl", "recorded_cryptofeed_spot.jsonl",
                 "recorded_cryptofeed_usdm_futures.jsonl"):
        payloads += lines(name)
    for payload in payloads:
        event = decoder.decode(payload)
        assert not isinstance(event, UnknownEvent), payload[:100]
        assert event == decoder.decode_object(json.loads(payload))
        assert attrs.has(type(event))
