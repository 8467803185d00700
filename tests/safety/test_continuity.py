"""S9: a rotation overlaps two connections, and the overlap is never handed out twice."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_feed import open_feed
from trio_feed.binance import Trade
from trio_feed.exchange import open_exchange


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_a_rotation_hands_out_no_trade_twice_and_skips_none(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    ids: list[int] = []
    with trio.fail_after(3600):
        async with open_exchange(seed=4, rate=50, shared_market=True) as exchange:
            async with open_feed(["btcusdt@trade"], mode=mode, base_url=exchange.base_url,
                                 rotate_after=10) as feed:
                async for event in feed:
                    assert isinstance(event, Trade)
                    ids.append(event.trade_id)
                    if feed.statistics().rotations >= 1 and len(ids) >= 800:
                        break
            stats = feed.statistics()
    assert stats.rotations >= 1
    assert stats.duplicates > 0  # the connections did overlap...
    assert ids == sorted(set(ids))  # ...and no trade came out twice or out of order
    assert ids[-1] - ids[0] + 1 == len(ids) + stats.missing
