"""Tests for trio_feed.binance._limits and _urls: each Binance rule written once, and read back.

The one-copy rule is checked on the source: no module outside ``binance/``
spells a Binance host, a REST depth path or a list of kline intervals, so a
changed number cannot be updated in one place and forgotten in another.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import trio_feed
from trio_feed.binance import combined_url, raw_url
from trio_feed.binance._limits import SPOT, USDM_FUTURES, venue_for
from trio_feed.binance._streams import KLINE_INTERVALS, TICKER_WINDOWS, interval_ms
from trio_feed.binance._urls import (
    ENVELOPE_HEAD,
    StreamUrl,
    envelope,
    parse_stream_url,
    raw_streams_url,
)
from trio_feed.books._books import depth_weight as books_depth_weight
from trio_feed.exchange import open_exchange
from trio_feed.exchange._rest import depth_weight as exchange_depth_weight
from trio_feed.feed import AttemptLimiter, open_feed
from trio_feed.feed._subscriptions import MAX_STREAMS_PER_CONNECTION

PACKAGE = Path(trio_feed.__file__).parent

# -- the records ------------------------------------------------------------------------


def test_spot_numbers() -> None:
    assert SPOT.base_url == "wss://stream.binance.com:9443"
    assert SPOT.streams_per_connection == 1024
    assert SPOT.client_messages_per_second == 5
    assert (SPOT.connection_attempts, SPOT.attempts_window) == (300, 300.0)
    assert (SPOT.ping_interval, SPOT.pong_timeout) == (20.0, 60.0)
    assert SPOT.connection_lifetime == 86_400.0
    assert (SPOT.rest_url, SPOT.snapshot_path) == ("https://api.binance.com", "/api/v3/depth")
    assert (SPOT.max_snapshot_limit, SPOT.weight_limit) == (5000, 6000)


def test_usdm_futures_numbers() -> None:
    assert USDM_FUTURES.base_url == "wss://fstream.binance.com"
    assert USDM_FUTURES.streams_per_connection == 1024
    assert USDM_FUTURES.client_messages_per_second == 10
    assert (USDM_FUTURES.ping_interval, USDM_FUTURES.pong_timeout) == (180.0, 600.0)
    assert USDM_FUTURES.snapshot_path == "/fapi/v1/depth"
    assert (USDM_FUTURES.max_snapshot_limit, USDM_FUTURES.weight_limit) == (1000, 2400)


def test_depth_weight_tables() -> None:
    limits = (1, 5, 50, 51, 100, 101, 500, 501, 1000, 1001, 5000, 9999)
    assert [SPOT.depth_weight(n) for n in limits] == [
        5, 5, 5, 5, 5, 25, 25, 50, 50, 250, 250, 250]
    assert [USDM_FUTURES.depth_weight(n) for n in limits] == [
        2, 2, 2, 5, 5, 10, 10, 20, 20, 20, 20, 20]
    with pytest.raises(ValueError):
        SPOT.depth_weight(0)


def test_venue_for_rules() -> None:
    assert venue_for("spot") is SPOT
    assert venue_for("usdm_futures") is USDM_FUTURES


# -- the readers use the records ----------------------------------------------------------


def test_consumers_read_the_records() -> None:
    for limit in (1, 100, 101, 500, 1000, 5000, 6000):
        assert exchange_depth_weight(limit) == SPOT.depth_weight(limit)
        assert books_depth_weight(limit) == SPOT.depth_weight(limit)
        assert books_depth_weight(limit, "usdm_futures") == USDM_FUTURES.depth_weight(limit)
    assert MAX_STREAMS_PER_CONNECTION == SPOT.streams_per_connection
    for market, venue in (("spot", SPOT), ("usdm", USDM_FUTURES)):
        exchange = open_exchange(market=market)._exchange  # type: ignore[attr-defined]
        assert (exchange.ping_interval, exchange.pong_timeout) == (venue.ping_interval,
                                                                   venue.pong_timeout)
        assert exchange.rest.venue is venue and exchange.rest.weight_limit == venue.weight_limit
    feed = inspect.signature(open_feed).parameters
    assert feed["rotate_after"].default < SPOT.connection_lifetime
    for market, venue in (("spot", SPOT), ("usdm", USDM_FUTURES)):
        options = open_feed(["btcusdt@aggTrade"], market=market).options
        # The token bucket lets burst + rate messages out in any one second.
        assert options.send_rate + options.send_burst == venue.client_messages_per_second
        assert options.streams_per_connection == venue.streams_per_connection
        assert options.base_url == venue.base_url
        assert options.quiet_after == venue.quiet_after
    assert AttemptLimiter().window == SPOT.attempts_window
    assert AttemptLimiter().max_attempts < (SPOT.connection_attempts or 0)


def _strings(tree: ast.AST) -> list[ast.Constant]:
    """Every string constant in ``tree`` that is not a docstring."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_binance_rule_is_spelled_outside_binance() -> None:
    forbidden = ("binance.com", "binance.vision", "/api/v3/depth", "/fapi/v1/depth")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "binance":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _strings(tree):
            if any(text in node.value for text in forbidden):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                texts = {i.value for i in items if isinstance(i, ast.Constant)}
                if len(texts & set(KLINE_INTERVALS)) >= 3:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: kline intervals")
    assert found == []


# -- intervals ------------------------------------------------------------------------------


def test_interval_lengths() -> None:
    assert [interval_ms(i) for i in ("1s", "1m", "15m", "2h", "12h", "1d", "3d")] == [
        1000, 60_000, 900_000, 7_200_000, 43_200_000, 86_400_000, 259_200_000]
    assert interval_ms("1w") is None and interval_ms("1M") is None
    assert set(TICKER_WINDOWS) <= set(KLINE_INTERVALS)
    with pytest.raises(ValueError):
        interval_ms("2d")


# -- URLs --------------------------------------------------------------------------------------


def test_parse_what_the_builders_build() -> None:
    names = ["btcusdt@trade", "btcusdt@kline_1m@+08:00", "!miniTicker@arr"]
    assert parse_stream_url(combined_url(names)) == StreamUrl(True, tuple(names))
    assert parse_stream_url(raw_streams_url(names)) == StreamUrl(False, tuple(names))
    assert parse_stream_url(raw_url(names[1])) == StreamUrl(False, (names[1],))
    assert raw_streams_url(names[:1]) == raw_url(names[0])


def test_parse_request_targets() -> None:
    assert parse_stream_url("/stream?streams=a@trade/b@trade&timeUnit=MICROSECOND") == \
        StreamUrl(True, ("a@trade", "b@trade"), "MICROSECOND")
    assert parse_stream_url("/stream") == StreamUrl(True, ())
    assert parse_stream_url("/ws/") == StreamUrl(False, ())
    # Empty names stay, so that the server can refuse them; a bare '+' in a query is a space.
    assert parse_stream_url("/ws/a@trade//b@trade").names == ("a@trade", "", "b@trade")
    assert parse_stream_url("/stream?streams=x@kline_1m@+08:00").names == ("x@kline_1m@ 08:00",)
    assert parse_stream_url("wss://stream.binance.com:9443") is None
    assert parse_stream_url("ws://host:1/api/v3/depth") is None


def test_envelope_shape() -> None:
    wrapped = envelope("btcusdt@trade", b'{"e":"trade"}')
    assert wrapped == b'{"stream":"btcusdt@trade","data":{"e":"trade"}}'
    assert wrapped.startswith(ENVELOPE_HEAD)
