"""The network fault matrix against the hostile server: one test per fault.

Every test ends with :func:`~tests.faults.identity.assert_accounted` against
what the server published (``server.sent``): per stream, the ids delivered
are the published sequence exactly once each, in order, minus exactly what
the feed reported missing, and every message read is accounted for.  The
faults run on trio's autojump clock, except the reset in the middle of a
burst, which needs real time for the reset to land inside a chunk.
"""

from __future__ import annotations

import functools
import itertools
import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_feed import ConnectionClosed, SlowConsumerError, open_feed
from trio_feed.binance import BookTicker

from .hostile import Hostile, Peer, Seen, consume, max_in_window, open_hostile
from .identity import assert_accounted

TRADES = ["btcusdt@trade", "ethusdt@trade"]


async def _with_fault(server: Hostile, fault: Any, *, streams: list[str] = TRADES,
                      before: int = 100, after: int = 200, **options: Any) -> tuple[Seen, Any]:
    seen = Seen()
    feed_of = options.pop("feed_of", [])
    async with open_feed(streams, base_url=server.base_url, rng=random.Random(7),
                         **options) as feed:
        feed_of.append(feed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, feed, seen)
            await seen.wait_for(before)
            await fault()
            await seen.wait_for(after)
            nursery.cancel_scope.cancel()
    return seen, feed.statistics()


def _account(stats: Any, seen: Seen, server: Hostile) -> None:
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


# -- the connection ends ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["channel", "inline"])
async def test_reset_in_the_middle_of_a_burst(mode: str) -> None:
    """Real time: 20 trades per millisecond tick, and an RST while they stream."""
    with trio.fail_after(30):
        async with open_hostile(tick=0.001, burst=20) as server:
            async def reset() -> None:
                await trio.sleep(0.0137)
                server.reset_all()

            seen, stats = await _with_fault(server, reset, mode=mode, before=500, after=2000)
    assert stats.reconnects.get("closed 1006", 0) >= 1
    assert stats.missing > 0  # the burst in flight was lost, and reported
    _account(stats, seen, server)


@pytest.mark.parametrize("code", [1001, 1006, 1011])
async def test_close_code_is_retried(code: int, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(120):
        async with open_hostile(tick=0.01) as server:
            async def close() -> None:
                if code == 1006:
                    for peer in server.live():
                        peer.drop()  # no Close frame at all
                else:
                    await server.close_all(code, "bye")

            seen, stats = await _with_fault(server, close)
    assert stats.reconnects == {f"closed {code}": 1}
    assert stats.missing > 0
    _account(stats, seen, server)


async def test_close_1000_ends_the_feed_after_what_was_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A normal closure says the stream is over: raised, after every event read before it."""
    with trio.fail_after(120):
        async with open_hostile(tick=0.01) as server:
            seen = Seen()
            async with open_feed(TRADES, base_url=server.base_url) as feed:
                async def close_later() -> None:
                    await seen.wait_for(100)
                    await server.close_all(1000, "done")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(close_later)
                    with pytest.raises(ConnectionClosed) as info:
                        await consume(feed, seen)
            stats = feed.statistics()
            written = {s: ids for s, ids in server.peers[0].written.items()}
    assert info.value.code == 1000
    assert len(server.peers) == 1
    assert {s: ids for s, ids in seen.ids.items()} == written  # every event written was handed out
    _account(stats, seen, server)


async def test_reconnect_storm_backs_off_and_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The next 20 connections are accepted and reset at once."""
    with trio.fail_after(3600):
        async with open_hostile(tick=0.05) as server:
            server.script = _reset_if_storming
            seen, stats = await _with_fault(server, lambda: _storm(server), before=20,
                                            after=100)
    times = server.attempts[1:]
    assert len(times) == 21
    for n, gap in enumerate(b - a for a, b in itertools.pairwise(times)):
        ceiling = min(30.0, 0.5 * 2 ** (n + 1))
        assert ceiling / 2 - 0.01 <= gap <= ceiling + 0.5, (n, gap)
    assert stats.reconnects == {"closed 1006": 21}
    _account(stats, seen, server)


async def _storm(server: Hostile) -> None:
    server.storm = 20  # type: ignore[attr-defined]
    server.reset_all()


async def _reset_if_storming(peer: Peer) -> None:
    server = peer.server
    if getattr(server, "storm", 0) > 0:
        server.storm -= 1  # type: ignore[attr-defined]
        peer.reset()


# -- what the server sends ----------------------------------------------------------------


async def test_overlap_replay_after_reconnect_delivers_no_duplicate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each new connection first re-sends the last 100 events of each stream (1 s of
    them: the reconnect takes under half a second, so most were delivered already)."""
    with trio.fail_after(120):
        async with open_hostile(tick=0.01) as server:
            server.replay = 100

            async def reset() -> None:
                server.reset_all()

            seen, stats = await _with_fault(server, reset)
    assert stats.duplicates > 0
    assert sum(len(ids) for ids in server.peers[1].written.values()) > 0
    _account(stats, seen, server)


async def test_skipped_ids_are_reported_missing_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with open_hostile(tick=0.01, burst=3) as server:
            async def skip() -> None:
                server.drop_next(4)

            seen, stats = await _with_fault(server, skip)
    for stream in TRADES:
        assert stats.streams[stream].missing == len(server.skipped[stream]) == 12
    assert stats.reconnects == {}
    _account(stats, seen, server)


async def test_half_open_connection_is_replaced(autojump_clock: trio.testing.MockClock) -> None:
    """TCP stays open, nothing arrives, and the server reads nothing either."""
    with trio.fail_after(600):
        async with open_hostile(tick=0.05) as server:
            async def half_open() -> None:
                for peer in server.live():
                    peer.paused = True
                    peer.deaf = True

            seen, stats = await _with_fault(server, half_open, close_timeout=1)
    assert stats.reconnects == {"stale": 1}
    _account(stats, seen, server)


async def test_silent_after_handshake_is_replaced(autojump_clock: trio.testing.MockClock) -> None:
    def silent_first(peer: Peer) -> None:
        peer.paused = peer.number == 1

    with trio.fail_after(600):
        async with open_hostile(tick=0.05) as server:
            server.setup = silent_first
            seen, stats = await _with_fault(server, trio.lowlevel.checkpoint,
                                            streams=["btcusdt@depth@100ms"])
    assert stats.reconnects == {"stale": 1}
    assert server.attempts[1] - server.attempts[0] < 62  # not armed yet: 60 s, not never
    _account(stats, seen, server)


@pytest.mark.parametrize("rate", [5, 50])
async def test_ping_flood_keeps_data_flowing_under_five_frames_a_second(
    rate: int, autojump_clock: trio.testing.MockClock
) -> None:
    """The server pings ``rate`` times a second.  Data keeps flowing, the client's pongs
    stay within the 5-frames-per-second budget (the server would close 1008)."""
    with trio.fail_after(600):
        async with open_hostile(tick=0.01, ping_interval=1 / rate) as server:
            seen, stats = await _with_fault(server, functools.partial(trio.sleep, 30),
                                            after=1000)
    assert stats.reconnects == {}, stats.reconnects
    assert server.rate_limit_closes == 0
    assert max_in_window(server.peers[0].client_times) <= 5
    assert stats.missing == 0
    # Nothing piled up behind the pongs: what the server wrote is what was read.
    assert stats.messages >= sum(len(ids) for ids in server.peers[0].written.values()) - 50
    _account(stats, seen, server)


async def test_huge_and_fragmented_messages() -> None:
    """Every message in 3 fragments with pings between; one 1 MiB message (delivered) and
    one past max_message_size, 2 MiB here (1009: the connection is replaced, its id
    reported missing).  In real time: on the autojump clock a transfer of megabytes
    takes many clock jumps."""
    padded: list[int] = []
    with trio.fail_after(30):
        async with open_hostile(tick=0.01) as server:
            server.setup = lambda peer: setattr(peer, "fragments", 3)

            async def huge() -> None:
                last = server.sent["btcusdt@trade"][-1]
                padded.extend([last + 5, last + 20])
                server.padding[last + 5] = 1024 * 1024
                server.padding[last + 20] = 3 * 1024 * 1024

            seen, stats = await _with_fault(server, huge, after=400,
                                            max_message_size=2 * 1024 * 1024)
    assert padded[0] in seen.ids["btcusdt@trade"]
    assert padded[1] not in seen.ids["btcusdt@trade"]
    assert stats.reconnects == {"protocol error": 1}
    assert stats.streams["btcusdt@trade"].missing >= 1
    _account(stats, seen, server)


# -- the client's own limits --------------------------------------------------------------


def _names(count: int) -> list[str]:
    return [f"s{i:04d}usdt@trade" for i in range(count)]


@pytest.mark.parametrize("max_url_length", [0, 4096])
async def test_1500_streams_shard_and_resubscribe_under_five_frames_a_second(
    max_url_length: int, autojump_clock: trio.testing.MockClock
) -> None:
    names = _names(1500)
    with trio.fail_after(600):
        async with open_hostile(tick=1.0) as server:
            async def reset() -> None:
                server.reset_all()
                for _ in range(600):  # poll the server until both shards resubscribed
                    live = server.live()
                    if len(live) == 2 and all(len(p.streams) >= 476 for p in live):
                        break
                    await trio.sleep(1)

            seen, stats = await _with_fault(server, reset, streams=names, before=1500,
                                            after=3000, max_url_length=max_url_length)
    live = server.peers[-2:]
    assert sorted(len(p.streams) for p in live) == [476, 1024]
    assert {s for p in live for s in p.streams} == set(names)
    assert stats.reconnects == {"closed 1006": 2}
    assert server.rate_limit_closes == 0
    assert all(max_in_window(p.client_times) <= 5 for p in server.peers)
    subscribes = sum(1 for p in server.peers for _, op, _ in p.frames if op == 1)
    if max_url_length == 0:
        assert subscribes == 2 * (6 + 3)  # (1024 + 476) / 200 per round, two rounds
    _account(stats, seen, server)


async def test_more_than_five_frames_a_second_is_closed_1008_and_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The control: without the token bucket the server's 5/s rule trips."""
    names = _names(1020)
    feed_of: list[Any] = []
    with trio.fail_after(600):
        async with open_hostile(tick=1.0) as server:
            async def subscribe_in_bulk() -> None:
                await feed_of[0].subscribe(names[100:1000])  # 5 SUBSCRIBEs at once...
                await feed_of[0].subscribe(names[1000:])  # ...and a sixth within the second

            seen, stats = await _with_fault(
                server, subscribe_in_bulk, streams=names[:100], before=100, after=2000,
                send_rate=50, send_burst=50, feed_of=feed_of)
    assert server.rate_limit_closes >= 1
    assert stats.reconnects.get("closed 1008", 0) >= 1
    _account(stats, seen, server)


# -- slow consumers ---------------------------------------------------------------------


async def _slow(server: Hostile, policy: str, streams: list[str], **options: Any) -> tuple[
        Seen, Any, BaseException | None]:
    """A consumer ~10x slower than the server for 40 s; then the server pauses while the
    consumer catches up, then sends again."""
    seen = Seen()
    error: BaseException | None = None
    async with open_feed(streams, base_url=server.base_url, policy=policy, max_queued=50,
                         rng=random.Random(8), **options) as feed:
        try:
            with trio.move_on_after(40):
                await consume(feed, seen, pause=0.05)
            for peer in server.live():
                peer.paused = True
            while True:
                try:
                    seen.add(feed.receive_nowait())
                except trio.WouldBlock:
                    break
            for peer in server.live():
                peer.paused = False
            target = len(seen.events) + 40
            while len(seen.events) < target:
                seen.add(await feed.receive())
        except SlowConsumerError as exc:
            error = exc
    return seen, feed.statistics(), error


async def test_slow_consumer_block_loses_nothing_and_blocked_time_is_not_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Reading stops for long stretches (backlog full): the watchdog must not count
    that as the server's silence, even for depth (10 s)."""
    with trio.fail_after(3600):
        async with open_hostile(tick=0.01) as server:
            seen, stats, error = await _slow(server, "block",
                                             ["btcusdt@trade", "btcusdt@depth@100ms"],
                                             max_backlog_bytes=3000)
    assert error is None
    assert stats.blocked_seconds > 20 and stats.reconnects == {}
    assert stats.dropped == 0 and stats.missing == 0
    _account(stats, seen, server)


async def test_slow_consumer_drop_newest_counts_what_it_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with open_hostile(tick=0.01) as server:
            seen, stats, error = await _slow(server, "drop_newest", TRADES)
    assert error is None and stats.dropped > 0
    assert stats.missing == stats.dropped
    _account(stats, seen, server)


async def test_slow_consumer_keep_latest_conflates_snapshot_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    streams = ["btcusdt@bookTicker", "ethusdt@bookTicker"]
    with trio.fail_after(3600):
        async with open_hostile(tick=0.01) as server:
            seen, stats, error = await _slow(server, "keep_latest", streams)
    assert error is None and stats.conflated > 0 and stats.dropped == 0
    assert all(isinstance(e, BookTicker) for e in seen.events)
    # Conflated ticks are replaced, not missing: the ids only grow, and the count holds.
    for stream in streams:
        ids = seen.ids[stream]
        assert ids == sorted(set(ids)) and set(ids) <= set(server.sent[stream])
    assert_accounted(stats, {}, server.sent, received=len(seen.events))


async def test_slow_consumer_disconnect_raises_after_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with open_hostile(tick=0.01) as server:
            seen, stats, error = await _slow(server, "disconnect", TRADES)
    assert isinstance(error, SlowConsumerError)
    assert 50 <= len(seen.events) < 200
    assert stats.dropped > 0 and stats.connections == 0
    _account(stats, seen, server)
