"""S4 and S8: what was read but not handed over is counted, never dropped silently."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_feed import PipelineCounters, open_feed
from trio_feed._pipelines import _parse_batches
from trio_feed.exchange import open_exchange


async def test_batches_still_queued_when_the_handler_fails_are_discarded() -> None:
    send_channel, receive_channel = trio.open_memory_channel[list[bytes]](3)
    for batch in ([b"a", b"b"], [b"c"], [b"d", b"e"]):
        send_channel.send_nowait(batch)
    counters = PipelineCounters()

    def handler(payload: bytes) -> None:
        raise KeyError(payload)

    with trio.fail_after(5):
        with pytest.raises(KeyError):
            await _parse_batches(receive_channel, handler, counters)
    assert counters.delivered == 1  # b"a" reached the handler
    assert counters.discarded == 4  # b"b" of its batch, and both queued batches


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_events_still_queued_when_the_feed_closes_are_discarded(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A consumer that leaves while the outbox is full: what it held is counted."""
    with trio.fail_after(15):
        async with open_exchange(seed=3, rate=500) as exchange:
            async with open_feed(["btcusdt@trade"], mode=mode, base_url=exchange.base_url) as feed:
                async for _event in feed:
                    break
                await trio.sleep(0.5)  # the connection goes on reading into the outbox
                queued = feed.outbox.queued
            stats = feed.statistics()
    assert queued > 0
    assert stats.events == 1
    assert stats.discarded >= queued
    assert stats.messages == (
        stats.events + stats.duplicates + stats.dropped + stats.conflated + stats.discarded
    ), stats


async def test_a_feed_closed_mid_rotation_counts_what_its_links_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The consumer leaves during a rotation it has stalled.

    The old connection waits for outbox space with a batch in hand; the new
    one holds what it read until the old one catches up, which it never
    does.  Both are counted as discarded when the links close.
    """
    with trio.fail_after(3600):
        async with open_exchange(seed=6, rate=50, shared_market=True) as exchange:
            async with open_feed(["btcusdt@trade"], base_url=exchange.base_url,
                                 max_queued=20, max_backlog_bytes=4000,
                                 rotate_after=30, rotation_timeout=600) as feed:
                await feed.receive()  # one event, then the consumer stops
                held = in_hand = 0
                while not (held and in_hand):
                    await trio.sleep(1)
                    links = feed.shards[0].links
                    held = sum(len(batch) for link in links for batch, _, _ in link.held or ())
                    in_hand = sum(link._in_hand for link in links)
            stats = feed.statistics()
    assert stats.events == 1
    assert stats.discarded >= held + in_hand
    assert stats.messages == (
        stats.events + stats.duplicates + stats.dropped + stats.conflated + stats.discarded
    ), stats


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)
