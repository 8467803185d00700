"""Many readers, one publisher: other processes, trimming, late joiners rebuilding a book."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest
import trio

from trio_feed import open_feed
from trio_feed.binance import DepthUpdate, OrderBook, PartialDepth, Trade
from trio_feed.broker import Gap, open_redis_feed, open_redis_sink, publish, stream_key
from trio_feed.exchange import open_exchange

from .conftest import trades

READER_SCRIPT = textwrap.dedent("""
    import json, sys, trio
    from trio_feed.broker import open_redis_feed

    async def main(url, prefix, count):
        ids = []
        async with open_redis_feed(url, ["btcusdt@trade"], prefix=prefix, block_ms=100) as feed:
            print("ready", flush=True)
            async for event in feed:
                ids.append(event.trade_id)
                if len(ids) == count:
                    break
            stats = feed.statistics()
        print(json.dumps({"ids": ids, "missing": stats.missing, "gaps": stats.gaps}), flush=True)

    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
""")


async def test_two_reader_processes_see_every_event_of_one_publisher(
        redis_server, prefix) -> None:
    count = 400
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            readers = []
            for _ in range(2):
                process = await nursery.start(functools.partial(
                    trio.run_process,
                    [sys.executable, "-c", READER_SCRIPT, redis_server.url, prefix, str(count)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False))
                readers.append(process)
            outputs: list[bytes] = [b"", b""]

            async def collect(index: int) -> None:
                async for chunk in readers[index].stdout:
                    outputs[index] += chunk

            for index in range(2):
                nursery.start_soon(collect, index)
            with trio.fail_after(30):
                while not all(b"ready" in out for out in outputs):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            published: list[int] = []
            async with open_exchange() as exchange, \
                    open_feed(["btcusdt@trade"], base_url=exchange.base_url) as feed, \
                    open_redis_sink(redis_server.url, prefix=prefix) as sink:
                async def tap() -> Any:
                    async for event in feed:
                        assert isinstance(event, Trade)
                        published.append(event.trade_id)
                        yield event

                assert await publish(tap(), sink, limit=count) == count  # type: ignore[arg-type]
            for process in readers:
                await process.wait()
    for process, out in zip(readers, outputs, strict=True):
        assert process.returncode == 0, process.stderr
        result = json.loads(out.decode().splitlines()[-1])
        assert result == {"ids": published, "missing": 0, "gaps": 0}


async def test_retention_trims_by_length_and_by_age(redis_server, prefix) -> None:
    import coredis

    clock = [1_900_000_000_000_000]
    key = stream_key("btcusdt@trade", prefix=prefix)
    age_key = stream_key("ethusdt@trade", prefix=prefix)
    with trio.fail_after(20):
        async with open_redis_sink(redis_server.url, prefix=prefix, maxlen=50,
                                   max_batch_events=1, max_entries_per_write=64) as sink:
            for event in trades(1, 1000):
                await sink.send(event)
        async with open_redis_sink(redis_server.url, prefix=prefix, max_age=5.0,
                                   max_batch_events=1, max_entries_per_write=64,
                                   wall_clock_us=lambda: clock[0]) as sink:
            for event in trades(1, 300, "ethusdt@trade"):
                await sink.send(event)
            await sink.flush()
            clock[0] += 10_000_000  # ten seconds later
            for event in trades(301, 300, "ethusdt@trade"):
                await sink.send(event)
        async with coredis.Redis.from_url(redis_server.url) as client:
            length = await client.xlen(key)
            newest = await client.xrevrange(key, count=1)
            aged = await client.xrange(age_key)
    # MAXLEN ~ trims whole radix-tree nodes (at most 100 entries each): near 50, never 1000.
    assert 50 <= length < 150
    assert newest[0].field_values[b"first"] == b"1000"
    firsts = [int(e.field_values[b"first"]) for e in aged]
    assert firsts[-300:] == list(range(301, 601))  # the new ones are all kept
    assert len(firsts) < 400  # MINID ~ removed (nearly) all of the ten-second-old ones


def test_an_unbounded_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="bounded"):
        open_redis_sink("redis://127.0.0.1:1", maxlen=None, max_age=None)


async def test_a_late_joiner_rebuilds_the_publishers_book(redis_server, prefix) -> None:
    stream = "btcusdt@depth@100ms"
    with trio.fail_after(45):
        async with open_exchange() as exchange, trio.open_nursery() as nursery, \
                httpx.AsyncClient() as http:
            reference = OrderBook("btcusdt")  # the publisher's own book, synced independently

            async def fetch() -> None:
                while True:
                    response = await http.get(f"{exchange.rest_url}/api/v3/depth",
                                              params={"symbol": "BTCUSDT", "limit": 1000})
                    if reference.receive_snapshot(response.content) is None:
                        return

            stop = trio.Event()
            stopped = trio.Event()

            async with open_feed([stream], base_url=exchange.base_url) as feed, \
                    open_redis_sink(redis_server.url, prefix=prefix, rest_url=exchange.rest_url,
                                    snapshot_interval=0.2) as sink:
                async def run_publisher() -> None:
                    async for event in feed:
                        assert isinstance(event, DepthUpdate)
                        await sink.send(event)
                        if reference.receive_update(event) is not None:
                            nursery.start_soon(fetch)
                        if stop.is_set() and not reference.stale:
                            break
                    await sink.flush()
                    stopped.set()

                nursery.start_soon(run_publisher)
                with trio.fail_after(20):
                    while sink.statistics().snapshots < 2:  # noqa: ASYNC110
                        await trio.sleep(0.02)
                joined: list[Any] = []
                async with open_redis_feed(redis_server.url, [stream], prefix=prefix,
                                           block_ms=100) as late:
                    first = await late.receive()
                    assert isinstance(first, PartialDepth)
                    book = OrderBook("btcusdt")
                    actions = [book.receive_snapshot(first)]
                    for _ in range(30):  # the publisher goes on meanwhile
                        item = await late.receive()
                        joined.append(item)
                        assert isinstance(item, DepthUpdate)
                        actions.append(book.receive_update(item))
                    stop.set()
                    await stopped.wait()
                    target = reference.last_update_id
                    while book.last_update_id != target:
                        item = await late.receive()
                        assert not isinstance(item, Gap), item
                        actions.append(book.receive_update(item))
                    stats = late.statistics()
    assert actions == [None] * len(actions)  # the snapshot bridged; no refetch ever needed
    assert joined[0].first_update_id == first.last_update_id + 1  # no overlap, no hole
    assert book.state.value == "live" and book.statistics().gaps == 0
    assert book.bids() == reference.bids() and book.asks() == reference.asks()
    assert len(book.bids()) > 10
    assert stats.snapshots == 1 and stats.gaps == 0 and stats.duplicates == 0
