"""USD-M futures end to end: the feed, the embedded exchange and the books, over real sockets.

The exchange serves USD-M as Binance does since the routed URLs
(``STREAMS.md`` section 8): book data on ``/public``, everything else on
``/market``, and a stream subscribed on the wrong route is accepted and then
never sent anything.  So a routing bug in the client shows up here as a
stream that stays silent.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest
import trio
import trio.testing

from trio_feed import (
    ConnectionClosed,
    HandshakeError,
    InvalidStreamName,
    open_connection,
    open_feed,
)
from trio_feed.binance import AllBookTicker, BookTicker
from trio_feed.binance._limits import USDM_FUTURES
from trio_feed.binance._urls import envelope
from trio_feed.books._books import open_order_books
from trio_feed.exchange import Market, open_exchange
from trio_feed.recording import encode_record
from trio_feed.testing import replay_recording

from .test_books import assert_true_books


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


#: One stream of every kind the exchange feeds, and the class each must decode to.
STREAMS = {
    "btcusdt@aggTrade": "AggTrade",
    "btcusdt@markPrice": "MarkPrice",
    "btcusdt@markPrice@1s": "MarkPrice",
    "!markPrice@arr": "MarkPriceArray",
    "btcusdt@kline_1m": "Kline",
    "btcusdt_perpetual@continuousKline_1m": "ContinuousKline",
    "btcusdt@miniTicker": "MiniTicker",
    "btcusdt@ticker": "FuturesTicker",
    "!ticker@arr": "TickerArray",
    "!miniTicker@arr": "MiniTickerArray",
    "btcusdt@compositeIndex": "CompositeIndex",
    "btcusdt@depth": "DepthUpdate",
    "btcusdt@depth@500ms": "DepthUpdate",
    "btcusdt@depth@100ms": "DepthUpdate",
    "btcusdt@depth5@500ms": "DepthUpdate",
    "btcusdt@rpiDepth@500ms": "DepthUpdate",
    "btcusdt@bookTicker": "BookTicker",
    "!bookTicker": "AllBookTicker",
}


async def test_a_futures_feed_routes_every_stream_and_types_it(
        autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(120):
        async with open_exchange(market="usdm", rate=10.0) as exchange, open_feed(
            list(STREAMS), base_url=exchange.base_url, market="usdm"
        ) as feed:
            seen: dict[str, str] = {}
            async for event in feed:
                assert event.stream is not None
                seen.setdefault(event.stream, type(event).__name__)
                if len(seen) == len(STREAMS):
                    break
            assert seen == STREAMS
            # One connection per route, each on its own path; nothing on a wrong one.
            assert sorted(shard.base_url for shard in feed.shards) == [
                exchange.base_url + "/market", exchange.base_url + "/public"]
            assert feed.statistics().connections == 2
            # A stream added later goes to the shard of its route, or opens one.
            await feed.subscribe(["ethusdt@depth@100ms", "ethusdt@forceOrder"])
            assert [len(shard.streams) for shard in feed.shards] == [12, 8]
            assert exchange.statistics().misrouted_streams == 0
            # A spot name is refused, naming the market it belongs to.
            with pytest.raises(InvalidStreamName, match="market='spot'"):
                await feed.subscribe(["btcusdt@trade"])


@pytest.mark.parametrize("shared_market", [False, True])
async def test_a_stream_on_the_wrong_route_receives_nothing(
        autojump_clock: trio.testing.MockClock, shared_market: bool) -> None:
    async def received(url: str, seconds: float) -> Counter[str]:
        names: Counter[str] = Counter()
        async with open_connection(url) as conn:
            with trio.move_on_after(seconds):
                while True:
                    names[orjson.loads(await conn.receive())["stream"]] += 1
        return names

    book, mark = "btcusdt@depth@100ms", "btcusdt@markPrice@1s"
    with trio.fail_after(120):
        async with open_exchange(market="usdm", rate=10.0,
                                 shared_market=shared_market) as exchange:
            on_public = await received(exchange.combined_url([book, mark], route="/public"), 20)
            assert on_public[book] >= 150 and on_public[mark] == 0
            on_market = await received(exchange.combined_url([book, mark], route="/market"), 20)
            assert on_market[mark] >= 15 and on_market[book] == 0
            # An unrouted (legacy) URL serves /public data only.
            legacy = await received(exchange.combined_url([book, mark], route=""), 20)
            assert legacy[book] >= 150 and legacy[mark] == 0
            assert exchange.statistics().misrouted_streams == 3
            # Subscribed later by SUBSCRIBE, the same: accepted, then silent.
            names: Counter[str] = Counter()
            async with open_connection(exchange.base_url + "/market/stream") as conn:
                await conn.send(orjson.dumps(
                    {"method": "SUBSCRIBE", "params": [book, mark], "id": 1}))
                with trio.move_on_after(20):
                    while True:
                        message = orjson.loads(await conn.receive())
                        names[message.get("stream", f"reply {message.get('result')}")] += 1
            assert names["reply None"] == 1 and names[mark] >= 15 and names[book] == 0
            assert exchange.statistics().misrouted_streams == 4
            # The default URL of a stream carries its own route.
            assert "/market/" in exchange.combined_url([mark])
            # A route the market does not have is refused at the handshake.
            with pytest.raises(Exception, match="404"):
                await received(exchange.combined_url([mark], route="/private"), 1)


async def test_an_hour_of_quiet_futures_aggtrade_never_reconnects(
        autojump_clock: trio.testing.MockClock) -> None:
    """A trade every ~15 minutes: the 3-minute server pings and our own pings are all
    there is, and the futures watchdog (4 minutes of silence) never fires."""
    with trio.fail_after(2 * 3600):
        async with open_exchange(market="usdm", rate=1 / 900) as exchange, open_feed(
            ["btcusdt@aggTrade"], base_url=exchange.base_url, market="usdm"
        ) as feed:
            events = 0
            with trio.move_on_after(3600):
                async for _ in feed:
                    events += 1
            stats = feed.statistics()
            assert 1 <= events <= 5
            assert stats.reconnects == {} and stats.stale == 0
            assert stats.connect_attempts == 1 and stats.connections == 1
            server = exchange.statistics()
            assert server.connections_accepted == 1
            assert server.pings_sent >= 19 and server.pongs_missed == 0


async def test_futures_books_sync_on_the_public_route() -> None:
    with trio.fail_after(30):
        async with open_exchange(market="usdm", seed=5, rate=300.0, clock=None) as exchange, \
                open_order_books(["btcusdt", "ethusdt"], base_url=exchange.base_url,
                                 rest_url=exchange.rest_url, market="usdm") as books:
            await books.wait_live()
            seen = 0
            for _ in range(20):
                seen = await books.wait_updated(seen)
                assert_true_books(exchange, books)
            assert books.rules.value == "usdm_futures"
            assert exchange.rest.statistics().snapshots == 2
            assert books.statistics().weight_used == 2 * USDM_FUTURES.depth_weight(1000)
            assert exchange.statistics().misrouted_streams == 0
            async with httpx.AsyncClient() as client:
                spot = await client.get(f"{exchange.rest_url}/api/v3/depth?symbol=BTCUSDT")
                futures = await client.get(f"{exchange.rest_url}/fapi/v1/depth?symbol=BTCUSDT")
            assert spot.status_code == 404
            body = futures.json()
            assert futures.status_code == 200 and {"lastUpdateId", "E", "T"} <= set(body)


async def test_a_pong_counts_when_it_arrives_not_with_the_next_chunk(
        autojump_clock: trio.testing.MockClock) -> None:
    """A server that sends nothing but pongs: each pong is seen in the chunk it came in."""
    with trio.fail_after(3600):
        async with open_exchange(rate=1 / 3600, ping_interval=None) as exchange, open_feed(
            ["btcusdt@aggTrade"], base_url=exchange.base_url, stale_after=10_000.0
        ) as feed:
            await trio.sleep(600)
            stats = feed.statistics()
            assert stats.reconnects == {} and exchange.statistics().client_pings >= 9
            assert exchange.statistics().messages_sent == 0


async def test_a_futures_recording_replays_whole_over_both_routes(tmp_path: Path) -> None:
    """Each route's connection ends with 1000 when its streams are over; the feed ends with
    the last of them, so nothing of the other route is cut off."""
    market = Market(9, market="usdm")
    names = ["btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@depth@100ms"]
    lines, sent = [], Counter[str]()
    for tick in range(400):
        market.step()
        for name in names:
            for raw in market.encoded(name):
                text = envelope(name, raw).decode()
                lines.append(encode_record(tick * 1_000_000, name, text))
                sent[name] += 1
    path = tmp_path / "futures.jsonl"
    path.write_bytes(b"".join(lines))
    assert sent["btcusdt@depth@100ms"] == 400 and sent["btcusdt@markPrice@1s"] == 40
    got: Counter[str] = Counter()
    with trio.fail_after(30):
        async with replay_recording(str(path)) as server:
            with pytest.raises(ConnectionClosed) as ended:
                async with open_feed(names, base_url=server.base_url, market="usdm") as feed:
                    async for event in feed:
                        assert event.stream is not None
                        got[event.stream] += 1
    assert ended.value.code == 1000
    assert got == sent


def test_one_feed_serves_one_market() -> None:
    from trio_feed.binance import parse_stream

    with pytest.raises(InvalidStreamName, match="market='usdm'"):
        open_feed(["btcusdt@trade", "btcusdt@markPrice"])
    with pytest.raises(InvalidStreamName, match="read as a spot stream"):
        open_feed([parse_stream("btcusdt@aggTrade")], market="usdm")
    with pytest.raises(ValueError, match="unknown market"):
        open_feed(["btcusdt@aggTrade"], market="coinm")
    feed = open_feed(["btcusdt@aggTrade", "btcusdt@depth"], market="usdm")
    assert feed.subscriptions.routes == ["/market", "/public"]
    assert feed.options.base_url == "wss://fstream.binance.com"


async def test_the_all_market_book_ticker_keeps_every_symbol(
        autojump_clock: trio.testing.MockClock) -> None:
    """``!bookTicker`` mixes symbols whose update ids are their own: none is a duplicate."""
    with trio.fail_after(120):
        async with open_exchange(market="usdm", rate=10.0) as exchange, open_feed(
            ["!bookTicker"], base_url=exchange.base_url, market="usdm"
        ) as feed:
            symbols: Counter[str] = Counter()
            with trio.move_on_after(30):
                async for event in feed:
                    assert isinstance(event, BookTicker) and type(event) is AllBookTicker
                    symbols[event.symbol] += 1
            stats = feed.statistics()
            assert stats.duplicates == 0 and sum(symbols.values()) == stats.messages
            assert set(symbols) == {"BTCUSDT", "ETHUSDT", "BNBUSDT"}
            assert stats.messages == exchange.statistics().messages_sent


async def test_a_spot_exchange_has_no_routes(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with open_exchange() as exchange:
            with pytest.raises(HandshakeError) as refused:
                async with open_connection(exchange.base_url + "/market/stream"):
                    pass
            assert refused.value.status == 404
            with pytest.raises(HandshakeError) as refused:
                async with open_connection(
                        exchange.base_url + "/stream?streams=btcusdt@markPrice"):
                    pass
            assert refused.value.status == 400  # a USD-M name on spot
