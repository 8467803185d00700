"""The page walk's own checks: what makes a trade history page malformed."""

from __future__ import annotations

import orjson
import pytest

from trio_feed.binance import BackfilledAggTrade
from trio_feed.binance._history import parse_history_page
from trio_feed.rest._history import _rows


def test_rows_keep_the_range_in_order() -> None:
    body = orjson.dumps([{"a": i} for i in range(5, 15)])
    assert [r["a"] for r in _rows(body, "a", 7, 10)] == [7, 8, 9, 10]


@pytest.mark.parametrize("body", [b"not json", b'{"a": 1}', b'[{"a": "7"}]', b'[{"b": 7}]',
                                  b'[{"a": 8}, {"a": 7}]', b"[1]"])
def test_malformed_pages_are_value_errors(body: bytes) -> None:
    with pytest.raises(ValueError):
        _rows(body, "a", 7, 10)


def test_parse_history_page_builds_marked_events() -> None:
    rows = [{"a": 1, "p": "1.5", "q": "2", "f": 10, "l": 11, "T": 99, "m": True, "M": True}]
    event, = parse_history_page("aggTrade", rows, "BTCUSDT", "btcusdt@aggTrade", decimals=True)
    assert isinstance(event, BackfilledAggTrade) and event.backfilled
    assert (event.event_time, event.trade_time, event.agg_trade_id) == (99, 99, 1)
    assert str(event.price) == "1.5" and event.stream == "btcusdt@aggTrade"
    with pytest.raises(ValueError):
        parse_history_page("aggTrade", [{**rows[0], "p": 1.5}], "BTCUSDT", None)
    with pytest.raises(ValueError):
        parse_history_page("aggTrade", [rows[0], rows[0]], "BTCUSDT", None)
