"""The supervised feed under every fault the local exchange can inject.

Each test runs the real feed against the real exchange over loopback sockets,
on trio's autojump clock (``autojump_clock``), so backoff schedules, watchdogs
and a 24-hour rotation take milliseconds, and every ``fail_after`` bound is in
that clock's seconds.

The exchange runs one *shared* market: trade ids continue across
connections, so after every fault the test checks the feed's central promise
with :func:`check_exact`: the trades handed out are the server's sequence
exactly once each, minus what the feed itself reported missing, and every
message read is accounted for.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_feed import (
    AttemptLimiter,
    ConnectionClosed,
    SlowConsumerError,
    SubscriptionError,
    open_feed,
)
from trio_feed.binance import BookTicker, PartialDepth, Trade
from trio_feed.exchange import LocalExchange, open_exchange

TRADES = ["btcusdt@trade", "ethusdt@trade"]
MODES = ["channel", "inline"]


class Collected:
    """What a consumer task saw: trade ids per stream, and every event."""

    def __init__(self) -> None:
        self.ids: dict[str, list[int]] = defaultdict(list)
        self.events: list[Any] = []
        self.arrived = trio.Event()
        self.target = 0

    def add(self, event: Any) -> None:
        self.events.append(event)
        if isinstance(event, Trade):
            self.ids[event.stream].append(event.trade_id)
        if len(self.events) >= self.target:
            self.arrived.set()

    async def wait_for(self, more: int) -> None:
        """Wait until ``more`` further events have arrived."""
        self.target = len(self.events) + more
        self.arrived = trio.Event()
        if len(self.events) >= self.target:
            return
        await self.arrived.wait()


async def consume(feed: Any, seen: Collected, *, pause: float = 0.0) -> None:
    async for event in feed:
        seen.add(event)
        if pause:
            await trio.sleep(pause)


def check_exact(seen: Collected, stats: Any) -> None:
    """No duplicate, no unreported loss, and every message read accounted for."""
    for name, ids in seen.ids.items():
        assert ids == sorted(set(ids)), f"{name}: a trade id repeated or out of order"
        span = ids[-1] - ids[0] + 1
        missing = stats.streams[name].missing
        assert len(ids) + missing == span, (name, len(ids), missing, span)
    assert stats.messages == (
        stats.events + stats.duplicates + stats.dropped + stats.conflated + stats.discarded
    ), stats


async def run_with_fault(
    exchange: LocalExchange,
    fault: Callable[[], Awaitable[object]],
    *,
    mode: str,
    streams: list[str] = TRADES,
    before: int = 200,
    after: int = 400,
    **options: Any,
) -> tuple[Collected, Any]:
    seen = Collected()
    async with open_feed(streams, mode=mode, base_url=exchange.base_url, **options) as feed:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, feed, seen)
            await seen.wait_for(before)
            await fault()
            await seen.wait_for(after)
            nursery.cancel_scope.cancel()
    return seen, feed.statistics()


def sleeping(seconds: float) -> Callable[[], Awaitable[None]]:
    async def sleep() -> None:
        await trio.sleep(seconds)

    return sleep


# -- reconnects after each fault -------------------------------------------------------


def _faults(exchange: LocalExchange) -> dict[str, tuple[Callable[[], Awaitable[object]], str]]:
    async def pause_then_resume() -> None:
        exchange.pause_sending()
        await trio.sleep(30)  # > stale_after for trades (the feed's watchdog fires)
        exchange.resume_sending()

    async def refuse_then_drop() -> None:
        exchange.refuse_connections(seconds=20)
        await exchange.drop_connections(abrupt=True)

    async def close_1008() -> None:
        await exchange.close_connections(1008, "Too many requests")

    return {
        "reset": (lambda: exchange.drop_connections(abrupt=True), "closed 1006"),
        "fin": (exchange.drop_connections, "closed 1006"),
        "close 1011": (lambda: exchange.close_connections(1011, "internal error"), "closed 1011"),
        "close 1008": (close_1008, "closed 1008"),
        "silence": (pause_then_resume, "stale"),
        "refused for 20 s": (refuse_then_drop, "closed 1006"),
    }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "fault", ["reset", "fin", "close 1011", "close 1008", "silence", "refused for 20 s"]
)
async def test_feed_recovers_from_fault_with_exact_accounting(
    fault: str, mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        async with open_exchange(seed=3, rate=50, shared_market=True) as exchange:
            action, cause = _faults(exchange)[fault]
            seen, stats = await run_with_fault(
                exchange, action, mode=mode, stale_after=20, rng=random.Random(1)
            )
    assert stats.reconnects.get(cause, 0) >= 1, stats.reconnects
    assert sum(s.missing for s in stats.streams.values()) > 0  # the outage lost trades...
    assert stats.missing == sum(s.missing for s in stats.streams.values())
    check_exact(seen, stats)  # ...and every one of them was reported
    if fault == "silence":
        assert stats.stale == 1
    if fault == "refused for 20 s":
        assert stats.connect_failures >= 1
        assert exchange.statistics().connections_refused == stats.connect_failures


@pytest.mark.parametrize("mode", MODES)
async def test_reset_in_the_middle_of_a_burst(mode: str) -> None:
    """Real clock, a market as fast as the loop allows: the reset lands mid-chunk."""
    with trio.fail_after(30):
        async with open_exchange(seed=8, rate=5000, shared_market=True) as exchange:
            async def reset_mid_burst() -> None:
                await trio.sleep(0.013)
                await exchange.drop_connections(abrupt=True)

            seen, stats = await run_with_fault(
                exchange, reset_mid_burst, mode=mode, before=2000, after=2000
            )
    assert stats.reconnects.get("closed 1006", 0) >= 1
    check_exact(seen, stats)


async def test_max_lifetime_close_is_replaced(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with open_exchange(seed=4, rate=10, shared_market=True,
                                 max_lifetime=100.0) as exchange:
            seen, stats = await run_with_fault(
                exchange, sleeping(150), mode="channel", before=50, after=50,
                rotate_after=None,
            )
    assert exchange.statistics().lifetime_closes >= 1
    assert stats.reconnects.get("closed 1001", 0) >= 1
    check_exact(seen, stats)


# -- rotation --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_rotation_before_24_hours_is_make_before_break(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(2 * 86400):
        # One tick every 20 s for a day; the exchange drops connections at 24 h as Binance does.
        async with open_exchange(seed=5, rate=0.05, shared_market=True,
                                 max_lifetime=24 * 3600.0) as exchange:
            seen, stats = await run_with_fault(
                exchange, sleeping(24.5 * 3600), mode=mode,
                streams=["btcusdt@trade"], before=10, after=10,
            )
    assert stats.rotations == 1 and stats.reconnects == {"rotation": 1}
    assert exchange.statistics().lifetime_closes == 0  # we left before being thrown out
    assert stats.missing == 0
    check_exact(seen, stats)
    ids = seen.ids["btcusdt@trade"]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


@pytest.mark.parametrize("mode", MODES)
async def test_server_shutdown_rotates_at_once_and_overlap_is_deduplicated(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        async with open_exchange(seed=6, rate=50, shared_market=True) as exchange:
            seen, stats = await run_with_fault(
                exchange, exchange.announce_shutdown, mode=mode,
                streams=[*TRADES, "btcusdt@depth@100ms", "btcusdt@bookTicker"],
            )
            attempts = exchange.statistics().connection_attempts
    assert stats.rotations == 1 and stats.reconnects == {"server shutdown": 1}
    assert attempts == 2
    assert stats.missing == 0  # make-before-break: nothing lost
    check_exact(seen, stats)


async def test_rotation_waits_for_the_old_connection_to_catch_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """For its first 35 s the consumer takes 10 events/s against ~40 produced, so
    the old connection falls behind (its backlog is full: ticks wait in the
    server's queue and TCP buffers).  At 30 s the rotation's new connection starts
    delivering from the current tick.  Retiring the old one then would lose
    everything it had not read; the shard lets it catch up first."""
    seen = Collected()

    async def consume_slowly_then_fast(feed: Any) -> None:
        slow_until = trio.current_time() + 35
        async for event in feed:
            seen.add(event)
            if trio.current_time() < slow_until:
                await trio.sleep(0.1)

    with trio.fail_after(3600):
        async with open_exchange(seed=6, rate=50, shared_market=True) as exchange:
            async with open_feed(["btcusdt@trade"], base_url=exchange.base_url,
                                 max_queued=20, max_backlog_bytes=4000,
                                 rotate_after=30, rotation_timeout=600) as feed:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume_slowly_then_fast, feed)
                    await trio.sleep(50)
                    nursery.cancel_scope.cancel()
            stats = feed.statistics()
            pongs_missed = exchange.statistics().pongs_missed
    assert stats.rotations >= 1 and stats.blocked_seconds > 20
    assert pongs_missed == 0
    assert stats.missing == 0
    check_exact(seen, stats)


# -- reconnect storm ---------------------------------------------------------------------


async def test_reconnect_storm_backs_off_and_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with open_exchange(seed=7, rate=10, shared_market=True) as exchange:
            async def storm() -> None:
                exchange.accept_and_close(50)
                await exchange.drop_connections(abrupt=True)

            seen, stats = await run_with_fault(
                exchange, storm, mode="channel", before=20, after=100, rng=random.Random(2),
            )
            times = exchange.attempt_times
    storm_times = times[1:]  # the first attempt opened the feed
    assert len(storm_times) == 51  # 50 accepted and dropped, then one that stays
    gaps = [b - a for a, b in itertools.pairwise(storm_times)]
    # Equal jitter: gap n is in [d/2, d], d = min(30, 0.5 * 2**n); never reset, since no
    # storm connection delivered data for healthy_after seconds.
    for n, gap in enumerate(gaps):
        ceiling = min(30.0, 0.5 * 2 ** (n + 1))
        assert ceiling / 2 - 0.01 <= gap <= ceiling + 1.0, (n, gap)
    assert max(sum(1 for t in times if s <= t < s + 300) for s in times) < 300
    assert stats.reconnects["closed 1006"] == 51
    check_exact(seen, stats)


async def test_attempt_budget_caps_the_rate_even_with_no_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = AttemptLimiter(max_attempts=10, window=60.0)
    with trio.fail_after(3600):
        async with open_exchange(seed=7, rate=10, shared_market=True) as exchange:
            async def storm() -> None:
                exchange.accept_and_close(30)
                await exchange.drop_connections()

            seen, stats = await run_with_fault(
                exchange, storm, mode="channel", before=20, after=50,
                backoff_initial=0.001, backoff_cap=0.001, attempt_limiter=limiter,
            )
            times = exchange.attempt_times
    assert max(sum(1 for t in times if s <= t < s + 60) for s in times) <= 10
    assert limiter.attempts == len(times) == 32
    check_exact(seen, stats)


# -- subscriptions ---------------------------------------------------------------------


def _many_streams(count: int) -> tuple[list[str], list[str]]:
    """``count`` valid, distinct streams over a few symbols, and those symbols."""
    symbols = [f"s{i:02d}usdt" for i in range(60)]
    kinds = ["trade", "aggTrade", "bookTicker", "depth", "depth@100ms", "depth5", "depth10",
             "depth20", "depth5@100ms", "miniTicker", "ticker", "avgPrice", "ticker_1h",
             "ticker_4h", "ticker_1d"] + [f"kline_{i}" for i in ("1s", "1m", "3m", "5m", "15m",
                                                              "30m", "1h", "2h", "4h", "6h")]
    names = [f"{s}@{k}" for s in symbols for k in kinds]
    return names[:count], symbols


@pytest.mark.parametrize("max_url_length", [0, 4096])
async def test_1500_streams_shard_and_resubscribe_under_five_messages_a_second(
    max_url_length: int, autojump_clock: trio.testing.MockClock,
) -> None:
    """With ``max_url_length=0`` every stream goes by SUBSCRIBE: 6 messages for the
    first shard, which the token bucket must spread over more than a second."""
    names, symbols = _many_streams(1500)
    with trio.fail_after(3600):
        async with open_exchange(seed=1, rate=0.2, shared_market=True, symbols=symbols,
                                 max_client_messages_per_second=5) as exchange:
            async with open_feed(names, base_url=exchange.base_url, stale_after=600,
                                 max_url_length=max_url_length) as feed:
                first = exchange.open_connections()
                await exchange.drop_connections(abrupt=True)
                with trio.move_on_after(120):
                    async for _ in feed:
                        pass
                again = exchange.open_connections()
                stats = feed.statistics()
            requests = exchange.subscribe_requests
            exchange_stats = exchange.statistics()
    assert sorted(len(c.subscriptions) for c in first) == [476, 1024]
    assert sorted(len(c.subscriptions) for c in again) == [476, 1024]
    assert {s for c in again for s in c.subscriptions} == set(names)
    assert stats.connections == 2 and stats.reconnects == {"closed 1006": 2}
    assert exchange.max_client_rate(1.0) <= 5
    assert exchange_stats.rate_limit_closes == 0
    subscribes = [r for r in requests if r[2] == "SUBSCRIBE"]
    assert subscribes and all(len(r[3]) <= 200 for r in subscribes)
    if max_url_length == 0:
        assert len(subscribes) == 2 * (6 + 3)  # (1024 + 476 streams) / 200, twice
        assert sum(len(r[3]) for r in subscribes) == 2 * 1500


async def test_too_fast_client_is_closed_with_1008_and_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The control: without the bucket (50/s) the exchange's 5/s rule trips."""
    names, symbols = _many_streams(1020)
    with trio.fail_after(3600):
        async with open_exchange(seed=1, rate=0.2, shared_market=True, symbols=symbols,
                                 max_client_messages_per_second=5) as exchange:
            async with open_feed(names[:100], base_url=exchange.base_url, stale_after=600,
                                 send_rate=50, send_burst=50, retry_first_connect=True) as feed:
                await feed.subscribe(names[100:1000])  # 5 SUBSCRIBEs at once...
                await feed.subscribe(names[1000:])  # ...and a sixth within the second
                with trio.move_on_after(30):
                    async for _ in feed:
                        pass
                stats = feed.statistics()
            closes = exchange.statistics().rate_limit_closes
    assert closes >= 1
    assert stats.reconnects.get("closed 1008", 0) >= 1


@pytest.mark.parametrize("mode", MODES)
async def test_live_subscribe_and_unsubscribe(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        async with open_exchange(seed=2, rate=20, shared_market=True) as exchange:
            async with open_feed(["btcusdt@trade"], mode=mode,
                                 base_url=exchange.base_url) as feed:
                seen = Collected()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, feed, seen)
                    await seen.wait_for(20)
                    await feed.subscribe(["ethusdt@trade"])
                    await seen.wait_for(200)
                    await feed.unsubscribe(["btcusdt@trade"])
                    count = len(seen.ids["btcusdt@trade"])
                    await seen.wait_for(100)
                    nursery.cancel_scope.cancel()
                assert feed.streams == ["ethusdt@trade"]
                stats = feed.statistics()
    assert len(seen.ids["btcusdt@trade"]) == count  # nothing after the UNSUBSCRIBE reply
    assert len(seen.ids["ethusdt@trade"]) > 50
    assert stats.control == 2  # two replies, matched by id
    check_exact(seen, stats)


async def test_subscription_error_reply_raises_and_is_not_kept() -> None:
    """An independent server (trio-websocket) that refuses every SUBSCRIBE."""
    import trio_websocket

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                request_id = __import__("orjson").loads(message)["id"]
                await ws.send_message(
                    f'{{"code":2,"msg":"Invalid request: unknown symbol","id":{request_id}}}'
                )
        except trio_websocket.ConnectionClosed:
            pass

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_websocket.serve_websocket, handler,
                                         "127.0.0.1", 0, None)
            base = f"ws://127.0.0.1:{server.port}"
            async with open_feed(["btcusdt@trade"], base_url=base) as feed:
                with pytest.raises(SubscriptionError) as info:
                    await feed.subscribe(["ethusdt@trade"])
                assert feed.streams == ["btcusdt@trade"]
            nursery.cancel_scope.cancel()
    assert info.value.code == 2 and "unknown symbol" in info.value.msg


# -- watchdog and pings ------------------------------------------------------------------


async def test_unanswered_pings_replace_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with open_exchange(seed=2, rate=5, shared_market=True) as exchange:
            async def stop_answering() -> None:
                exchange.ignore_client_pings()
                await trio.sleep(100)
                exchange.ignore_client_pings(False)

            seen, stats = await run_with_fault(
                exchange, stop_answering, mode="channel", before=20, after=200,
                ping_interval=10, pong_timeout=15,
            )
    assert stats.reconnects.get("ping timeout", 0) >= 1
    assert stats.ping_rtt_p50 is not None and stats.ping_rtt_p50 < 1
    check_exact(seen, stats)


async def test_lag_above_threshold_is_counted(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with open_exchange(seed=2, rate=20, shared_market=True) as exchange:
            market = exchange.shared_market
            assert market is not None
            # Pretend the local clock is 7 s ahead of the exchange's event times.
            _, stats = await run_with_fault(
                exchange, trio.lowlevel.checkpoint, mode="channel", before=10, after=50,
                wall_clock=lambda: market.time_ms / 1000 + 7.0, lag_threshold=5.0,
            )
    assert stats.lagging == stats.events
    assert stats.lag_p50 is not None and 6900 < stats.lag_p50 < 7200


# -- slow consumers ---------------------------------------------------------------------


async def _slow(policy: str, streams: list[str], **options: Any) -> tuple[Collected, Any, Any]:
    """A consumer 10x slower than the feed for 120 s, then the exchange pauses while
    the consumer catches up, then sends again: so every message the policy gave
    up is followed, on its stream, by one that was delivered."""
    seen = Collected()
    async with open_exchange(seed=9, rate=100, shared_market=True, ping_interval=5,
                             pong_timeout=10) as exchange:
        async with open_feed(streams, base_url=exchange.base_url, policy=policy,
                             max_queued=50, **options) as feed:
            try:
                with trio.move_on_after(120):
                    await consume(feed, seen, pause=0.05)  # 20 events/s against ~200/s
                exchange.pause_sending()
                while True:  # take what is queued, without waiting for more
                    try:
                        seen.add(feed.receive_nowait())
                    except trio.WouldBlock:
                        break
                assert feed.statistics().queued == 0
                exchange.resume_sending()
                seen.target = len(seen.events) + 40
                while len(seen.events) < seen.target:
                    seen.add(await feed.__anext__())
            except SlowConsumerError as exc:
                seen.events.append(exc)
        exchange_stats = exchange.statistics()
    return seen, feed.statistics(), exchange_stats


async def test_slow_consumer_block_loses_nothing_and_pongs_keep_flowing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        seen, stats, exchange_stats = await _slow("block", TRADES)
    assert stats.dropped == 0 and stats.missing == 0
    assert stats.stalls >= 1 and stats.stall_seconds > 60
    assert exchange_stats.pings_sent >= 20 and exchange_stats.pongs_missed == 0
    check_exact(seen, stats)


async def test_slow_consumer_drop_newest_counts_exactly_what_it_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        seen, stats, exchange_stats = await _slow("drop_newest", TRADES)
    assert stats.dropped > 0
    assert stats.missing == stats.dropped  # every gap in the ids is a drop we counted
    assert exchange_stats.pongs_missed == 0
    check_exact(seen, stats)


async def test_slow_consumer_keep_latest_conflates_snapshot_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    streams = ["btcusdt@bookTicker", "ethusdt@bookTicker", "btcusdt@depth5@100ms"]
    with trio.fail_after(3600):
        seen, stats, exchange_stats = await _slow("keep_latest", streams)
    assert stats.conflated > 0 and stats.dropped == 0
    assert exchange_stats.pongs_missed == 0
    for name in streams:
        positions = [e.update_id if isinstance(e, BookTicker) else e.last_update_id
                     for e in seen.events if e.stream == name]
        assert positions == sorted(set(positions))  # the latest wins, never an older one
    assert all(isinstance(e, (BookTicker, PartialDepth)) for e in seen.events)
    check_exact(seen, stats)


async def test_keep_latest_is_refused_for_trades_and_diff_depth() -> None:
    for stream in ("btcusdt@trade", "btcusdt@depth", "btcusdt@aggTrade"):
        with pytest.raises(ValueError, match="keep_latest"):
            open_feed([stream], policy="keep_latest")


async def test_slow_consumer_disconnect_raises_after_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        seen, stats, _ = await _slow("disconnect", TRADES)
    assert isinstance(seen.events[-1], SlowConsumerError)
    delivered = seen.events[:-1]
    assert 50 <= len(delivered) < 200
    assert stats.dropped > 0 and stats.connections == 0
    seen.events = delivered
    check_exact(seen, stats)


# -- fatal errors ---------------------------------------------------------------------


async def test_fatal_handshake_status_is_raised_not_retried() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=1) as exchange:
            from trio_feed import HandshakeError

            with pytest.raises(HandshakeError) as info:
                async with open_feed(["btcusdt@trade"], retry_first_connect=True,
                                     url=f"{exchange.base_url}/nowhere"):
                    pass
    assert info.value.status == 404


async def test_no_reconnect_means_the_first_close_ends_the_feed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):
        async with open_exchange(seed=3, rate=50, shared_market=True) as exchange:
            seen = Collected()
            async with open_feed(TRADES, base_url=exchange.base_url, reconnect=False) as feed:
                async for event in feed:
                    seen.add(event)
                    if len(seen.events) == 50:
                        break
                await exchange.close_connections(1011, "bye")
                with pytest.raises(ConnectionClosed) as info:
                    await consume(feed, seen)
            stats = feed.statistics()
    assert info.value.code == 1011
    check_exact(seen, stats)
