"""A Redis Cluster of three nodes: each transaction and each read of the broker in one slot."""

from __future__ import annotations

from collections.abc import Iterator

import coredis
import pytest
import trio

from trio_feed.binance import Trade
from trio_feed.broker import (
    Gap,
    LocalCluster,
    control_key,
    local_cluster,
    open_redis_feed,
    open_redis_sink,
    stream_key,
)

from .conftest import trades
from .test_faults import wait_until

STREAMS = ["btcusdt@trade", "ethusdt@trade", "bnbusdt@trade"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(3) as running:
        yield running


async def test_a_cluster_carries_every_stream_in_order(cluster, prefix) -> None:
    count = 600
    events = {name: trades(1, count, name) for name in STREAMS}
    seen: dict[str, list[int]] = {name: [] for name in STREAMS}
    gaps: list[Gap] = []
    with trio.fail_after(30):
        async with open_redis_feed(cluster.url, STREAMS, prefix=prefix, start="earliest",
                                   block_ms=100, cluster=True) as feed:
            async with open_redis_sink(cluster.url, prefix=prefix, max_batch_events=20,
                                       cluster=True) as sink:
                for first in range(0, count, 50):
                    await sink.send_batch([e for name in STREAMS
                                           for e in events[name][first:first + 50]])
                sink.note("resync", reconnects=1)
                await sink.flush()
                written = sink.statistics()
            async for item in feed:
                if isinstance(item, Gap):
                    gaps.append(item)
                    continue
                assert isinstance(item, Trade)
                seen[item.stream].append(item.trade_id)  # type: ignore[index]
                if sum(map(len, seen.values())) == count * len(STREAMS):
                    break
            await wait_until(lambda: bool(feed.statistics().notices), 2)
            stats = feed.statistics()
        async with coredis.RedisCluster.from_url(cluster.url) as client:
            control = await client.xlen(control_key(prefix=prefix))
            lengths = [await client.xlen(stream_key(name, prefix=prefix)) for name in STREAMS]
    nodes = [port for port in cluster.ports
             if int(cluster._ask(port, b"DBSIZE")[1:].strip()) > 0]
    assert len(nodes) > 1, "the streams should live on more than one node"
    assert seen == {name: list(range(1, count + 1)) for name in STREAMS}
    assert gaps == [] and stats.missing == 0 and stats.duplicates == 0
    assert written.events == count * len(STREAMS) and written.retries == 0
    assert control == 1 and stats.notices == {"resync": 1}
    assert lengths == [count // 20] * len(STREAMS)


async def test_a_group_on_a_cluster_shares_the_entries(cluster, prefix) -> None:
    count = 300
    ids: dict[str, list[int]] = {"a": [], "b": []}

    async def consume(name: str, *, task_status: trio.TaskStatus[None]) -> None:
        async with open_redis_feed(cluster.url, STREAMS[:2], prefix=prefix, group="g",
                                   consumer=name, start="earliest", block_ms=100, count=2,
                                   max_queued=2, cluster=True) as feed:
            task_status.started()
            async for item in feed:
                assert isinstance(item, Trade)
                ids[name].append(item.trade_id * (1 if item.stream == STREAMS[0] else -1))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(consume, "a")
            await nursery.start(consume, "b")
            async with open_redis_sink(cluster.url, prefix=prefix, max_batch_events=10,
                                       cluster=True) as sink:
                for first in range(1, count + 1, 10):
                    await sink.send_batch([*trades(first, 10, STREAMS[0]),
                                           *trades(first, 10, STREAMS[1])])
                    await trio.sleep(0.002)
            await wait_until(lambda: len(ids["a"]) + len(ids["b"]) >= 2 * count, 10)
            await trio.sleep(0.2)  # nothing more comes
            nursery.cancel_scope.cancel()
    everything = ids["a"] + ids["b"]
    assert sorted(everything) == sorted([*range(1, count + 1), *range(-count, 0)])
    assert ids["a"] and ids["b"]
