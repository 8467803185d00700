"""Tests for trio_feed.binance._events: the event classes and their one-line rendering."""

from __future__ import annotations

import typing
from decimal import Decimal
from typing import Any

import attrs
import pytest

from trio_feed import SubscriptionError
from trio_feed.binance import (
    AggTrade,
    AvgPrice,
    BlockTrade,
    BookTicker,
    ControlError,
    ControlResponse,
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
    _events,
    format_event,
)

EVENT_CLASSES: tuple[type, ...] = typing.get_args(Event)

NUMBER = str | Decimal
LEVELS = list[list[NUMBER]]


def _trade(**changes: Any) -> Trade:
    trade = Trade(1, "BTCUSDT", 12345, "25000.10", "0.001", 2, False, "btcusdt@trade")
    return attrs.evolve(trade, **changes)


def test_event_union_lists_every_class() -> None:
    defined = {
        obj for obj in vars(_events).values()
        if isinstance(obj, type) and attrs.has(obj) and obj.__module__ == _events.__name__
    }
    assert set(EVENT_CLASSES) == defined
    assert len(EVENT_CLASSES) == 29


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_slotted_mutable_attrs_with_stream_last(cls: type) -> None:
    assert attrs.has(cls)
    assert "__slots__" in cls.__dict__
    fields = attrs.fields(cls)
    assert fields[-1].name == "stream"
    assert fields[-1].default is None
    assert cls.__setattr__ is object.__setattr__  # not frozen: see the module docstring


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_decimal_field_lists_match_annotations(cls: type) -> None:
    """The decoder converts exactly the fields annotated as prices, quantities or levels."""
    hints = typing.get_type_hints(cls)
    numbers = {
        name for name, hint in hints.items()
        if hint in (NUMBER, NUMBER | None) and name in attrs.fields_dict(cls)
    }
    levels = {name for name, hint in hints.items() if hint == LEVELS}
    assert set(cls._decimal_fields) == numbers  # type: ignore[attr-defined]
    assert set(getattr(cls, "_level_fields", ())) == levels


def test_no_instance_dict() -> None:
    trade = _trade()
    with pytest.raises(AttributeError):
        trade.unexpected = 1  # type: ignore[attr-defined]


def test_equality_and_repr() -> None:
    assert _trade() == _trade()
    assert _trade() != _trade(price="25000.11")
    assert "trade_id=12345" in repr(_trade())


def test_trade_line() -> None:
    assert format_event(_trade()) == "btcusdt@trade  trade #12345  BUY 0.001 @ 25000.10"
    assert _trade().describe() == format_event(_trade())
    assert format_event(_trade(buyer_is_maker=True, stream=None)) == (
        "trade #12345  SELL 0.001 @ 25000.10"
    )


LINES: list[tuple[Event, str]] = [
    (
        AggTrade(1, "BNBBTC", 7, "0.001", "100", 100, 105, 2, True, stream="bnbbtc@aggTrade"),
        "bnbbtc@aggTrade  aggTrade #7 (trades 100-105)  SELL 100 @ 0.001",
    ),
    (
        BlockTrade(1, "BNBBTC", 582, "0.052", "5838", 2, False),
        "blockTrade #582  BUY 5838 @ 0.052",
    ),
    (
        Kline(1, "BNBBTC", "1m", 0, 59999, 100, 200, "1", "3", "0.5", "2", "1000", 100,
              True, "1.0", "500", "0.5", "bnbbtc@kline_1m"),
        "bnbbtc@kline_1m  kline 1m BNBBTC  O 1 H 3 L 0.5 C 2  vol 1000  (closed)",
    ),
    (
        MiniTicker(1, "BNBBTC", "0.0025", "0.0010", "0.0025", "0.0010", "10000", "18"),
        "miniTicker BNBBTC  last 0.0025  O 0.0010 H 0.0025 L 0.0010  vol 10000",
    ),
    (
        Ticker(1, "BNBBTC", "0.0015", "250.00", "0.0018", "0.0009", "0.0025", "10",
               "0.0024", "10", "0.0026", "100", "0.0010", "0.0025", "0.0010", "10000",
               "18", 0, 86400000, 0, 18150, 18151),
        "ticker BNBBTC  last 0.0025  change 0.0015 (250.00%)  bid 10 @ 0.0024  ask 100 @ 0.0026",
    ),
    (
        RollingWindowTicker("4h", 1, "BNBBTC", "0.0015", "250.00", "0.0010", "0.0025",
                            "0.0010", "0.0025", "0.0018", "10000", "18", 0, 1, 0, 18150, 18151),
        "4h ticker BNBBTC  last 0.0025  change 0.0015 (250.00%)  vol 10000",
    ),
    (AvgPrice(1, "BTCUSDT", "5m", "25776.86", 2), "avgPrice BTCUSDT  25776.86 over 5m"),
    (
        BookTicker(400900217, "BNBUSDT", "25.35", "31.21", "25.36", "40.66"),
        "bookTicker BNBUSDT  bid 31.21 @ 25.35  ask 40.66 @ 25.36  #400900217",
    ),
    (
        PartialDepth(160, [["0.0024", "10"], ["0.0023", "1"]], [], "BNBBTC", "bnbbtc@depth5"),
        "bnbbtc@depth5  depth BNBBTC #160  2 bids (best 10 @ 0.0024)  0 asks (best none)",
    ),
    (
        DepthUpdate(1, "BNBBTC", 157, 160, [["0.0024", "10"]], []),
        "depthUpdate BNBBTC #157-160  1 bids  0 asks",
    ),
    (ReferencePrice("BAZUSD", None, 1), "referencePrice BAZUSD  none"),
    (ReferencePrice("BAZUSD", "1.00", 1), "referencePrice BAZUSD  1.00"),
    (
        ServerShutdown(1770123456789, "!serverShutdown"),
        "!serverShutdown  serverShutdown at 1770123456789: reconnect now",
    ),
    (ControlResponse(3, ["btcusdt@trade"]), "control response id=3 result=['btcusdt@trade']"),
    (ControlError(0, "Unknown property", "a1"), "control error 0: Unknown property (id='a1')"),
    (UnknownEvent({"e": "markPriceUpdate"}), "unknown event (e='markPriceUpdate')  "
                                             "{'e': 'markPriceUpdate'}"),
    (UnknownEvent([1, 2]), "unknown event (array of 2)  [1, 2]"),
]


@pytest.mark.parametrize(("event", "line"), LINES, ids=lambda x: type(x).__name__)
def test_lines(event: Event, line: str) -> None:
    assert format_event(event) == line
    assert "\n" not in line


def test_array_lines_are_short() -> None:
    mini = [
        MiniTicker(1, f"SYM{i}", "1", "1", "1", "1", "1", "1", "!miniTicker@arr")
        for i in range(40)
    ]
    line = format_event(MiniTickerArray(mini, "!miniTicker@arr"))
    assert line == "!miniTicker@arr  40 miniTickers: SYM0, SYM1, SYM2, SYM3, SYM4, … (+35)"
    assert format_event(TickerArray([])) == "0 tickers: "
    assert format_event(RollingWindowTickerArray("1d", [], "!ticker_1d@arr")) == (
        "!ticker_1d@arr  0 1d tickers: "
    )


def test_unknown_line_is_truncated() -> None:
    line = format_event(UnknownEvent({"x": "y" * 500}, "s@x"))
    assert line.startswith("s@x  unknown event (keys ['x'])  {'x': 'yyy")
    assert line.endswith("...")
    assert len(line) < 150


def test_control_error_to_exception() -> None:
    exc = ControlError(2, "Invalid request: too many parameters", 7).to_exception()
    assert isinstance(exc, SubscriptionError)
    assert (exc.code, exc.msg, exc.request_id) == (2, "Invalid request: too many parameters", 7)


def test_decimal_values_render_exactly_in_plain_notation() -> None:
    trade = _trade(price=Decimal("25000.10000000"), quantity=Decimal("0.00000001"))
    assert str(trade.quantity) == "1E-8"
    assert format_event(trade).endswith("BUY 0.00000001 @ 25000.10000000")
    depth = DepthUpdate(1, "X", 1, 2, [[Decimal("1.5"), Decimal("0.00000000")]], [])
    assert format_event(depth) == "depthUpdate X #1-2  1 bids  0 asks"
    book = PartialDepth(1, [[Decimal("1.50"), Decimal("0E-8")]], [])
    assert "best 0.00000000 @ 1.50" in format_event(book)
    assert format_event(ReferencePrice("X", Decimal("1E+1"), 1)) == "referencePrice X  10"
