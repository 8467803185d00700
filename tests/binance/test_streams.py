"""Tests for trio_feed.binance._streams: stream names and URLs."""

from __future__ import annotations

import pytest

from trio_feed import InvalidStreamName
from trio_feed.binance import (
    DEFAULT_BASE_URL,
    KINDS,
    Stream,
    combined_url,
    parse_stream,
    raw_url,
)

VALID = [
    # name, kind, symbol, interval, levels, timezone
    ("btcusdt@trade", "trade", "btcusdt", None, None, None),
    ("btcusdt@aggTrade", "aggTrade", "btcusdt", None, None, None),
    ("bnbbtc@blockTrade", "blockTrade", "bnbbtc", None, None, None),
    ("btcusdt@kline_1s", "kline", "btcusdt", "1s", None, None),
    ("btcusdt@kline_1m", "kline", "btcusdt", "1m", None, None),
    ("btcusdt@kline_1M", "kline", "btcusdt", "1M", None, None),
    ("btcusdt@kline_1m@+08:00", "kline", "btcusdt", "1m", None, "+08:00"),
    ("btcusdt@miniTicker", "miniTicker", "btcusdt", None, None, None),
    ("!miniTicker@arr", "miniTicker_arr", None, None, None, None),
    ("btcusdt@ticker", "ticker", "btcusdt", None, None, None),
    ("!ticker@arr", "ticker_arr", None, None, None, None),
    ("btcusdt@ticker_1h", "ticker_window", "btcusdt", "1h", None, None),
    ("btcusdt@ticker_4h", "ticker_window", "btcusdt", "4h", None, None),
    ("btcusdt@ticker_1d", "ticker_window", "btcusdt", "1d", None, None),
    ("!ticker_1h@arr", "ticker_window_arr", None, "1h", None, None),
    ("!ticker_1d@arr", "ticker_window_arr", None, "1d", None, None),
    ("btcusdt@avgPrice", "avgPrice", "btcusdt", None, None, None),
    ("btcusdt@bookTicker", "bookTicker", "btcusdt", None, None, None),
    ("btcusdt@depth5", "depth_partial", "btcusdt", None, 5, None),
    ("btcusdt@depth10", "depth_partial", "btcusdt", None, 10, None),
    ("btcusdt@depth20@100ms", "depth_partial", "btcusdt", "100ms", 20, None),
    ("btcusdt@depth", "depth", "btcusdt", None, None, None),
    ("btcusdt@depth@100ms", "depth", "btcusdt", "100ms", None, None),
    ("bazusd@referencePrice", "referencePrice", "bazusd", None, None, None),
    ("!serverShutdown", "serverShutdown", None, None, None, None),
    ("币安usdt@trade", "trade", "币安usdt", None, None, None),
]


@pytest.mark.parametrize(("name", "kind", "symbol", "interval", "levels", "timezone"), VALID)
def test_valid_names(
    name: str,
    kind: str,
    symbol: str | None,
    interval: str | None,
    levels: int | None,
    timezone: str | None,
) -> None:
    stream = parse_stream(name)
    assert stream == Stream(name, kind, symbol, interval, levels, timezone)
    assert str(stream) == name
    assert stream.is_array == name.endswith("@arr")
    assert parse_stream(stream) is stream


def test_every_kind_has_a_valid_name() -> None:
    """Every spot kind has a name here; test_usdm.py covers the USD-M ones and the union."""
    spot = {kind for _, kind, *_ in VALID}
    assert spot <= set(KINDS)


INVALID = [
    "btcusdt",  # no @
    "@trade",  # empty symbol
    "BTCUSDT@trade",  # uppercase symbol
    "btc usdt@trade",
    "btc/usdt@trade",
    "btcusdt@trades",
    "btcusdt@trade@100ms",
    "btcusdt@trade@",
    "btcusdt@kline_2m",
    "btcusdt@kline",
    "btcusdt@kline_1m@+09:00",
    "btcusdt@ticker_2h",
    "btcusdt@depth4",
    "btcusdt@depth05",  # only the exact texts 5, 10 and 20
    "btcusdt@depth\u0665",  # a non-ASCII digit five
    "btcusdt@depthx",
    "btcusdt@depth@500ms",
    "btcusdt@depth5@100ms@x",
    "!ticker_2h@arr",
    "!ticker_1h",
    "!bookTicker",  # removed 2022-12
    "!nothing@arr",
    "",
]


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidStreamName):
        parse_stream(name)


def test_invalid_name_is_a_value_error_with_a_hint() -> None:
    with pytest.raises(ValueError, match="'btcusdt'"):
        parse_stream("BTCUSDT@trade")
    with pytest.raises(InvalidStreamName, match="per symbol"):
        parse_stream("!bookTicker")


def test_non_string_name() -> None:
    with pytest.raises(InvalidStreamName, match="must be a str"):
        parse_stream(42)  # type: ignore[arg-type]


def test_raw_url() -> None:
    assert raw_url("btcusdt@trade") == "wss://stream.binance.com:9443/ws/btcusdt@trade"
    assert raw_url(parse_stream("!miniTicker@arr")) == f"{DEFAULT_BASE_URL}/ws/!miniTicker@arr"
    assert (
        raw_url("btcusdt@depth@100ms", "wss://data-stream.binance.vision:443/")
        == "wss://data-stream.binance.vision:443/ws/btcusdt@depth@100ms"
    )


def test_plus_is_percent_encoded() -> None:
    assert raw_url("bnbbtc@kline_1m@+08:00").endswith("/ws/bnbbtc@kline_1m@%2B08:00")
    url = combined_url(["bnbbtc@kline_1m@+08:00", "btcusdt@trade"])
    assert url == (
        "wss://stream.binance.com:9443/stream?streams=bnbbtc@kline_1m@%2B08:00/btcusdt@trade"
    )
    assert "+" not in url


def test_combined_url() -> None:
    assert (
        combined_url(["btcusdt@trade", "ethusdt@depth@100ms", "!miniTicker@arr"],
                     "wss://stream.testnet.binance.vision")
        == "wss://stream.testnet.binance.vision/stream?streams="
        "btcusdt@trade/ethusdt@depth@100ms/!miniTicker@arr"
    )


def test_non_ascii_symbol_is_utf8_percent_encoded() -> None:
    assert raw_url("币安usdt@trade").endswith("/ws/%E5%B8%81%E5%AE%89usdt@trade")


def test_url_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        combined_url([])
    with pytest.raises(ValueError, match="ws://"):
        raw_url("btcusdt@trade", "https://stream.binance.com")
    with pytest.raises(InvalidStreamName):
        combined_url(["btcusdt@trade", "BTCUSDT@depth"])
