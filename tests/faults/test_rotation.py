"""Make-before-break rotation against the hostile server: not one id lost, none twice.

The server publishes ten trades per 10 ms tick, all ten sharing one event
time, and writes them to the old connection one frame at a time, 0.2 ms
apart, while a new connection's first tick starts four trades in
(a subscriber that joins mid-millisecond).  So when the new connection first
delivers, the old one has handed over the first trade of that millisecond and
the next three are still on their way to it: the old link may be retired only
once it handed over the id just before the new one's first, on every stream.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
import trio
import trio.testing

from trio_feed import open_feed

from .hostile import Hostile, Peer, Seen, consume, open_hostile
from .identity import assert_accounted

#: Depth first: the market publishes in this order, so the trades end each tick.
TRADES = ["btcusdt@depth@100ms", "btcusdt@trade", "ethusdt@trade"]


def _lagging_old_mid_tick_new(peer: Peer) -> None:
    if peer.number == 1:
        peer.spacing = 0.0002
    else:
        peer.skip_first = 4


async def _run(server: Hostile, mode: str, fault: Any, **options: Any) -> tuple[Seen, Any]:
    seen = Seen()
    async with open_feed(TRADES, mode=mode, base_url=server.base_url,
                         rng=random.Random(1), **options) as feed:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, feed, seen)
            await seen.wait_for(200)
            await fault()
            await seen.wait_for(900)
            nursery.cancel_scope.cancel()
    return seen, feed.statistics()


@pytest.mark.parametrize("mode", ["channel", "inline"])
async def test_server_shutdown_rotation_loses_no_id_of_the_millisecond(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):
        async with open_hostile(tick=0.01, burst=10) as server:
            server.setup = _lagging_old_mid_tick_new

            async def shutdown() -> None:
                server.announce_shutdown()

            seen, stats = await _run(server, mode, shutdown)
    assert stats.rotations == 1 and stats.reconnects == {"server shutdown": 1}
    assert len(server.peers) == 2
    assert stats.missing == 0
    assert stats.duplicates >= 3  # the overlap was there, and was filtered
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def test_rotate_after_loses_no_id_of_the_millisecond(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with open_hostile(tick=0.01, burst=10) as server:
            server.setup = _lagging_old_mid_tick_new
            seen, stats = await _run(server, "channel", functools.partial(trio.sleep, 1),
                                     rotate_after=0.6)
    assert stats.rotations >= 1 and set(stats.reconnects) == {"rotation"}
    assert stats.missing == 0
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))
