"""The watchdog against the hostile server: liveness is complete messages, per stream kind.

Each fault starts on the first connection once the feed has delivered; the
second connection is a healthy one, so the time between the fault and the
second connection attempt is the time the feed took to notice.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_feed import open_feed

from .hostile import CONT, PING, TEXT, Hostile, Peer, Seen, consume, frame, open_hostile
from .identity import assert_accounted


async def _fault_on_first(
    server: Hostile, streams: list[str], fault: Any, *, after: int = 50, **options: Any
) -> tuple[float, Seen, Any]:
    """Run ``fault(peer)`` on the first connection after ``after`` events; return how
    long after the fault the second connection was attempted."""
    started = trio.Event()
    began: list[float] = []

    async def script(peer: Peer) -> None:
        if peer.number != 1:
            return
        await started.wait()
        began.append(trio.current_time())
        await fault(peer)

    server.script = script
    seen = Seen()
    async with open_feed(streams, base_url=server.base_url, rng=random.Random(5),
                         **options) as feed:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, feed, seen)
            await seen.wait_for(after)
            started.set()
            while len(server.attempts) < 2:
                await seen.wait_for(1)
            await seen.wait_for(after)
            nursery.cancel_scope.cancel()
    return server.attempts[1] - began[0], seen, feed.statistics()


async def _trickle_huge_frame(peer: Peer) -> None:
    peer.paused = True
    peer.deaf = True
    await peer.send_raw(bytes([0x81, 127]) + (500_000).to_bytes(8, "big"))
    while True:
        await trio.sleep(0.2)
        await peer.send_raw(b" ")


async def test_byte_trickle_is_replaced_after_stale_after_not_the_ping_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Slowloris: one byte every 0.2 s of a frame that never ends.  Bytes kept the old
    watchdog quiet; only the ping timeout replaced it, 119 s in."""
    with trio.fail_after(600):
        async with open_hostile(tick=0.1) as server:
            noticed, seen, stats = await _fault_on_first(server, ["btcusdt@trade"],
                                                         _trickle_huge_frame, close_timeout=1)
    # The trade streams' 60 s, then 1 s for a Close the deaf server never answers,
    # then the backoff.
    assert 60 <= noticed < 61.6, noticed
    assert stats.reconnects == {"stale": 1} and stats.stale == 1
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def _endless_continuation(peer: Peer) -> None:
    peer.paused = True
    peer.push(frame(TEXT, b"{", fin=False))
    while True:
        await trio.sleep(0.5)
        peer.push(frame(CONT, b" ", fin=False))


@pytest.mark.parametrize("mode", ["channel", "inline"])
async def test_endless_continuation_frames_are_replaced(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Complete frames, never a complete message; the server answers our pings and
    pings us every 5 s between the fragments.  None of it is a message."""
    with trio.fail_after(600):
        async with open_hostile(tick=0.1, ping_interval=5) as server:
            noticed, seen, stats = await _fault_on_first(
                server, ["btcusdt@trade"], _endless_continuation, mode=mode, ping_interval=20)
    assert 60 <= noticed < 61, noticed
    assert stats.reconnects == {"stale": 1}
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def _pings_only(peer: Peer) -> None:
    peer.paused = True
    while True:
        await trio.sleep(5)
        peer.push(frame(PING, b"still here"))


async def test_pings_do_not_keep_a_depth_stream_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Depth is pushed every 100 ms: a server that only pings has stopped."""
    with trio.fail_after(600):
        async with open_hostile(tick=0.1) as server:
            noticed, seen, stats = await _fault_on_first(server, ["btcusdt@depth@100ms"],
                                                         _pings_only)
    assert 9 <= noticed < 10.2, noticed  # 10 s for scheduled kinds, within a tenth
    assert stats.reconnects == {"stale": 1}
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def test_a_silent_depth_stream_is_replaced_while_trades_flow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Trades keep coming on the same connection, depth stops: the depth kind is stale."""

    async def stop_depth(peer: Peer) -> None:
        peer.streams.remove("btcusdt@depth@100ms")

    with trio.fail_after(600):
        async with open_hostile(tick=0.1) as server:
            noticed, seen, stats = await _fault_on_first(
                server, ["btcusdt@trade", "btcusdt@depth@100ms"], stop_depth)
    assert 9 <= noticed < 10.2, noticed
    assert stats.reconnects == {"stale": 1}
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def test_unanswered_ping_is_noticed_pong_timeout_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server stops reading (so never pongs) but keeps sending data."""

    async def deaf(peer: Peer) -> None:
        peer.deaf = True

    with trio.fail_after(600):
        async with open_hostile(tick=0.1) as server:
            noticed, seen, stats = await _fault_on_first(
                server, ["btcusdt@trade"], deaf, after=1, ping_interval=10, pong_timeout=5,
                close_timeout=1)
    # The first ping leaves 10 s after connecting; its pong is due 5 s later, not at
    # the next ping (20 s).  The fault began after the first event, ~0.1 s in.
    assert 15 <= noticed < 16.6, noticed  # and 1 s for the unanswered Close, and the backoff
    assert stats.reconnects == {"ping timeout": 1}
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def test_a_stream_that_never_delivers_is_reported_and_not_reconnected(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    """An unknown symbol: Binance accepts the stream and sends nothing for it."""
    caplog.set_level(logging.WARNING, logger="trio_feed")
    with trio.fail_after(600):
        async with open_hostile(tick=0.1) as server:
            server.setup = lambda peer: peer.streams.remove("nosuchusdt@depth")
            seen = Seen()
            async with open_feed(["btcusdt@trade", "nosuchusdt@depth"],
                                 base_url=server.base_url, no_data_after=30) as feed:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, feed, seen)
                    await trio.sleep(29)
                    early = feed.statistics().streams.get("nosuchusdt@depth")
                    await trio.sleep(91)
                    nursery.cancel_scope.cancel()
            stats = feed.statistics()
    assert early is None or not early.no_data
    assert stats.streams["nosuchusdt@depth"].no_data
    assert stats.streams["nosuchusdt@depth"].messages == 0
    assert not stats.streams["btcusdt@trade"].no_data
    assert stats.reconnects == {}  # a silent unknown stream is reported, not reconnected
    reports = [r for r in caplog.records if "nosuchusdt@depth" in r.getMessage()]
    assert len(reports) == 1 and "no_data_after" in reports[0].getMessage()
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))
