"""The server killed, restarted, paused: what each policy promises, checked event by event.

Each test has a server of its own (``own_server``).  The server keeps its
data in memory only, so a kill loses what it held: before killing it, the
tests pause its writes (``CLIENT PAUSE ... WRITE``) and wait until the reader
has read everything the sink had been told was written, so that what the reader sees afterwards is
exactly what the sink kept or dropped.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio

from trio_feed import open_feed
from trio_feed.binance import Trade
from trio_feed.broker import Gap, open_redis_feed, open_redis_sink, publish, stream_key
from trio_feed.exchange import open_exchange

from .conftest import trades

FAST = dict(write_timeout=0.5, connect_timeout=0.5, backoff_initial=0.05, backoff_cap=0.2)
READER = dict(start="earliest", block_ms=100, read_timeout=0.5, connect_timeout=0.5,
              backoff_initial=0.05, backoff_cap=0.2)


class Collector:
    """Reads one stream in a task and keeps what it saw."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.gaps: list[Gap] = []
        self.feed: Any = None

    async def run(self, url: str, prefix: str, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_redis_feed(url, ["btcusdt@trade"], prefix=prefix, **READER) as feed:
            self.feed = feed
            task_status.started()
            async for item in feed:
                if isinstance(item, Gap):
                    self.gaps.append(item)
                else:
                    assert isinstance(item, Trade)
                    self.ids.append(item.trade_id)

    async def wait_for(self, count: int, seconds: float = 5.0) -> None:
        try:
            await wait_until(lambda: len(self.ids) >= count, seconds)
        except trio.TooSlowError:
            stats = self.feed.statistics() if self.feed else None
            raise AssertionError(f"read {len(self.ids)} of {count}; {stats}") from None


async def wait_until(condition: Any, seconds: float = 5.0) -> None:
    """Poll ``condition`` (statistics have no events to wait on) for at most ``seconds``."""
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


class CuttingProxy:
    """A TCP proxy to the server that can lose one reply: the request lands, its answer never comes.

    That is the ambiguous failure an idempotent retry must survive: the client
    cannot know whether its XADD was executed.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.cut_next_reply = False
        self.cuts = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target)
        async with client, server, trio.open_nursery() as nursery:
            async def up() -> None:
                async for data in client:
                    await server.send_all(data)
                nursery.cancel_scope.cancel()

            async def down() -> None:
                async for data in server:
                    if self.cut_next_reply:
                        self.cut_next_reply = False
                        self.cuts += 1
                        nursery.cancel_scope.cancel()  # drop the reply and the connection
                        return
                    await client.send_all(data)
                nursery.cancel_scope.cancel()

            nursery.start_soon(up)
            nursery.start_soon(down)


async def test_a_batch_retried_after_a_lost_reply_is_not_duplicated(
        redis_server, prefix) -> None:
    import coredis

    proxy = CuttingProxy(redis_server.port)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(proxy.serve)
            async with open_redis_sink(f"redis://127.0.0.1:{port}", prefix=prefix,
                                       max_batch_events=10, **FAST) as sink:
                for event in trades(1, 10):
                    await sink.send(event)
                await sink.flush()
                proxy.cut_next_reply = True
                for event in trades(11, 10):  # one full entry: its XADD lands, its reply is lost
                    await sink.send(event)
                await sink.flush()  # the retry, with the same id: refused as already written
                stats = sink.statistics()
            nursery.cancel_scope.cancel()
        async with coredis.Redis.from_url(redis_server.url) as client:
            length = await client.xlen(stream_key("btcusdt@trade", prefix=prefix))
        collector = Collector()
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run, redis_server.url, prefix)
            await collector.wait_for(20)
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    assert proxy.cuts == 1
    assert stats.retries == 1 and stats.already_written == 1
    assert stats.entries == 2 and length == 2
    assert collector.ids == list(range(1, 21)) and collector.gaps == []


async def test_block_loses_nothing_when_the_server_is_killed_and_restarted(
        own_server, prefix) -> None:
    sent = 0

    async def produce(sink: Any, first: int, last: int) -> None:
        nonlocal sent
        for event in trades(first, last - first + 1):
            await sink.send(event)
            sent = event.trade_id

    with trio.fail_after(40):
        collector = Collector()
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run, own_server.url, prefix)
            async with open_redis_sink(own_server.url, prefix=prefix, policy="block",
                                       max_pending_events=1000, max_batch_events=50,
                                       max_entries_per_write=20, **FAST) as sink:
                await produce(sink, 1, 3000)
                await sink.flush()
                await collector.wait_for(3000)
                own_server.pause()
                nursery.start_soon(produce, sink, 3001, 8000)
                await wait_until(lambda: sink.statistics().pending_events >= 1000)
                own_server.kill()
                await trio.sleep(0.5)
                held = sink.statistics()
                assert sent < 8000, "block did not hold the producer"
                assert held.pending_events <= 1000 and held.dropped_events == 0
                own_server.start()
                await wait_until(lambda: sent == 8000, 15)
                await sink.flush()
            await collector.wait_for(8000, 15)
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    stats = sink.statistics()
    assert collector.ids == list(range(1, 8001))
    assert collector.gaps == []
    assert stats.dropped_events == 0 and stats.reconnects >= 1 and stats.blocked_seconds > 0
    assert collector.feed.statistics().reconnects >= 1


async def test_spool_loses_nothing_and_keeps_the_order_when_the_server_is_killed(
        own_server, prefix, tmp_path) -> None:
    spool = tmp_path / "sink.spool"
    with trio.fail_after(40):
        collector = Collector()
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run, own_server.url, prefix)
            async with open_redis_sink(own_server.url, prefix=prefix, policy="spool",
                                       spool=spool, max_pending_events=1000,
                                       max_batch_events=50, max_entries_per_write=20,
                                       **FAST) as sink:
                await sink.send_batch(trades(1, 3000))
                await sink.flush()
                await collector.wait_for(3000)
                own_server.pause()
                await sink.send_batch(trades(3001, 500))  # one round trip, stuck in flight
                await trio.sleep(0.1)
                own_server.kill()
                for first in range(3501, 8001, 100):  # never waits: the oldest go to the spool
                    with trio.fail_after(1):
                        await sink.send_batch(trades(first, 100))
                down = sink.statistics()
                files = sorted(p.name for p in tmp_path.iterdir())
                own_server.start()
                for first in range(8001, 9001, 100):
                    await sink.send_batch(trades(first, 100))
                await sink.flush()
                stats = sink.statistics()
            await wait_until(lambda: (collector.ids and collector.ids[-1] == 9000), 15)
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    # 4500 sent while down, 1000 held in memory (500 of them in flight): the rest on disk
    assert down.pending_events <= 1000 and down.blocked_seconds == 0
    assert down.spool_events >= 4500 + 500 - 1000
    assert len(files) == 1 and down.spool_bytes > 0
    assert collector.ids == list(range(1, 9001))  # nothing lost, in order
    assert collector.gaps == []
    assert stats.replayed_events == stats.spooled_events and stats.spool_events == 0
    assert stats.dropped_events == 0 and stats.pending_events == 0
    assert list(tmp_path.iterdir()) == []  # replayed and written: the spool is gone


async def test_drop_oldest_reports_exactly_what_it_dropped_and_the_reader_sees_the_gap(
        own_server, prefix) -> None:
    with trio.fail_after(40):
        collector = Collector()
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run, own_server.url, prefix)
            async with open_redis_sink(own_server.url, prefix=prefix, policy="drop_oldest",
                                       max_pending_events=1000, max_batch_events=50,
                                       max_entries_per_write=20, **FAST) as sink:
                for event in trades(1, 3000):
                    await sink.send(event)
                await sink.flush()
                await collector.wait_for(3000)
                own_server.pause()
                for event in trades(3001, 500):  # 500: one round trip, stuck in flight
                    await sink.send(event)
                await trio.sleep(0.1)
                own_server.kill()
                for event in trades(3501, 4500):  # up to 8000; never blocks: the oldest are dropped
                    await sink.send(event)
                assert sink.statistics().pending_events <= 1000
                own_server.start()
                for event in trades(8001, 1000):
                    await sink.send(event)
                await sink.flush()
            stats = sink.statistics()
            await wait_until(lambda: (collector.ids and collector.ids[-1] == 9000), 15)
            await trio.sleep(0.2)
            notices = collector.feed.statistics().notices
            nursery.cancel_scope.cancel()
    dropped = {i for r in stats.dropped_ranges for i in range(r.first, r.last + 1)}
    assert stats.dropped_events == len(dropped) > 0
    assert sum(r.count for r in stats.dropped_ranges) == stats.dropped_events
    assert len(collector.ids) == len(set(collector.ids))
    assert set(collector.ids) | dropped == set(range(1, 9001))
    assert not set(collector.ids) & dropped
    assert 3001 in collector.ids  # what was in flight was kept
    assert [(g.first, g.last, g.count, g.reason) for g in collector.gaps] == [
        (r.first, r.last, r.count, "dropped") for r in stats.dropped_ranges]
    assert notices.get("gap", 0) == len(stats.dropped_ranges)


async def test_a_slow_server_holds_the_feed_through_the_sink(own_server, prefix) -> None:
    with trio.fail_after(40):
        async with open_exchange() as exchange, trio.open_nursery() as nursery:
            async with open_feed(["btcusdt@trade"], base_url=exchange.base_url,
                                 max_queued=200) as feed, \
                    open_redis_sink(own_server.url, prefix=prefix, max_pending_events=1000,
                                    max_batch_events=50, max_entries_per_write=20,
                                    write_timeout=30) as sink:
                done = trio.Event()

                async def run() -> None:
                    with trio.CancelScope() as scope:
                        stop_scope.append(scope)
                        await publish(feed, sink)
                    done.set()

                stop_scope: list[trio.CancelScope] = []
                nursery.start_soon(run)
                await wait_until(lambda: sink.statistics().events >= 500)
                own_server.pause()
                await wait_until(lambda: sink.statistics().pending_events >= 1000)
                await trio.sleep(1.0)
                held_sink, held_feed = sink.statistics(), feed.statistics()
                await trio.sleep(0.5)
                later_sink, later_feed = sink.statistics(), feed.statistics()
                own_server.resume()
                await wait_until(lambda: sink.statistics().events >= later_sink.events + 2000,
                                 15)
                stop_scope[0].cancel()
                await done.wait()
                await sink.flush()
            final = sink.statistics()
            feed_final = feed.statistics()
        collector = Collector()
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run, own_server.url, prefix)
            await collector.wait_for(final.events, 15)
            nursery.cancel_scope.cancel()
    # Held: the sink is full and stays full, nothing written, and the feed waits on it.
    assert held_sink.pending_events == later_sink.pending_events == 1000
    assert held_sink.events == later_sink.events
    assert later_sink.blocked_seconds > held_sink.blocked_seconds > 0.5
    assert later_feed.events == held_feed.events  # the consumer of the feed is stopped
    assert later_feed.blocked_seconds > held_feed.blocked_seconds or later_feed.queued >= 200
    # Nothing lost on either side.
    assert final.dropped_events == 0 and feed_final.dropped == 0
    assert collector.gaps == []
    first = collector.ids[0]
    assert collector.ids == list(range(first, first + final.events))


async def test_a_full_server_under_noeviction_holds_the_sink_until_there_is_room(
        own_server, prefix) -> None:
    import coredis

    sent = 0

    async def produce(sink: Any) -> None:
        nonlocal sent
        for event in trades(1, 6000):
            await sink.send(event)
            sent = event.trade_id

    with trio.fail_after(40):
        async with coredis.Redis.from_url(own_server.url) as admin:
            await admin.config_set({"maxmemory-policy": "noeviction"})
            used = int((await admin.info("memory"))["used_memory"])
            await admin.config_set({"maxmemory": str(used + 300_000)})
            collector = Collector()
            async with trio.open_nursery() as nursery:
                await nursery.start(collector.run, own_server.url, prefix)
                async with open_redis_sink(own_server.url, prefix=prefix,
                                           max_pending_events=1000, max_batch_events=50,
                                           max_entries_per_write=20, **FAST) as sink:
                    nursery.start_soon(produce, sink)
                    await wait_until(lambda: sink.statistics().pending_events >= 1000, 15)
                    await trio.sleep(0.3)
                    held = sink.statistics()
                    assert sent < 6000 and held.pending_events == 1000
                    assert held.reconnects >= 1 and held.events < 6000
                    await admin.config_set({"maxmemory": "0"})
                    await wait_until(lambda: sent == 6000, 15)
                    await sink.flush()
                await collector.wait_for(6000, 15)
                nursery.cancel_scope.cancel()
    stats = sink.statistics()
    assert collector.ids == list(range(1, 6001)) and collector.gaps == []
    assert stats.dropped_events == 0 and stats.events == 6000


async def test_a_spool_left_by_a_closed_sink_is_replayed_by_the_next_one(
        own_server, prefix, tmp_path) -> None:
    import coredis

    spool = tmp_path / "sink.spool"
    options = dict(policy="spool", spool=spool, max_pending_events=100, max_batch_events=10,
                   max_entries_per_write=10, close_timeout=0.3, **FAST)
    with trio.fail_after(30):
        own_server.pause()
        async with open_redis_sink(own_server.url, prefix=prefix, **options) as first:
            await first.send_batch(trades(1, 500))  # 100 held in memory, the rest spooled
            left = first.statistics()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sink.spool.1"]
        own_server.resume()
        async with open_redis_sink(own_server.url, prefix=prefix, **options) as second:
            await second.flush()
            replayed = second.statistics()
        async with coredis.Redis.from_url(own_server.url) as client:
            entries = await client.xrange(stream_key("btcusdt@trade", prefix=prefix))
    ids = [item["trade_id"] for entry in entries
           for item in orjson.loads(entry.field_values[b"p"])]
    # The first sink spooled the oldest events and held the newest in memory, lost when it
    # closed (reported in pending_events); the next sink wrote the whole spool, in order.  The
    # first sink's round in flight (the spool's start) may also land when the writes resume:
    # at least once, never out of order.
    spooled = left.spool_events
    assert spooled + left.pending_events == 500 and spooled >= 400
    assert replayed.replayed_events == spooled
    assert ids[-spooled:] == list(range(1, spooled + 1))
    assert set(ids) == set(range(1, spooled + 1))
    assert list(tmp_path.iterdir()) == []
