"""Control requests against the hostile server: error replies in both shapes, and none.

Binance answers a bad SUBSCRIBE flat (``{"code":2,"msg":...,"id":1}``) or
nested (``{"error":{"code":2,"msg":...},"id":1}``).  Either must raise
:class:`SubscriptionError` naming the refused streams, never reach the
consumer as an event, and leave the refused streams out of the feed.  A
request with no reply at all must not hang: past ``request_timeout`` the
caller gets :class:`RequestTimeout` and the connection is replaced.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_feed import RequestTimeout, SubscriptionError, open_feed
from trio_feed.binance import UnknownEvent

from .hostile import Seen, consume, open_hostile, refusing
from .identity import assert_accounted

SHAPES = ["flat", "nested"]


def _names(count: int) -> list[str]:
    return [f"s{i:03d}usdt@trade" for i in range(count)]


@pytest.mark.parametrize("mode", ["channel", "inline"])
@pytest.mark.parametrize("shape", SHAPES)
async def test_live_subscribe_refused_in_either_shape_raises_naming_the_streams(
    shape: str, mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        async with open_hostile(tick=0.05) as server:
            server.reply = refusing({"badusdt@trade"}, shape)
            seen = Seen()
            async with open_feed(["btcusdt@trade"], mode=mode, base_url=server.base_url,
                                 request_timeout=30) as feed:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, feed, seen)
                    await seen.wait_for(10)
                    with pytest.raises(SubscriptionError) as info:
                        await feed.subscribe(["badusdt@trade", "ethusdt@trade"])
                    assert feed.streams == ["btcusdt@trade"]
                    await seen.wait_for(20)
                    nursery.cancel_scope.cancel()
            stats = feed.statistics()
    error = info.value
    assert error.code == 2 and "unknown stream badusdt@trade" in error.msg
    assert set(error.streams) == {"badusdt@trade", "ethusdt@trade"}
    assert "badusdt@trade" in str(error)
    assert not any(isinstance(e, UnknownEvent) for e in seen.events)
    assert stats.control == 1 and stats.reconnects == {}
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


@pytest.mark.parametrize("shape", SHAPES)
async def test_refused_subscribe_beyond_the_url_ends_open_feed_with_the_error(
    shape: str, autojump_clock: trio.testing.MockClock
) -> None:
    """300 streams: about 270 fit in the URL, the rest go by SUBSCRIBE, and one is refused."""
    names = _names(300)
    refused = names[-1]
    with trio.fail_after(60):
        async with open_hostile(tick=0.05) as server:
            server.reply = refusing({refused}, shape)
            server.reply_delay = 1.0
            feed = open_feed(names, base_url=server.base_url, request_timeout=30)
            with pytest.raises(SubscriptionError) as info:
                async with feed:
                    pytest.fail("the feed opened although a SUBSCRIBE was refused")
            stats = feed.statistics()
    assert refused in info.value.streams
    assert refused in str(info.value)
    # The URL part was streaming while the SUBSCRIBE waited: all of it is accounted.
    assert server.peers[0].written and stats.messages > 0
    assert stats.discarded == stats.messages
    assert_accounted(stats, {}, server.sent, received=0)


async def test_unanswered_subscribe_times_out_and_the_connection_is_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with open_hostile(tick=0.05) as server:
            server.reply = refusing({"ethusdt@trade"}, "none")
            seen = Seen()
            async with open_feed(["btcusdt@trade"], base_url=server.base_url,
                                 request_timeout=3) as feed:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, feed, seen)
                    await seen.wait_for(10)
                    started = trio.current_time()
                    with pytest.raises(RequestTimeout) as info:
                        await feed.subscribe(["ethusdt@trade"])
                    waited = trio.current_time() - started
                    # The streams stay wanted: the replacement carries them in its URL.
                    assert feed.streams == ["btcusdt@trade", "ethusdt@trade"]
                    while len(seen.ids["ethusdt@trade"]) < 20:
                        await seen.wait_for(1)
                    nursery.cancel_scope.cancel()
            stats = feed.statistics()
    assert 3 <= waited < 3.5
    assert info.value.streams == ("ethusdt@trade",) and info.value.timeout == 3
    assert stats.reconnects == {"request timeout": 1}
    assert len(server.peers) == 2
    assert_accounted(stats, seen.ids, server.sent, received=len(seen.events))


async def test_unanswered_subscribe_at_open_raises_instead_of_hanging(
    autojump_clock: trio.testing.MockClock,
) -> None:
    names = _names(300)
    with trio.fail_after(120):
        async with open_hostile(tick=0.05) as server:
            server.reply = refusing(set(names), "none")
            feed = open_feed(names, base_url=server.base_url, request_timeout=4)
            started = trio.current_time()
            with pytest.raises(RequestTimeout) as info:
                async with feed:
                    pytest.fail("the feed opened without its SUBSCRIBE answered")
            waited = trio.current_time() - started
            stats = feed.statistics()
    assert 4 <= waited < 5
    assert set(info.value.streams) < set(names) and names[-1] in info.value.streams
    assert stats.discarded == stats.messages > 0
    assert_accounted(stats, {}, server.sent, received=0)
