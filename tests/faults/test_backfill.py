"""Back-fill against the embedded exchange: every trade id delivered once, in order, or reported.

Each test runs a shared-market exchange (one id sequence per symbol across
connections) on trio's autojump clock, opens a feed with ``backfill=True``
over real sockets, breaks something, and ends with the fault matrix's
identity (:func:`~tests.faults.identity.assert_accounted`) and its back-fill
half (:func:`~tests.faults.identity.assert_filled`): the ids not delivered
are exactly the ranges reported missing, and the events marked back-filled
exactly the ranges reported filled.  Whenever REST answered, nothing is
missing.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from trio_feed import WeightBudget, open_feed, open_order_books
from trio_feed.binance import (
    AggTrade,
    BackfilledAggTrade,
    BackfilledKline,
    BackfilledTrade,
    Kline,
    Trade,
)
from trio_feed.exchange import LocalExchange, open_exchange

from .identity import assert_accounted, assert_filled

SYMBOLS = ("btcusdt", "ethusdt", "bnbusdt")
AGG = [f"{s}@aggTrade" for s in SYMBOLS]
RATE = 100.0  # market ticks per second: about 85 aggregate trades per symbol per second


class Seen:
    """Ids per stream as delivered, which of them were back-filled, and waiting on them."""

    def __init__(self) -> None:
        self.ids: dict[str, list[int]] = defaultdict(list)
        self.backfilled: dict[str, list[int]] = defaultdict(list)
        self.live_after: dict[str, int] = defaultdict(int)  # live events since the fault
        self.counts: dict[str, int] = defaultdict(int)  # events per stream, of every kind
        self.count = 0
        self.fault_at: int | None = None
        self._waiters: list[tuple[Callable[[], bool], trio.Event]] = []

    def add(self, event: Any) -> None:
        self.count += 1
        self.counts[event.stream] += 1
        if isinstance(event, AggTrade):
            ident = event.agg_trade_id
        elif isinstance(event, Trade):
            ident = event.trade_id
        else:
            if isinstance(event, Kline) and not event.backfilled and self.fault_at is not None:
                self.live_after[event.stream] += 1
            self._wake()
            return
        self.ids[event.stream].append(ident)
        if event.backfilled:
            self.backfilled[event.stream].append(ident)
        elif self.fault_at is not None:
            self.live_after[event.stream] += 1
        self._wake()

    def _wake(self) -> None:
        for pred, waiter in self._waiters:
            if not waiter.is_set() and pred():
                waiter.set()

    async def wait(self, pred: Callable[[], bool]) -> None:
        if pred():
            return
        waiter = trio.Event()
        self._waiters.append((pred, waiter))
        await waiter.wait()


async def _run(exchange: LocalExchange, fault: Callable[[], Awaitable[None]], *,
               streams: list[str] = AGG, after: int = 200,
               reader: Callable[[Any, Seen], Awaitable[None]] | None = None,
               seen: Seen | None = None, before: int = 50,
               **options: Any) -> tuple[Seen, Any]:
    seen = seen if seen is not None else Seen()

    async def read(feed: Any, seen: Seen) -> None:
        async for event in feed:
            seen.add(event)

    async with open_feed(streams, base_url=exchange.base_url, rest_url=exchange.rest_url,
                         backfill=True, rng=random.Random(7), **options) as feed:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader or read, feed, seen)
            await seen.wait(lambda: all(seen.counts[s] >= before for s in streams))
            seen.fault_at = seen.count
            await fault()
            await seen.wait(lambda: all(seen.live_after[s] >= after for s in streams))
            nursery.cancel_scope.cancel()
    return seen, feed.statistics()


def _check(seen: Seen, stats: Any) -> None:
    assert_accounted(stats, seen.ids, received=seen.count)
    assert_filled(stats, seen.ids, seen.backfilled)


async def _drop(exchange: LocalExchange) -> None:
    assert await exchange.drop_connections(abrupt=True) >= 1


@pytest.mark.parametrize("mode", ["channel", "inline"])
async def test_reset_mid_burst_on_three_symbols_is_healed(
    mode: str, autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, lambda: _drop(exchange), mode=mode)
    assert stats.reconnects.get("closed 1006", 0) >= 1
    assert stats.missing == 0 and not stats.missing_ranges
    for stream in AGG:  # each symbol had its own gap, and it was filled
        assert seen.backfilled[stream], stream
        assert any(name == stream for name, _, _ in stats.filled_ranges)
    assert stats.backfilled == sum(len(ids) for ids in seen.backfilled.values())
    assert stats.backfill_weight == 4 * stats.backfill_requests  # aggTrades weighs 4
    assert stats.fill_latency_max is not None and stats.fill_latency_max < 5
    _check(seen, stats)


async def test_two_minute_outage_takes_several_pages_per_symbol(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def outage() -> None:
        exchange.refuse_connections(seconds=120)
        await _drop(exchange)

    with trio.fail_after(600):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, outage, after=100)
            history = exchange.rest.statistics()
    assert stats.missing == 0 and not stats.missing_ranges
    for stream in AGG:
        assert len(seen.backfilled[stream]) > 2 * 1000, stream  # more than two pages
    assert stats.backfill_requests >= 3 * 3
    assert history.history_requests == stats.backfill_requests
    assert history.history_rows == stats.backfilled
    _check(seen, stats)


async def test_trade_streams_fill_from_historical_trades(
    autojump_clock: trio.testing.MockClock,
) -> None:
    streams = [f"{s}@trade" for s in SYMBOLS[:2]]
    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, lambda: _drop(exchange), streams=streams,
                                     decimals=True)
    assert stats.missing == 0
    assert stats.backfill_weight == 25 * stats.backfill_requests  # historicalTrades weighs 25
    assert all(seen.backfilled[s] for s in streams)
    _check(seen, stats)


async def test_short_pages_are_followed_to_the_end(autojump_clock: trio.testing.MockClock) -> None:
    async def fault() -> None:
        exchange.faults.short_history_pages(7)
        await _drop(exchange)

    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, fault)
    assert stats.missing == 0
    assert stats.backfill_requests >= stats.backfilled / 7
    _check(seen, stats)


async def test_rate_limited_fill_waits_out_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fault() -> None:
        exchange.faults.rate_limit_history(2, retry_after=3)
        await _drop(exchange)

    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, fault)
            limited = exchange.rest.statistics().rate_limited
    assert limited == 2 and stats.backfill_rate_limited == 2
    assert stats.backfill_failures == 0  # a 429 is waited out, not counted as a failure
    assert stats.missing == 0
    assert stats.fill_latency_max is not None and stats.fill_latency_max >= 3  # Retry-After
    _check(seen, stats)


@pytest.mark.parametrize("status", [503, None])
async def test_rest_down_for_the_whole_fill_reports_the_gap(
    status: int | None, autojump_clock: trio.testing.MockClock,
) -> None:
    """Every request refused: after backfill_retries failures the gap is reported, exactly."""
    async def fault() -> None:
        exchange.faults.refuse_history(status=status)
        await _drop(exchange)

    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, fault, backfill_retries=3)
    assert stats.backfilled == 0 and not stats.filled_ranges
    assert stats.missing > 0
    assert {name for name, _, _ in stats.missing_ranges} == set(AGG)
    assert stats.missing == sum(last - first + 1 for _, first, last in stats.missing_ranges)
    assert stats.backfill_failures == 3 * (3 + 1)  # per stream: the first try and 3 retries
    # The later events were held only for the retries' backoff: 0.5 + 1 + 2 s.
    assert stats.fill_latency_max is not None and stats.fill_latency_max < 3.5 + 1
    _check(seen, stats)


async def test_slow_rest_is_cut_off_by_backfill_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fault() -> None:
        exchange.faults.slow_history(60.0)
        await _drop(exchange)

    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, fault, backfill_timeout=5.0)
    assert stats.missing > 0 and stats.backfilled == 0
    assert stats.fill_latency_max is not None and 5.0 <= stats.fill_latency_max < 5.5
    _check(seen, stats)


async def test_consumer_that_stops_reading_during_a_fill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reader sleeps 20 s right after the gap: the fill waits for it, in order."""
    async def reader(feed: Any, seen: Seen) -> None:
        paused = False
        async for event in feed:
            seen.add(event)
            if seen.fault_at is not None and not paused and seen.count > seen.fault_at:
                paused = True
                await trio.sleep(20)

    with trio.fail_after(300):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, lambda: _drop(exchange), reader=reader,
                                     after=300)
    assert stats.missing == 0 and stats.backfilled > 0
    assert stats.stalls == 0 or stats.peak_queued > 0
    _check(seen, stats)


async def test_hold_overflow_stops_the_fill_and_reports_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A slow endpoint and a tiny hold: the fill stops, the stream flows, the rest is reported."""
    async def fault() -> None:
        exchange.faults.slow_history(1.0)
        exchange.faults.short_history_pages(5)
        await _drop(exchange)

    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, fault, max_backfill_hold=200)
    assert stats.missing > 0 and stats.backfilled > 0  # a part was fetched, the rest reported
    _check(seen, stats)


async def test_backfill_refuses_policies_that_drop(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(ValueError, match="completeness"):
        open_feed(AGG, backfill=True, policy="drop_newest")


async def test_backfilled_events_are_typed_and_marked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kinds: set[type] = set()

    async def reader(feed: Any, seen: Seen) -> None:
        async for event in feed:
            seen.add(event)
            kinds.add(type(event))

    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, lambda: _drop(exchange), reader=reader,
                                     streams=[AGG[0], "btcusdt@trade"])
    assert kinds == {AggTrade, Trade, BackfilledAggTrade, BackfilledTrade}
    assert not AggTrade.backfilled and BackfilledAggTrade.backfilled
    _check(seen, stats)


async def test_books_and_backfill_share_one_weight_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = WeightBudget(6000)
    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange, \
                open_order_books(["btcusdt"], base_url=exchange.base_url,
                                 rest_url=exchange.rest_url, limit=100,
                                 weight_budget=budget) as books:
            await books.wait_live()
            seen, stats = await _run(exchange, lambda: _drop(exchange), weight_budget=budget)
            snapshots = books.statistics().snapshot_requests
    assert books.budget is budget
    assert stats.backfill_weight > 0 and snapshots >= 1
    assert budget.admitted == stats.backfill_weight + 5 * snapshots  # one budget, both callers
    _check(seen, stats)


def test_opening_a_feed_never_imports_httpx_before_backfill_runs() -> None:
    code = ("import sys, trio_feed\n"
            "trio_feed.open_feed(['btcusdt@trade'])\n"
            "trio_feed.open_feed(['btcusdt@trade'], backfill=True)\n"
            "print([m for m in ('httpx', 'trio_feed.rest._client') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


async def test_rotation_that_overruns_is_healed(autojump_clock: trio.testing.MockClock) -> None:
    """serverShutdown starts a rotation, the old connection dies before a new one is up."""
    async def overrun() -> None:
        exchange.refuse_connections(2)
        await exchange.announce_shutdown()
        await _drop(exchange)

    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, overrun)
    assert "server shutdown" in stats.reconnects or stats.rotations >= 1
    assert stats.missing == 0 and stats.backfilled > 0
    _check(seen, stats)


async def test_closing_during_a_fill_counts_what_was_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen = Seen()
    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            async with open_feed(AGG, base_url=exchange.base_url, rest_url=exchange.rest_url,
                                 backfill=True, rng=random.Random(7)) as feed:
                async for event in feed:
                    seen.add(event)
                    if seen.count == 100:
                        exchange.faults.slow_history(60.0)
                        await _drop(exchange)
                    if feed.statistics().backfill_held >= 30:
                        break  # leave the feed while its streams are held
            stats = feed.statistics()
    assert stats.backfill_held == 0 and stats.discarded >= 30
    assert stats.backfilled == 0
    # Per stream, the held events are past the gap and were never handed out, so only the
    # message half of the identity applies: each held event is counted discarded.
    assert_accounted(stats, {}, received=seen.count)


async def test_ids_older_than_the_endpoint_keeps_are_reported_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The exchange forgets the start of each gap before the fill asks: that part is missing."""
    seen = Seen()

    async def forget() -> None:
        exchange.faults.slow_history(1.0, 3)  # the fills ask only after a second ...
        await _drop(exchange)
        await trio.sleep(0.8)  # ... by when the streams are held: each has all before its gap
        market = exchange.shared_market
        assert market is not None
        for symbol in SYMBOLS:
            history = market._symbols[symbol].agg_history
            keep_from = seen.ids[f"{symbol}@aggTrade"][-1] + 4  # the gap's first ids go
            del history[:keep_from - history[0][0]]

    with trio.fail_after(120):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, forget, seen=seen)
    assert stats.missing > 0 and stats.backfilled > 0  # the start is gone, the rest is filled
    for stream in AGG:
        ranges = [(a, b) for name, a, b in stats.missing_ranges if name == stream]
        assert len(ranges) == 1 and ranges[0][1] - ranges[0][0] + 1 == 3, ranges
    _check(seen, stats)


@pytest.mark.parametrize("interval", ["1s", "1m"])
async def test_missed_closed_klines_are_refetched_by_time(
    interval: str, autojump_clock: trio.testing.MockClock,
) -> None:
    """A 70 s outage: every closed candle arrives once, in order, the missed ones over REST."""
    stream = f"btcusdt@kline_{interval}"
    closed: list[Any] = []

    async def reader(feed: Any, seen: Seen) -> None:
        async for event in feed:
            seen.add(event)
            if isinstance(event, Kline) and event.is_closed:
                closed.append(event)

    async def outage() -> None:
        exchange.refuse_connections(seconds=70)
        await _drop(exchange)

    with trio.fail_after(600):
        async with open_exchange(shared_market=True, clock=None, rate=RATE) as exchange:
            seen, stats = await _run(exchange, outage, streams=[stream], before=3,
                                     after=20 if interval == "1s" else 40, reader=reader)
            market = exchange.shared_market
            assert market is not None
            truth = {row[0]: row for row in market.klines("btcusdt", interval, None, None, 1000)}
    opens = [k.open_time for k in closed]
    step = 1000 if interval == "1s" else 60_000
    assert opens == list(range(opens[0], opens[-1] + step, step))  # none missing, none twice
    filled = [k for k in closed if k.backfilled]
    assert filled and isinstance(filled[0], BackfilledKline)
    assert stats.backfilled_klines == len(filled)
    for k in filled:  # the candle the exchange closed
        row = truth[k.open_time]
        assert [k.open, k.high, k.low, k.close, k.volume, k.trade_count] == [
            row[1], row[2], row[3], row[4], row[5], row[8]]
    assert stats.missing == 0
    _check(seen, stats)
