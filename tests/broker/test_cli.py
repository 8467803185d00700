"""``trio-feed publish`` and ``trio-feed stream --from-redis``, as real processes."""

from __future__ import annotations

import json

import trio

from trio_feed.binance import Trade
from trio_feed.broker import open_redis_feed, open_redis_sink

from ..cli.helpers import assert_error, run_cli, run_cli_async
from .conftest import trades


async def test_publish_writes_the_feed_into_redis(redis_server, prefix) -> None:
    with trio.fail_after(60):
        result = await run_cli_async("publish", "btcusdt@trade", "--redis", redis_server.url,
                                     "--prefix", prefix, "--limit", "150")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("published 150 events in ")
        assert ": 0 dropped, 0 retried, 0 already written" in result.stdout
        async with open_redis_feed(redis_server.url, ["btcusdt@trade"], prefix=prefix,
                                   start="earliest") as feed:
            got = [await feed.receive() for _ in range(150)]
            stats = feed.statistics()
    ids = [e.trade_id for e in got if isinstance(e, Trade)]
    assert len(ids) == 150 and ids == list(range(ids[0], ids[0] + 150))
    assert stats.gaps == 0


async def test_stream_from_redis_prints_what_was_published(redis_server, prefix) -> None:
    with trio.fail_after(60):
        async with open_redis_sink(redis_server.url, prefix=prefix) as sink:
            for event in trades(1, 40):
                await sink.send(event)
        result = await run_cli_async("stream", "--from-redis", redis_server.url,
                                     "btcusdt@trade", "--prefix", prefix, "--start",
                                     "earliest", "--limit", "40", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["trade_id"] for line in lines] == list(range(1, 41))
    assert {line["type"] for line in lines} == {"Trade"}
    assert "40 items from 1 entries, 0 gaps" in result.stderr


def test_publish_to_an_unreachable_server_is_one_line() -> None:
    result = run_cli("publish", "btcusdt@trade", "--redis", "redis://127.0.0.1:1",
                     "--limit", "1", "--connect-timeout", "1")
    assert_error(result, 1, "redis")
