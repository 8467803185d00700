"""Scripted scenarios: payloads on streams, pauses, then a fault, seen through a real feed."""

from __future__ import annotations

from typing import Literal

import pytest
import trio
from trio_websocket import open_websocket_url

from trio_feed import ConnectionClosed, DecodeError, InvalidStreamName, open_feed
from trio_feed.binance import BookTicker, DepthUpdate, Trade
from trio_feed.testing import (
    EventRecorder,
    Scenario,
    book_ticker,
    depth_update,
    open_scenario_server,
    trade,
)

STREAMS = ["btcusdt@trade", "btcusdt@depth@100ms", "btcusdt@bookTicker"]


def mixed() -> Scenario:
    return (
        Scenario()
        .send("btcusdt@trade", trade("btcusdt", 1))
        .send("btcusdt@depth@100ms", depth_update("btcusdt", 10, 12, bids=[("1.0", "2.0")]))
        .send("btcusdt@bookTicker", book_ticker("btcusdt", 12))
        .send("btcusdt@trade", trade("btcusdt", 2, price="101.5"))
    )


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_payloads_arrive_in_order_then_close_code(mode: Literal["inline", "channel"]) -> None:
    scenario = mixed().close(1011, "scripted failure")
    recorder = EventRecorder()
    with trio.fail_after(10):
        async with scenario.serve() as server, \
                open_feed(STREAMS, mode=mode, base_url=server.base_url, reconnect=False) as feed:
            closed = await recorder.consume(feed)
    assert closed is not None and closed.code == 1011 and closed.reason == "scripted failure"
    assert recorder.closed is closed
    recorder.assert_sequence([
        {"trade_id": 1, "stream": "btcusdt@trade"},
        DepthUpdate,
        BookTicker,
        {"trade_id": 2, "price": "101.5"},
    ])
    depth = recorder.for_stream("btcusdt@depth@100ms")[0]
    assert isinstance(depth, DepthUpdate) and depth.bids == [["1.0", "2.0"]]
    recorder.assert_no_gaps()


async def test_drop_is_seen_as_1006() -> None:
    scenario = mixed().drop()
    recorder = EventRecorder()
    with trio.fail_after(10):
        async with open_scenario_server(scenario) as server, \
                open_feed(STREAMS, base_url=server.base_url, reconnect=False) as feed:
            closed = await recorder.consume(feed)
    assert closed is not None and closed.code == 1006
    assert len(recorder) == 4


async def test_without_a_fault_the_connection_stays_open() -> None:
    with trio.fail_after(10):
        async with mixed().serve() as server, \
                open_feed(STREAMS, base_url=server.base_url, reconnect=False) as feed:
            recorder = EventRecorder()
            assert await recorder.consume(feed, limit=4) is None
            with trio.move_on_after(0.2) as waited:
                await feed.__anext__()
            assert waited.cancelled_caught
        # Leaving the feed closes the connection; the server counts it finished.
        await server.wait_done()
        assert server.statistics().connections_finished == 1


async def test_gaps_are_found_and_named() -> None:
    scenario = (
        Scenario()
        .send_many("btcusdt@trade", [trade("btcusdt", i) for i in (1, 2, 4)])
        .send("btcusdt@depth@100ms", depth_update("btcusdt", 10, 12))
        .send("btcusdt@depth@100ms", depth_update("btcusdt", 14, 15))
        .close()
    )
    recorder = EventRecorder()
    with trio.fail_after(10):
        async with scenario.serve() as server, \
                open_feed(STREAMS, base_url=server.base_url, reconnect=False) as feed:
            await recorder.consume(feed)
    gaps = recorder.gaps()
    assert [(g.stream, g.kind, g.index, g.expected, g.got) for g in gaps] == [
        ("btcusdt@trade", "trade id", 2, 3, 4),
        ("btcusdt@depth@100ms", "update id", 4, 13, 14),
    ]
    with pytest.raises(AssertionError, match=r"(?s)2 id gaps.*trade id gap at event #2"):
        recorder.assert_no_gaps()
    recorder.assert_no_gaps(stream="btcusdt@bookTicker")


async def test_raw_connection_gets_bare_payloads_of_its_stream_only() -> None:
    scenario = mixed().close()
    with trio.fail_after(10):
        async with scenario.serve() as server:
            async with open_websocket_url(server.raw_url("btcusdt@trade")) as ws:
                first = await ws.get_message()
                second = await ws.get_message()
            assert isinstance(first, str) and isinstance(second, str)
            assert first.startswith('{"e":"trade"') and '"t":1,' in first
            assert '"t":2,' in second
            recorder = EventRecorder()
            async with open_feed(["btcusdt@trade"], url=server.raw_url("btcusdt@trade"),
                                 reconnect=False) as feed:
                await recorder.consume(feed)
            recorder.assert_sequence([Trade, Trade])
            assert {e.stream for e in recorder} == {"btcusdt@trade"}


async def test_send_raw_reaches_every_client_as_is() -> None:
    scenario = Scenario().send("btcusdt@trade", trade("btcusdt", 1)).send_raw("{not json").close()
    with trio.fail_after(10):
        async with scenario.serve() as server, \
                open_feed(["btcusdt@trade"], base_url=server.base_url, reconnect=False) as feed:
            recorder = EventRecorder()
            with pytest.raises(DecodeError):
                await recorder.consume(feed)
            assert len(recorder) == 1


async def test_pauses_are_kept() -> None:
    scenario = (Scenario().send("btcusdt@trade", trade("btcusdt", 1)).pause(0.3)
                .send("btcusdt@trade", trade("btcusdt", 2)).close())
    with trio.fail_after(10):
        async with scenario.serve() as server:
            started = trio.current_time()  # before connecting: the bound below is exact
            async with open_feed(["btcusdt@trade"], base_url=server.base_url,
                                 reconnect=False) as feed:
                await feed.__anext__()
                await feed.__anext__()
                assert trio.current_time() - started >= 0.3


async def test_every_connection_plays_the_whole_script() -> None:
    scenario = mixed().close()
    with trio.fail_after(10):
        async with scenario.serve() as server:
            runs = []
            for _ in range(2):
                recorder = EventRecorder()
                async with open_feed(STREAMS, base_url=server.base_url, reconnect=False) as feed:
                    await recorder.consume(feed)
                runs.append([e.describe() for e in recorder])
            assert runs[0] == runs[1] and len(runs[0]) == 4


def test_scenario_misuse_is_refused() -> None:
    with pytest.raises(InvalidStreamName):
        Scenario().send("BTCUSDT@trade", {})
    with pytest.raises(ValueError, match="negative"):
        Scenario().pause(-1)
    ended = Scenario().close(1000)
    with pytest.raises(RuntimeError, match="already ends"):
        ended.drop()
    with pytest.raises(RuntimeError, match="already ends"):
        ended.send("btcusdt@trade", {})


async def test_consume_reraises_other_errors_and_stops_at_limit() -> None:
    scenario = Scenario().send_many("btcusdt@trade", [trade("btcusdt", i) for i in range(5)])
    with trio.fail_after(10):
        async with scenario.serve() as server, \
                open_feed(["btcusdt@trade"], base_url=server.base_url, reconnect=False) as feed:
            recorder = EventRecorder()
            assert await recorder.consume(feed, limit=3) is None
            assert len(recorder) == 3
            assert await recorder.consume(feed, limit=3) is None  # already there
            assert await recorder.consume(feed, limit=5) is None
            assert [e.trade_id for e in recorder.of_type(Trade)] == [0, 1, 2, 3, 4]
    assert not isinstance(recorder.closed, ConnectionClosed)
