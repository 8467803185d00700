"""Backoff against the hostile server: rotations are paced, and Retry-After is honoured."""

from __future__ import annotations

import datetime
import email.utils
import itertools
import random
from typing import Any

import trio
import trio.testing

from trio_feed import HandshakeError, open_feed

from .hostile import Hostile, Peer, Seen, consume, http_refusal, open_hostile
from .identity import assert_accounted


async def test_server_shutdown_on_every_new_connection_rotates_at_the_backoff_pace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every connection is told serverShutdown at once.  Without backoff on rotations
    the feed made ~200 attempts in 10 s and spent its whole 5-minute budget in
    12 s; now each rotation waits the next backoff delay, and the old connection
    delivers meanwhile, so data never stops."""
    arrivals: list[float] = []

    async def shutdown_at_once(peer: Peer) -> None:
        peer.server.announce_shutdown(peer)

    with trio.fail_after(600):
        async with open_hostile(tick=0.05) as server:
            server.script = shutdown_at_once
            seen = Seen()
            async with open_feed(["btcusdt@trade"], base_url=server.base_url,
                                 rng=random.Random(3)) as feed:
                with trio.move_on_after(60):
                    async for event in feed:
                        seen.add(event)
                        arrivals.append(trio.current_time())
            stats = feed.statistics()
    times = server.attempts
    assert sum(1 for t in times if t < times[0] + 10) <= 6, times
    assert len(times) <= 10
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] < 0.2  # the first rotation of a healthy feed goes at once
    for n, gap in enumerate(gaps[1:], start=1):
        ceiling = min(30.0, 0.5 * 2 ** n)  # equal jitter, never reset: no link got healthy
        assert ceiling / 2 - 0.01 <= gap <= ceiling + 0.5, (n, gap, gaps)
    # Make before break: the feed kept a connection all along, and lost nothing.
    assert max(b - a for a, b in itertools.pairwise(arrivals)) < 0.5
    assert stats.missing == 0 and stats.rotations == len(times) - 1
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def _reconnect_after_refusal(
    retry_after: str, **options: float
) -> tuple[float, Seen, Any, Hostile]:
    with trio.fail_after(600):
        async with open_hostile(tick=0.05) as server:
            server.handshake = lambda number: (
                http_refusal(429, "Too Many Requests", {"Retry-After": retry_after})
                if number == 2 else None
            )
            seen = Seen()
            async with open_feed(["btcusdt@trade"], base_url=server.base_url,
                                 rng=random.Random(4), **options) as feed:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, feed, seen)
                    await seen.wait_for(20)
                    server.reset_all()
                    while len(server.attempts) < 3:
                        await seen.wait_for(1)
                    await seen.wait_for(20)
                    nursery.cancel_scope.cancel()
            stats = feed.statistics()
    refused_at, retried_at = server.attempts[1], server.attempts[2]
    return retried_at - refused_at, seen, stats, server


async def test_retry_after_on_a_429_handshake_is_honoured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    waited, seen, stats, server = await _reconnect_after_refusal("20")
    assert 20 <= waited < 21  # the backoff alone would have waited under a second
    assert stats.reconnects == {"closed 1006": 1}
    assert stats.connect_failures == 1
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def test_retry_after_is_bounded_by_max_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    waited, seen, stats, server = await _reconnect_after_refusal("86400", max_retry_after=45)
    assert 45 <= waited < 46
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


def test_retry_after_as_an_http_date() -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    error = HandshakeError("refused", 429, {"retry-after": email.utils.format_datetime(later)})
    assert error.retry_after is not None and 28 <= error.retry_after <= 30
    assert HandshakeError("refused", 429, {"retry-after": "7"}).retry_after == 7
    assert HandshakeError("refused", 429, {"retry-after": "soon"}).retry_after is None
    assert HandshakeError("refused", 503).retry_after is None
