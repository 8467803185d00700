"""The feed used from threads and from asyncio, with the same no-silent-loss accounting.

These tests are plain (not trio) functions: the embedded exchange runs under
``trio.run`` in a thread of its own, the feed in another (that is the point of
``feed_thread``), and the consumer is the test's own thread or an asyncio loop.
Every wait is bounded: ``get(timeout=...)``, ``asyncio.wait_for`` and the
exchange thread's join.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from trio_feed import ConnectionClosed, InvalidStreamName
from trio_feed.binance import Trade
from trio_feed.bridge import FeedThread, feed_thread
from trio_feed.exchange import LocalExchange, open_exchange

BOUND = 30.0


class ExchangeThread:
    """The embedded exchange under trio.run in a background thread."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.ready = threading.Event()
        self.exchange: LocalExchange | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.stop: trio.Event | None = None
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop = trio.Event()
        async with open_exchange(**self.options) as exchange:
            self.exchange = exchange
            self.ready.set()
            await self.stop.wait()

    def run(self, fn: Any, *args: Any) -> Any:
        """Run ``await fn(*args)`` in the exchange's trio thread."""
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def run_sync(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the exchange's trio thread."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def __enter__(self) -> ExchangeThread:
        self.thread.start()
        assert self.ready.wait(BOUND), "the exchange did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop is not None
        trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
        self.thread.join(BOUND)
        assert not self.thread.is_alive()


@pytest.fixture
def exchange() -> Iterator[ExchangeThread]:
    with ExchangeThread(shared_market=True) as running:
        yield running


def _base_url(exchange: ExchangeThread) -> str:
    assert exchange.exchange is not None
    return exchange.exchange.base_url


def check_identities(feed: FeedThread, received: list[Any]) -> None:
    """The bridge's own identity, then the feed's, once the thread has ended."""
    stats = feed.statistics()
    assert stats.handed_over == stats.taken + stats.discarded, stats
    assert stats.taken == len(received)
    assert stats.feed is not None
    f = stats.feed
    assert f.messages == f.events + f.duplicates + f.dropped + f.conflated + f.discarded, f
    assert f.events == stats.handed_over
    ids = [e.trade_id for e in received if isinstance(e, Trade)]
    assert ids == sorted(set(ids)), "a trade id repeated or came out of order"
    assert len(ids) + f.streams["btcusdt@trade"].missing == ids[-1] - ids[0] + 1


def test_a_thread_iterates_the_feed_and_every_event_is_accounted(
    exchange: ExchangeThread,
) -> None:
    received: list[Any] = []
    with feed_thread(["btcusdt@trade"], base_url=_base_url(exchange)) as feed:
        while len(received) < 300:
            received.extend(feed.get_batch(timeout=BOUND))
        received.append(feed.get(timeout=BOUND))
    check_identities(feed, received)
    assert feed.statistics().batches >= 1


def test_leaving_early_counts_what_was_still_queued(exchange: ExchangeThread) -> None:
    received: list[Any] = []
    with feed_thread(["btcusdt@trade"], base_url=_base_url(exchange), max_batches=2) as feed:
        received.append(feed.get(timeout=BOUND))
        deadline = time.monotonic() + BOUND
        while feed.statistics().queued_batches < 2:  # let the hand-off fill up
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert feed.statistics().queued_batches <= 2  # bounded
    stats = feed.statistics()
    assert stats.discarded > 0
    check_identities(feed, received)


def test_a_slow_thread_is_held_back_not_flooded(exchange: ExchangeThread) -> None:
    received: list[Any] = []
    with feed_thread(["btcusdt@trade"], base_url=_base_url(exchange), max_batches=3) as feed:
        while len(received) < 200:
            received.extend(feed.get_batch(timeout=BOUND))
            assert feed.statistics().queued_batches <= 3
            time.sleep(0.02)
    check_identities(feed, received)


def test_asyncio_iterates_the_feed(exchange: ExchangeThread) -> None:
    received: list[Any] = []

    async def main() -> FeedThread:
        async with feed_thread(["btcusdt@trade"], base_url=_base_url(exchange)) as feed:
            async for event in feed:
                received.append(event)
                if len(received) >= 300:
                    break
        return feed

    feed = asyncio.run(asyncio.wait_for(main(), BOUND))
    check_identities(feed, received)


def test_an_asyncio_consumer_cancelled_while_waiting_loses_nothing(
    exchange: ExchangeThread,
) -> None:
    """Cancel the awaiting task again and again: the batch its thread took is kept."""
    received: list[Any] = []

    async def main() -> FeedThread:
        async with feed_thread(["btcusdt@trade"], base_url=_base_url(exchange)) as feed:
            cancels = 0
            while len(received) < 300:
                try:
                    # Short enough to be cancelled while waiting, some of the time.
                    received.append(await asyncio.wait_for(feed.__anext__(), 0.0005))
                except TimeoutError:
                    cancels += 1
            assert cancels > 0, "no wait was ever cancelled: the test proved nothing"
        return feed

    feed = asyncio.run(asyncio.wait_for(main(), BOUND))
    check_identities(feed, received)


def test_the_feeds_failure_arrives_after_the_events_before_it(exchange: ExchangeThread) -> None:
    received: list[Any] = []
    with feed_thread(["btcusdt@trade"], base_url=_base_url(exchange), reconnect=False) as feed:
        while len(received) < 50:
            received.extend(feed.get_batch(timeout=BOUND))
        assert exchange.exchange is not None
        exchange.run(exchange.exchange.close_connections, 1011)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                received.extend(feed.get_batch(timeout=BOUND))
        assert info.value.code == 1011
    check_identities(feed, received)


def test_an_error_while_opening_is_raised_by_feed_thread() -> None:
    with pytest.raises(InvalidStreamName):
        feed_thread(["btcusdt@nonsense"], base_url="ws://127.0.0.1:9")


def test_get_times_out_with_queue_empty(exchange: ExchangeThread) -> None:
    assert exchange.exchange is not None
    exchange.run_sync(exchange.exchange.pause_sending)
    with feed_thread(["btcusdt@trade"], base_url=_base_url(exchange)) as feed:
        with pytest.raises(queue.Empty):
            feed.get(timeout=0.2)
    exchange.run_sync(exchange.exchange.resume_sending)
    stats = feed.statistics()
    assert stats.handed_over == stats.taken + stats.discarded
