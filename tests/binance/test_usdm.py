"""USD-M futures as a market of its own: names, routes, limits and typed events.

The documented examples are in ``STREAMS.md`` section 8 and
``samples/futures_usdm_examples.json``; the recorded capture is
``samples/recorded_cryptofeed_usdm_futures.jsonl``.  The other payloads below
are the response examples of the USD-M "Websocket Market Streams" pages.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
import pytest

from trio_feed import DecodeError, InvalidStreamName
from trio_feed.binance import (
    AggTrade,
    AllBookTicker,
    AssetIndex,
    AssetIndexArray,
    BookTicker,
    CompositeIndex,
    ContinuousKline,
    ContractInfo,
    Decoder,
    DepthUpdate,
    ForceOrder,
    FuturesTicker,
    MarkPrice,
    MarkPriceArray,
    MiniTickerArray,
    TickerArray,
    UnknownEvent,
    parse_stream,
)
from trio_feed.binance._limits import SPOT, USDM_FUTURES, venue_named
from trio_feed.binance._streams import KINDS, Stream
from trio_feed.binance._urls import envelope, parse_stream_url, routed_url

from ..shared_data import SAMPLES
from .test_streams import VALID as SPOT_VALID

#: (name, kind, symbol, interval, levels)
USDM_VALID = [
    ("btcusdt@aggTrade", "aggTrade", "btcusdt", None, None),
    ("btcusdt@markPrice", "markPrice", "btcusdt", None, None),
    ("btcusdt@markPrice@1s", "markPrice", "btcusdt", "1s", None),
    ("!markPrice@arr", "markPrice_arr", None, None, None),
    ("!markPrice@arr@1s", "markPrice_arr", None, "1s", None),
    ("btcusdt@kline_1m", "kline", "btcusdt", "1m", None),
    ("btcusdt_perpetual@continuousKline_1m", "continuousKline", "btcusdt", "1m", None),
    ("btcusdt@miniTicker", "miniTicker", "btcusdt", None, None),
    ("!miniTicker@arr", "miniTicker_arr", None, None, None),
    ("btcusdt@ticker", "ticker", "btcusdt", None, None),
    ("!ticker@arr", "ticker_arr", None, None, None),
    ("btcusdt@bookTicker", "bookTicker", "btcusdt", None, None),
    ("!bookTicker", "bookTicker_all", None, None, None),
    ("btcusdt@forceOrder", "forceOrder", "btcusdt", None, None),
    ("!forceOrder@arr", "forceOrder_all", None, None, None),
    ("btcusdt@depth5", "depth_partial", "btcusdt", None, 5),
    ("btcusdt@depth10@500ms", "depth_partial", "btcusdt", "500ms", 10),
    ("btcusdt@depth20@100ms", "depth_partial", "btcusdt", "100ms", 20),
    ("btcusdt@depth", "depth", "btcusdt", None, None),
    ("btcusdt@depth@500ms", "depth", "btcusdt", "500ms", None),
    ("btcusdt@depth@100ms", "depth", "btcusdt", "100ms", None),
    ("btcusdt@rpiDepth@500ms", "rpiDepth", "btcusdt", "500ms", None),
    ("defiusdt@compositeIndex", "compositeIndex", "defiusdt", None, None),
    ("!contractInfo", "contractInfo", None, None, None),
    ("adausd@assetIndex", "assetIndex", "adausd", None, None),
    ("!assetIndex@arr", "assetIndex_arr", None, None, None),
    ("!serverShutdown", "serverShutdown", None, None, None),
]

PUBLIC = {"depth", "depth_partial", "bookTicker", "bookTicker_all", "rpiDepth"}


@pytest.mark.parametrize(("name", "kind", "symbol", "interval", "levels"), USDM_VALID)
def test_usdm_names(name: str, kind: str, symbol: str | None, interval: str | None,
                    levels: int | None) -> None:
    stream = parse_stream(name, "usdm")
    assert (stream.name, stream.kind, stream.symbol, stream.interval, stream.levels) == (
        name, kind, symbol, interval, levels)
    assert stream.market == "usdm"
    assert stream.is_array == (kind.endswith("_arr"))


def test_every_kind_has_a_name_on_some_market() -> None:
    spot = {kind for _, kind, *_ in SPOT_VALID}
    usdm = {kind for _, kind, *_ in USDM_VALID}
    assert spot | usdm == set(KINDS)


def test_continuous_kline_keeps_its_contract_type() -> None:
    stream = parse_stream("ethusdt_next_quarter@continuousKline_4h", "usdm")
    assert (stream.symbol, stream.contract_type) == ("ethusdt", "next_quarter")


@pytest.mark.parametrize(("name", "hint"), [
    ("btcusdt@trade", "market='spot'"),  # spot only
    ("btcusdt@avgPrice", "market='spot'"),
    ("btcusdt@kline_1s", "market='spot'"),
    ("btcusdt@depth@1000ms", "market='spot'"),
    ("btcusdt@markPrice@3s", "every 1 s"),
    ("btcusdt@rpiDepth", "rpiDepth@500ms"),
    ("btcusdt_weekly@continuousKline_1m", "perpetual"),
    ("!forceOrder", "all-market"),
])
def test_usdm_refuses_what_it_does_not_document(name: str, hint: str) -> None:
    with pytest.raises(InvalidStreamName, match=hint):
        parse_stream(name, "usdm")


@pytest.mark.parametrize("name", [
    "btcusdt@depth@500ms", "!bookTicker", "btcusdt@markPrice", "btcusdt@markPrice@1s",
    "!markPrice@arr", "btcusdt@forceOrder", "!forceOrder@arr",
    "btcusdt_perpetual@continuousKline_1m", "defiusdt@compositeIndex", "btcusdt@rpiDepth@500ms",
])
def test_spot_refuses_futures_names_and_names_the_market(name: str) -> None:
    with pytest.raises(InvalidStreamName, match="market='usdm'"):
        parse_stream(name)


def test_routes_are_the_venues() -> None:
    for name, kind, *_ in USDM_VALID:
        expected = "/public" if kind in PUBLIC else "/market"
        assert USDM_FUTURES.route(kind) == expected, name
        assert USDM_FUTURES.serves(expected, kind)
        other = "/market" if expected == "/public" else "/public"
        assert not USDM_FUTURES.serves(other, kind)
        # An unrouted (legacy) connection receives only /public data.
        assert USDM_FUTURES.serves("", kind) == (expected == "/public")
    assert SPOT.route("trade") == "" and SPOT.serves("", "trade")
    assert USDM_FUTURES.route_names == ("/public", "/market")
    assert venue_named("usdm") is USDM_FUTURES and venue_named("spot") is SPOT
    assert venue_named("usdm_futures") is USDM_FUTURES
    with pytest.raises(ValueError, match="unknown market"):
        venue_named("coinm")


def test_usdm_timings_and_limits() -> None:
    assert USDM_FUTURES.client_messages_per_second == 10
    assert USDM_FUTURES.streams_per_connection == 1024
    assert (USDM_FUTURES.ping_interval, USDM_FUTURES.pong_timeout) == (180.0, 600.0)
    # A quiet connection outlives one server ping interval.
    assert USDM_FUTURES.quiet_after > USDM_FUTURES.ping_interval
    assert SPOT.quiet_after > SPOT.ping_interval


def test_routed_urls_parse_back() -> None:
    base = routed_url("wss://fstream.binance.com", "/market")
    assert base == "wss://fstream.binance.com/market"
    parsed = parse_stream_url("/market/stream?streams=btcusdt@markPrice")
    assert parsed is not None
    assert (parsed.route, parsed.combined, parsed.names) == ("/market", True,
                                                            ("btcusdt@markPrice",))
    raw = parse_stream_url("/public/ws/btcusdt@depth")
    assert raw is not None and (raw.route, raw.combined) == ("/public", False)
    legacy = parse_stream_url("/ws/btcusdt@depth")
    assert legacy is not None and legacy.route == ""
    with pytest.raises(ValueError, match="route"):
        routed_url("wss://fstream.binance.com", "/nowhere")


# -- decoding -------------------------------------------------------------------------

MARK_PRICE = {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT",
              "p": "11794.15000000", "i": "11784.62659091", "P": "11784.25641265",
              "r": "0.00038167", "T": 1562306400000}
FORCE_ORDER = {"e": "forceOrder", "E": 1568014460893, "o": {
    "s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9910",
    "ap": "9910", "X": "FILLED", "l": "0.014", "z": "0.014", "T": 1568014460893}}
CONTINUOUS_KLINE = {"e": "continuous_kline", "E": 1607443058651, "ps": "BTCUSDT",
                    "ct": "PERPETUAL", "k": {
                        "t": 1607443020000, "T": 1607443079999, "i": "1m",
                        "f": 116467658886, "L": 116468012423, "o": "18787.00",
                        "c": "18804.04", "h": "18804.04", "l": "18786.54", "v": "197.664",
                        "n": 543, "x": False, "q": "3715253.19494", "V": "184.769",
                        "Q": "3472925.84746", "B": "0"}}
COMPOSITE = {"e": "compositeIndex", "E": 1602310596000, "s": "DEFIUSDT", "p": "554.41604065",
             "C": "baseAsset", "c": [{"b": "BAL", "q": "USDT", "w": "1.04884844",
                                      "W": "0.01457800", "i": "24.33521021"}]}
CONTRACT_INFO = {"e": "contractInfo", "E": 1669356423908, "s": "IOTAUSDT", "ps": "IOTAUSDT",
                 "ct": "PERPETUAL", "dt": 4133404800000, "ot": 1569398400000, "cs": "TRADING",
                 "bks": [{"bs": 1, "bnf": 0, "bnc": 5000, "mmr": 0.01, "cf": 0, "mi": 21,
                          "ma": 50}]}
ASSET_INDEX = {"e": "assetIndexUpdate", "E": 1686749230000, "s": "ADAUSD", "i": "0.27462452",
               "b": "0.10000000", "a": "0.10000000", "B": "0.24716207", "A": "0.30208698",
               "q": "0.05000000", "g": "0.05000000", "Q": "0.26089330", "G": "0.28835575"}
TICKER = {"e": "24hrTicker", "E": 123456789, "s": "BTCUSDT", "p": "0.0015", "P": "250.00",
          "w": "0.0018", "c": "0.0025", "Q": "10", "o": "0.0010", "h": "0.0025",
          "l": "0.0010", "v": "10000", "q": "18", "O": 0, "C": 86400000, "F": 0,
          "L": 18150, "n": 18151}
MINI = {"e": "24hrMiniTicker", "E": 123456789, "s": "BTCUSDT", "c": "0.0025", "o": "0.0010",
        "h": "0.0025", "l": "0.0010", "v": "10000", "q": "18"}
BOOK_TICKER = {"e": "bookTicker", "u": 400900217, "E": 1568014460893, "T": 1568014460891,
               "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000",
               "A": "40.66000000"}


def _decode(stream: str, data: Any, **options: Any) -> Any:
    return Decoder([stream], market="usdm", **options).decode(envelope(stream, orjson.dumps(data)))


def test_every_usdm_payload_has_a_type() -> None:
    cases: list[tuple[str, Any, Any]] = [
        ("btcusdt@markPrice", MARK_PRICE, MarkPrice),
        ("!markPrice@arr", [MARK_PRICE, MARK_PRICE], MarkPriceArray),
        ("btcusdt@forceOrder", FORCE_ORDER, ForceOrder),
        ("!forceOrder@arr", FORCE_ORDER, ForceOrder),
        ("btcusdt_perpetual@continuousKline_1m", CONTINUOUS_KLINE, ContinuousKline),
        ("defiusdt@compositeIndex", COMPOSITE, CompositeIndex),
        ("!contractInfo", CONTRACT_INFO, ContractInfo),
        ("adausd@assetIndex", ASSET_INDEX, AssetIndex),
        ("!assetIndex@arr", [ASSET_INDEX], AssetIndexArray),
        ("btcusdt@ticker", TICKER, FuturesTicker),
        ("!ticker@arr", [TICKER], TickerArray),
        ("!miniTicker@arr", [MINI], MiniTickerArray),
        ("bnbusdt@bookTicker", BOOK_TICKER, BookTicker),
        ("!bookTicker", BOOK_TICKER, AllBookTicker),
    ]
    for stream, data, cls in cases:
        event: Any = _decode(stream, data)
        assert type(event) is cls, stream
        assert event.stream == stream
        assert event.describe().startswith(stream)


def test_usdm_fields_land_where_documented() -> None:
    mark = _decode("btcusdt@markPrice", MARK_PRICE)
    assert (mark.mark_price, mark.index_price, mark.funding_rate, mark.next_funding_time) == (
        "11794.15000000", "11784.62659091", "0.00038167", 1562306400000)
    order = _decode("btcusdt@forceOrder", FORCE_ORDER)
    assert (order.symbol, order.side, order.quantity, order.average_price, order.trade_time) == (
        "BTCUSDT", "SELL", "0.014", "9910", 1568014460893)
    kline = _decode("btcusdt_perpetual@continuousKline_1m", CONTINUOUS_KLINE)
    assert (kline.pair, kline.contract_type, kline.interval, kline.close, kline.is_closed) == (
        "BTCUSDT", "PERPETUAL", "1m", "18804.04", False)
    info = _decode("!contractInfo", CONTRACT_INFO)
    assert info.status == "TRADING" and info.brackets is not None
    book = _decode("bnbusdt@bookTicker", BOOK_TICKER)
    assert (book.event_time, book.transaction_time) == (1568014460893, 1568014460891)


def test_delivery_contract_mark_price_has_no_funding_rate() -> None:
    mark = _decode("btcusdt_250627@markPrice", {**MARK_PRICE, "r": "", "T": 0}, decimals=True)
    assert mark.funding_rate is None and mark.mark_price == Decimal("11794.15000000")


def test_spot_decoder_keeps_futures_only_kinds_unknown() -> None:
    event = Decoder().decode(envelope("btcusdt@markPrice", orjson.dumps(MARK_PRICE)))
    assert isinstance(event, UnknownEvent)


@pytest.mark.shared
def test_documented_futures_examples() -> None:
    examples = json.loads((SAMPLES / "futures_usdm_examples.json").read_text())
    diff, partial, agg = examples.values()
    event = _decode("btcusdt@depth@500ms", diff)
    assert isinstance(event, DepthUpdate)
    assert (event.first_update_id, event.final_update_id, event.prev_final_update_id,
            event.transaction_time) == (157, 160, 149, 123456788)
    assert event.bids == [["0.0024", "10"]]
    event = _decode("btcusdt@depth5@100ms", partial)
    assert isinstance(event, DepthUpdate) and len(event.bids) == 5
    assert event.prev_final_update_id == 390497794
    event = _decode("btcusdt@rpiDepth@500ms", diff)
    assert isinstance(event, DepthUpdate) and event.stream == "btcusdt@rpiDepth@500ms"
    event = _decode("btcusdt@aggTrade", agg)
    assert isinstance(event, AggTrade)
    assert (event.price, event.quantity, event.quantity_excluding_rpi) == ("0.001", "100", "100")
    event = _decode("btcusdt@aggTrade", agg, decimals=True)
    assert event.quantity_excluding_rpi == Decimal("100")
    # A spot decoder has no nq: the same payload keeps it None.
    spot = Decoder().decode(envelope("btcusdt@aggTrade", orjson.dumps(agg)))
    assert isinstance(spot, AggTrade) and spot.quantity_excluding_rpi is None


@pytest.mark.shared
def test_recorded_futures_capture_is_all_typed() -> None:
    lines = (SAMPLES / "recorded_cryptofeed_usdm_futures.jsonl").read_bytes().splitlines()
    names = sorted({orjson.loads(line)["stream"] for line in lines})
    decoder = Decoder(names, market="usdm")
    kinds: dict[type, int] = {}
    last_u: dict[str, int] = {}
    for line in lines:
        event = decoder.decode(line)
        assert not isinstance(event, UnknownEvent), line[:80]
        kinds[type(event)] = kinds.get(type(event), 0) + 1
        if isinstance(event, DepthUpdate):
            assert event.prev_final_update_id is not None and event.stream is not None
            if event.stream in last_u:
                assert event.prev_final_update_id == last_u[event.stream]
            last_u[event.stream] = event.final_update_id
        if isinstance(event, AggTrade):
            assert event.quantity_excluding_rpi is None  # recorded before nq existed
    assert {cls.__name__ for cls in kinds} == {"DepthUpdate", "BookTicker", "AggTrade", "Kline"}
    assert sum(kinds.values()) == 400
    assert all(parse_stream(n, "usdm").market == "usdm" for n in names)
    assert isinstance(parse_stream(names[0], "usdm"), Stream)


# -- strictness, every market ------------------------------------------------------------

TRADE = {"e": "trade", "E": 1, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100",
         "T": 2, "m": True, "M": True}


@pytest.mark.parametrize("decimals", [False, True])
@pytest.mark.parametrize(("payload", "field"), [
    ({**TRADE, "p": 1e-8}, "price"),
    ({**TRADE, "q": 100}, "quantity"),
    ({**TRADE, "p": None}, "price"),
    ({"e": "depthUpdate", "E": 1, "s": "X", "U": 1, "u": 2, "b": [[1e-8, "1"]], "a": []},
     "levels"),
    ({"e": "depthUpdate", "E": 1, "s": "X", "U": 1, "u": 2, "b": [], "a": [["1", None]]},
     "levels"),
    ({"u": 1, "s": "X", "b": 1.5, "B": "1", "a": "2", "A": "1"}, "best_bid_price"),
    ({"e": "kline", "E": 1, "s": "X", "k": {
        "t": 0, "T": 1, "s": "X", "i": "1m", "f": 1, "L": 2, "o": 1.0, "c": "1", "h": "1",
        "l": "1", "v": "1", "n": 1, "x": False, "q": "1", "V": "1", "Q": "1", "B": "0"}},
     "open"),
    ({"e": "24hrMiniTicker", "E": 1, "s": "X", "c": None, "o": "1", "h": "1", "l": "1",
      "v": "1", "q": "1"}, "last_price"),
    # The ids the continuity filter counts with must be integers.
    ({**TRADE, "t": None}, "trade_id"),
    ({"e": "aggTrade", "E": 1, "s": "X", "a": "5", "p": "1", "q": "1", "f": 1, "l": 1,
      "T": 1, "m": True}, "agg_trade_id"),
    ({"e": "depthUpdate", "E": 1, "s": "X", "U": 1, "u": None, "b": [], "a": []},
     "final_update_id"),
    ({"u": None, "s": "X", "b": "1", "B": "1", "a": "2", "A": "1"}, "update_id"),
])
def test_a_number_or_null_where_binance_sends_a_string_is_refused(
        payload: dict[str, Any], field: str, decimals: bool) -> None:
    stream = "x@bookTicker" if "e" not in payload else "x@trade"
    with pytest.raises(DecodeError, match=field):
        Decoder(decimals=decimals).decode(envelope(stream, orjson.dumps(payload)))


@pytest.mark.parametrize("decimals", [False, True])
def test_null_in_a_required_field_of_a_usdm_event_is_refused(decimals: bool) -> None:
    with pytest.raises(DecodeError, match="next_funding_time"):
        _decode("btcusdt@markPrice", {**MARK_PRICE, "T": None}, decimals=decimals)
    with pytest.raises(DecodeError, match="mark_price"):
        _decode("btcusdt@markPrice", {**MARK_PRICE, "p": 11794.15}, decimals=decimals)
    with pytest.raises(DecodeError, match="trade_count"):
        _decode("btcusdt@ticker", {**TICKER, "n": None}, decimals=decimals)


def test_optional_fields_may_still_be_null() -> None:
    ref = {"e": "referencePrice", "s": "BAZUSD", "r": None, "t": 1}
    for decimals in (False, True):
        event = Decoder(decimals=decimals).decode(orjson.dumps(ref))
        assert event.reference_price is None  # type: ignore[union-attr]
