"""Batches in one call: ``send_batch`` takes a batch whole, and ``publish`` hands whole batches."""

from __future__ import annotations

import pytest
import trio

from trio_feed.binance import Trade
from trio_feed.broker import open_redis_sink, publish

from .conftest import trades
from .test_faults import FAST, Collector, wait_until


class Queued:
    """A feed-like source whose events are all queued: ``receive_nowait`` hands them out."""

    def __init__(self, events: list[Trade], *, nowait: bool = True) -> None:
        self.events = list(reversed(events))
        if nowait:
            self.receive_nowait = self._receive_nowait

    def _receive_nowait(self) -> Trade:
        if not self.events:
            raise trio.WouldBlock
        return self.events.pop()

    def __aiter__(self) -> Queued:
        return self

    async def __anext__(self) -> Trade:
        if not self.events:
            raise StopAsyncIteration
        return self.events.pop()


class Steps(trio.abc.Instrument):
    """Counts the steps (resumptions after a checkpoint) of one task."""

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def pump(source: Queued, sink: object, **options: int) -> tuple[int, int]:
    """``publish(source, sink)`` in a task of its own: (events sent, the task's steps)."""
    steps = Steps()
    sent = 0

    async def run() -> None:
        nonlocal sent
        steps.task = trio.lowlevel.current_task()
        sent = await publish(source, sink, **options)  # type: ignore[arg-type]

    trio.lowlevel.add_instrument(steps)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
    finally:
        trio.lowlevel.remove_instrument(steps)
    return sent, steps.steps


@pytest.mark.parametrize("nowait", [True, False], ids=["feed-like", "plain-iterator"])
async def test_publish_hands_what_the_feed_holds_to_the_sink_in_batches(
        redis_server, prefix, nowait) -> None:
    count = 3000
    with trio.fail_after(20):
        collector = Collector()
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run, redis_server.url, prefix)
            async with open_redis_sink(redis_server.url, prefix=prefix, **FAST) as sink:
                sent, steps = await pump(Queued(trades(1, count), nowait=nowait), sink)
                await sink.flush()
            await collector.wait_for(count)
            nursery.cancel_scope.cancel()
    assert sent == count
    assert collector.ids == list(range(1, count + 1)) and collector.gaps == []
    if nowait:  # one send_batch (one checkpoint) per max_batch events
        assert steps <= 10
    else:  # event by event: a checkpoint each
        assert steps >= count


async def test_send_batch_takes_a_batch_whole_or_not_at_all(own_server, prefix) -> None:
    with trio.fail_after(20):
        collector = Collector()
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run, own_server.url, prefix)
            async with open_redis_sink(own_server.url, prefix=prefix, policy="block",
                                       max_pending_events=100, max_batch_events=10,
                                       max_entries_per_write=10, **FAST) as sink:
                own_server.pause()
                await sink.send_batch(trades(1, 95))
                with trio.move_on_after(0.3) as waited:  # not full: taken whole, past the bound
                    await sink.send_batch(trades(96, 30))
                assert not waited.cancelled_caught
                assert sink.statistics().pending_events == 125
                with trio.move_on_after(0.3) as waited:  # full: waits
                    await sink.send_batch(trades(126, 5))
                assert waited.cancelled_caught
                assert sink.statistics().pending_events == 125  # cancelled: none taken
                with pytest.raises(ValueError, match="no stream"):
                    await sink.send_batch([*trades(126, 5), Trade(1, "X", 1, "1", "1", 1,
                                                                  False, None)])
                assert sink.statistics().pending_events == 125
                nursery.start_soon(sink.send_batch, trades(126, 5))
                await wait_until(lambda: sink.statistics().blocked_seconds > 0.45)
                own_server.resume()
                await wait_until(lambda: sink.statistics().events >= 130)
                stats = sink.statistics()
            await collector.wait_for(130)
            nursery.cancel_scope.cancel()
    assert collector.ids == list(range(1, 131)) and collector.gaps == []
    assert stats.events == 130 and stats.dropped_events == 0


async def test_publish_takes_what_a_real_feed_has_queued_in_one_batch(redis_server, prefix) -> None:
    from trio_feed import open_feed
    from trio_feed.exchange import open_exchange

    count = 300
    with trio.fail_after(30):
        async with open_exchange(rate=2000.0) as exchange, \
                open_feed(["btcusdt@trade"], base_url=exchange.base_url,
                          max_queued=10_000) as feed, \
                open_redis_sink(redis_server.url, prefix=prefix, **FAST) as sink:
            await wait_until(lambda: feed.statistics().queued >= count, 20)  # not consumed yet
            sent, steps = await pump(feed, sink, limit=count)  # type: ignore[arg-type]
            await sink.flush()
            stats = sink.statistics()
    assert sent == count and stats.events == count
    assert steps <= 5  # one send_batch for what was queued, not a checkpoint per event
