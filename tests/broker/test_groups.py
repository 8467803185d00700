"""Consumer groups: consumers share a stream's entries, and what a dead one held is taken over."""

from __future__ import annotations

from typing import Any

import coredis
import pytest
import trio

from trio_feed.binance import Trade
from trio_feed.broker import open_redis_feed, open_redis_sink, stream_key

from .conftest import trades
from .test_faults import FAST, READER, wait_until

GROUP = dict(READER, group="workers", count=4, max_queued=4)


class Consumer:
    """One consumer of the group, in a task: the trade ids it was handed, in order."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options
        self.ids: list[int] = []
        self.stats: Any = None

    async def run(self, url: str, prefix: str, stop_after: int | None = None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        feed = open_redis_feed(url, ["btcusdt@trade"], prefix=prefix, consumer=self.name,
                               **{**GROUP, **self.options})
        try:
            async with feed:
                task_status.started()
                async for item in feed:
                    assert isinstance(item, Trade), item
                    self.ids.append(item.trade_id)
                    if stop_after is not None and len(self.ids) >= stop_after:
                        break
        finally:  # after leaving: the last acknowledgements included
            self.stats = feed.statistics()


async def pending(url: str, prefix: str) -> int:
    async with coredis.Redis.from_url(url) as client:
        summary = await client.xpending(stream_key("btcusdt@trade", prefix=prefix), "workers")
        return int(summary.pending)


async def test_two_consumers_of_one_group_share_a_stream_without_loss_or_duplicate(
        redis_server, prefix) -> None:
    count = 2000
    a, b = Consumer("a"), Consumer("b")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run, redis_server.url, prefix)
            await nursery.start(b.run, redis_server.url, prefix)
            async with open_redis_sink(redis_server.url, prefix=prefix, max_batch_events=20,
                                       **FAST) as sink:
                for first in range(1, count + 1, 20):
                    await sink.send_batch(trades(first, 20))
                    await trio.sleep(0.002)
            await wait_until(lambda: len(a.ids) + len(b.ids) >= count, 10)
            await trio.sleep(0.3)  # nothing more comes
            nursery.cancel_scope.cancel()
        left = await pending(redis_server.url, prefix)
    assert a.ids and b.ids, "both consumers got a share"
    assert sorted(a.ids + b.ids) == list(range(1, count + 1))  # nothing lost, nothing twice
    assert not set(a.ids) & set(b.ids)
    for ids in (a.ids, b.ids):  # whole entries, in order within each consumer
        assert ids == sorted(ids) and all(i % 20 == 1 for i in ids[::20])
    assert a.stats.acked + b.stats.acked == count // 20 and left == 0
    assert a.stats.missing == b.stats.missing == 0


async def test_a_dead_consumers_pending_entries_are_taken_over(redis_server, prefix) -> None:
    count = 1000
    with trio.fail_after(30):
        async with open_redis_sink(redis_server.url, prefix=prefix, max_batch_events=10,
                                   **FAST) as sink:
            await sink.send_batch(trades(1, count))
        dead = Consumer("dead", start="earliest")
        await dead.run(redis_server.url, prefix, stop_after=15)  # in its second entry
        assert dead.ids == list(range(1, 16))
        assert dead.stats.acked == 1  # the first entry only: handed out whole
        held = await pending(redis_server.url, prefix)
        assert held >= 2  # the entry it was in, and those it had read ahead
        heir = Consumer("heir", claim_idle=0.3, claim_interval=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(heir.run, redis_server.url, prefix)
            await wait_until(lambda: len(heir.ids) >= count - 10, 10)
            await trio.sleep(0.5)  # nothing more comes, and the last acknowledgements go
            nursery.cancel_scope.cancel()
        left = await pending(redis_server.url, prefix)
    assert sorted(heir.ids) == list(range(11, count + 1))  # everything not acknowledged, once
    assert heir.stats.claimed == held
    assert left == 0


async def test_a_consumer_restarting_under_its_name_hands_out_its_own_pending_first(
        redis_server, prefix) -> None:
    with trio.fail_after(20):
        async with open_redis_sink(redis_server.url, prefix=prefix, max_batch_events=10,
                                   **FAST) as sink:
            await sink.send_batch(trades(1, 100))
        first = Consumer("w", start="earliest")
        await first.run(redis_server.url, prefix, stop_after=25)
        again = Consumer("w")
        await again.run(redis_server.url, prefix, stop_after=80)
        left = await pending(redis_server.url, prefix)
    assert first.ids == list(range(1, 26))
    assert again.ids == list(range(21, 101))  # the entry it was in, again, then the rest
    assert again.stats.claimed == 0, again.stats
    assert first.stats.acked == 2, first.stats
    assert left == 1, again.stats  # the last entry: its last event out, the next not asked


def test_a_group_needs_both_names() -> None:
    with pytest.raises(ValueError, match="both group and consumer"):
        open_redis_feed("redis://127.0.0.1:1", ["btcusdt@trade"], group="g")
