"""The local exchange's trade history over REST: the same trades its streams carried."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from trio_feed.exchange import Market, open_exchange
from trio_feed.exchange._market import HISTORY_LIMIT

from .test_rest import http


def test_history_pages_follow_the_ids_and_the_limit() -> None:
    market = Market(seed=3, symbols=["btcusdt"])
    streamed: list[dict] = []
    trades: list[dict] = []
    for _ in range(400):
        market.step()
        streamed.extend(market.payloads("btcusdt@aggTrade"))
        trades.extend(market.payloads("btcusdt@trade"))
    first = streamed[0]["a"]
    page = market.agg_trades("BTCUSDT", first + 10, 50)
    assert [row["a"] for row in page] == list(range(first + 10, first + 60))
    for row, event in zip(page, streamed[10:60], strict=True):  # exactly what was streamed
        assert {k: event[k] for k in row} == row
    assert market.agg_trades("btcusdt", None, 5) == market.agg_trades(
        "btcusdt", streamed[-5]["a"], 1000)  # no fromId: the latest
    assert market.agg_trades("btcusdt", streamed[-1]["a"] + 1, 10) == []  # nothing yet
    rows = market.historical_trades("btcusdt", trades[3]["t"], 4)
    assert [r["id"] for r in rows] == [t["t"] for t in trades[3:7]]
    assert [(r["price"], r["qty"], r["time"], r["isBuyerMaker"]) for r in rows] == [
        (t["p"], t["q"], t["T"], t["m"]) for t in trades[3:7]]
    # An id older than the history kept starts at the oldest kept.
    assert market.agg_trades("btcusdt", 0, 1)[0]["a"] == first


def test_history_keeps_a_bounded_window() -> None:
    market = Market(seed=1, symbols=["btcusdt"])
    state = market._symbols["btcusdt"]
    state.agg_history.extend((i, 1, 1, i, i, 0, True) for i in range(2 * HISTORY_LIMIT))
    for _ in range(50):
        market.step()
    assert HISTORY_LIMIT <= len(state.agg_history) <= 2 * HISTORY_LIMIT


async def test_history_endpoints_weigh_and_fault(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with open_exchange(shared_market=True, clock=None, rate=100.0) as exchange:
            await trio.sleep(2)  # no connection is open: the shared market answers anyway
            port = exchange.rest.port
            (status, headers, body), = await http(port, "/api/v3/aggTrades?symbol=BTCUSDT"
                                                        "&limit=3")
            assert status == 200 and headers["x-mbx-used-weight-1m"] == "4"
            rows = orjson.loads(body)
            assert len(rows) == 3 and set(rows[0]) == {"a", "p", "q", "f", "l", "T", "m", "M"}
            (status, headers, body), = await http(
                port, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={rows[0]['f']}")
            assert status == 200 and headers["x-mbx-used-weight-1m"] == str(4 + 25)
            assert orjson.loads(body)[0]["id"] == rows[0]["f"]

            exchange.faults.rate_limit_history(1, retry_after=9, status=418)
            exchange.faults.short_history_pages(2, 1)
            exchange.faults.refuse_history(1, status=500)
            target = "/api/v3/aggTrades?symbol=BTCUSDT&fromId=2000000&limit=100"
            answers = await http(port, *[target] * 4)
            assert [a[0] for a in answers] == [500, 418, 200, 200]
            assert answers[1][1]["retry-after"] == "9"
            assert [len(orjson.loads(a[2])) for a in answers[2:]] == [2, 100]

            exchange.faults.slow_history(5.0, 1)
            started = trio.current_time()
            (status, _, _), = await http(port, "/api/v3/aggTrades?symbol=BTCUSDT")
            assert status == 200 and trio.current_time() - started >= 5.0

            exchange.faults.refuse_history(status=None)  # no answer at all
            with pytest.raises(Exception):  # noqa: B017 (h11 or the socket says it)
                await http(port, "/api/v3/aggTrades?symbol=BTCUSDT")
            exchange.faults.refuse_history(0)
            (status, _, _), = await http(port, "/api/v3/aggTrades?symbol=NOPE")
            assert status == 400
            (status, headers, body), = await http(port, "/api/v3/klines?symbol=BTCUSDT"
                                                        "&interval=1s&limit=2")
            assert status == 200 and len(orjson.loads(body)) == 2
            assert int(headers["x-mbx-used-weight-1m"]) >= 2 + 4 + 25  # klines weigh 2
            (status, _, _), = await http(port, "/api/v3/klines?symbol=BTCUSDT&interval=7s")
            assert status == 400
            stats = exchange.rest.statistics()
            assert stats.history_faults == 4 and stats.history_requests == 6  # slow is no refusal


async def test_history_without_a_shared_market_reads_the_open_connection() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=2, clock=None, rate=200.0) as exchange:
            (status, _, _), = await http(exchange.rest.port, "/api/v3/aggTrades?symbol=BTCUSDT")
            assert status == 503  # no connection: no market to read
            async with open_websocket_url(exchange.raw_url("btcusdt@aggTrade")) as ws:
                event = orjson.loads(await ws.get_message())
                (status, _, body), = await http(
                    exchange.rest.port, f"/api/v3/aggTrades?symbol=BTCUSDT&fromId={event['a']}")
            assert status == 200 and orjson.loads(body)[0]["a"] == event["a"]
