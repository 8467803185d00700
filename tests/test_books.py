"""open_order_books over real sockets: the local exchange's stream and REST endpoint.

The exchange is the oracle: on the simulated clock (``clock=None``) a
connection replays ``Market(seed)`` from tick 0, so replaying a fresh market
to the book's ``last_update_id`` gives the true book to compare with.  The
weight-budget tests drive the snapshot scheduler with a fake fetcher under
``MockClock``, with no sockets, so virtual minutes pass in milliseconds.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from trio_feed import HandshakeError, InvalidSymbol
from trio_feed.binance import BookState, DepthUpdate, NeedSnapshot, OrderBook, PriceLevel, Rules
from trio_feed.books._books import (
    RETRY_FIRST,
    OrderBooks,
    RateLimited,
    SnapshotError,
    SnapshotScheduler,
    WeightBudget,
    _HttpFetcher,
    depth_weight,
    open_order_books,
)
from trio_feed.exchange import LocalExchange, open_exchange
from trio_feed.rest import RestClient

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["btcusdt", "ethusdt"]
LIVE, RESYNCING = BookState.LIVE, BookState.RESYNCING


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def book_levels(book: OrderBook) -> tuple[list[PriceLevel], list[PriceLevel]]:
    return book.bids(), book.asks()


def true_levels(exchange: LocalExchange, symbol: str,
                update_id: int) -> tuple[list[PriceLevel], list[PriceLevel]]:
    """The true book of ``exchange``'s market after the depth event that ended at ``update_id``."""
    market = exchange.market()
    stream = f"{symbol}@depth@100ms"
    while True:
        market.step()
        (event,) = market.payloads(stream)
        if event["u"] >= update_id:
            assert event["u"] == update_id
            break
    depth = market.depth_snapshot(symbol, 5000)
    def side(levels: list[list[str]]) -> list[PriceLevel]:
        return [PriceLevel(Decimal(p), Decimal(q)) for p, q in levels]
    return side(depth["bids"]), side(depth["asks"])


def assert_true_books(exchange: LocalExchange, books: OrderBooks) -> None:
    """Every live book equals the market's true book at its update id (no await inside)."""
    for symbol, book in books.items():
        if book.state is LIVE:
            assert book.last_update_id is not None
            assert book_levels(book) == true_levels(exchange, symbol, book.last_update_id)


async def wait_for_state(books: OrderBooks, symbol: str, state: BookState) -> int:
    seen = books.updates
    while books[symbol].state is not state:
        seen = await books.wait_updated(seen)
    return seen


async def test_books_sync_and_equal_the_exchange_book() -> None:
    with trio.fail_after(20):
        async with open_exchange(seed=7, rate=500.0, clock=None) as exchange, open_order_books(
            SYMBOLS, base_url=exchange.base_url, rest_url=exchange.rest_url
        ) as books:
            assert set(books) == set(SYMBOLS) and len(books) == 2
            assert books["BTCUSDT"] is books["btcusdt"]
            await books.wait_live()
            seen = 0
            for _ in range(30):
                seen = await books.wait_updated(seen)
                assert_true_books(exchange, books)
            book = books["btcusdt"]
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is not None and ask is not None and bid.price < ask.price
            assert book.spread() == ask.price - bid.price
            stats = books.statistics()
            assert stats.snapshots == 2 and stats.weight_used == 2 * depth_weight(5000)
            assert exchange.rest.statistics().snapshots == 2


async def test_gap_is_detected_and_the_stale_book_is_served_while_resyncing() -> None:
    """A dropped diff event: the book turns stale and keeps its last good state until the
    (held back) snapshot arrives, then it is live and true again."""
    gate = trio.Event()
    calls = 0
    with trio.fail_after(20):
        async with open_exchange(seed=8, rate=500.0, clock=None) as exchange, \
                httpx.AsyncClient() as client:
            async def fetch(symbol: str, limit: int) -> bytes:
                nonlocal calls
                calls += 1
                if calls > len(SYMBOLS):
                    await gate.wait()
                response = await client.get(f"{exchange.rest_url}/api/v3/depth",
                                            params={"symbol": symbol, "limit": limit})
                response.raise_for_status()
                return response.content

            async with open_order_books(SYMBOLS, base_url=exchange.base_url,
                                        rest_url=exchange.rest_url,
                                        fetch_snapshot=fetch) as books:
                await books.wait_live()
                exchange.faults.drop_depth("btcusdt")
                seen = await wait_for_state(books, "btcusdt", RESYNCING)
                book = books["btcusdt"]
                frozen, frozen_id = book_levels(book), book.last_update_id
                assert book.stale and book.needs_snapshot and book.best_bid() is not None
                for _ in range(10):
                    seen = await books.wait_updated(seen)
                    assert book.state is RESYNCING and book.stale
                    assert book_levels(book) == frozen and book.last_update_id == frozen_id
                    assert books["ethusdt"].state is LIVE
                assert book.statistics().gaps == 1 and book.statistics().buffered > 0
                gate.set()
                await books.wait_live()
                assert book.last_update_id is not None and book.last_update_id > (frozen_id or 0)
                assert_true_books(exchange, books)
                assert exchange.rest.statistics().depth_dropped == 1


async def test_out_of_order_event_forces_a_resync() -> None:
    with trio.fail_after(20):
        async with open_exchange(seed=9, rate=500.0, clock=None) as exchange, open_order_books(
            SYMBOLS, base_url=exchange.base_url, rest_url=exchange.rest_url
        ) as books:
            await books.wait_live()
            exchange.faults.reorder_depth("ethusdt")
            await wait_for_state(books, "ethusdt", RESYNCING)
            await books.wait_live()
            stats = books["ethusdt"].statistics()
            assert stats.gaps == 1 and stats.resyncs == 1 and stats.snapshots == 2
            assert exchange.rest.statistics().depth_reordered == 1
            assert_true_books(exchange, books)


async def test_stale_snapshot_is_refetched() -> None:
    with trio.fail_after(20):
        async with open_exchange(seed=10, rate=500.0, clock=None) as exchange, open_order_books(
            SYMBOLS, base_url=exchange.base_url, rest_url=exchange.rest_url
        ) as books:
            await books.wait_live()
            exchange.faults.stale_snapshot("btcusdt")  # captured now ...
            exchange.faults.drop_depth("btcusdt")      # ... older than the resync's buffer
            await wait_for_state(books, "btcusdt", RESYNCING)
            await books.wait_live()
            stats = books["btcusdt"].statistics()
            assert stats.refetches == 1 and stats.snapshots == 3
            assert exchange.rest.statistics().stale_served == 1
            assert_true_books(exchange, books)


async def test_sessions_pair_each_client_with_its_own_market() -> None:
    with trio.fail_after(20):
        async with open_exchange(seed=11, rate=500.0, clock=None) as exchange:
            base_a, rest_a = exchange.session_urls("a")
            base_b, rest_b = exchange.session_urls("b")
            async with open_order_books(["btcusdt"], base_url=base_a, rest_url=rest_a) as a:
                await a.wait_live()
                await trio.sleep(0.05)  # market a runs ahead of market b
                async with open_order_books(["btcusdt"], base_url=base_b,
                                            rest_url=rest_b) as b:
                    await b.wait_live()
                    exchange.faults.drop_depth("btcusdt", session="b")
                    await wait_for_state(b, "btcusdt", RESYNCING)
                    await b.wait_live()
                    assert_true_books(exchange, a)
                    assert_true_books(exchange, b)
                    assert a["btcusdt"].statistics().gaps == 0
                    assert b["btcusdt"].statistics().gaps == 1


async def test_snapshot_failures_raise_snapshot_error() -> None:
    with trio.fail_after(20):
        async with open_exchange(seed=12, rate=500.0, clock=None) as exchange:
            async with trio.open_nursery() as nursery:  # a port that refuses connections
                listeners = await nursery.start(trio.serve_tcp, lambda stream: None, 0)
                port = listeners[0].socket.getsockname()[1]
                nursery.cancel_scope.cancel()
            with pytest.raises(SnapshotError, match="2 depth snapshot requests for BTCUSDT"):
                async with open_order_books(["btcusdt"], base_url=exchange.base_url,
                                            rest_url=f"http://127.0.0.1:{port}",
                                            max_snapshot_failures=2) as books:
                    await books.wait_live()
            with pytest.raises(trio.ClosedResourceError):
                await books.wait_updated()


async def test_invalid_symbol_fails_at_once_and_is_not_retried() -> None:
    # The stream side lists ethusdt; the REST side does not, as when a symbol is
    # delisted between the two: its depth endpoint answers 400 -1121.
    with trio.fail_after(10):
        async with open_exchange(seed=14, rate=500.0, clock=None) as streams, \
                open_exchange(symbols=["btcusdt"]) as rest:
            started = trio.current_time()
            with pytest.raises(InvalidSymbol) as caught:
                async with open_order_books(["ethusdt"], base_url=streams.base_url,
                                            rest_url=rest.rest_url) as books:
                    await books.wait_live()
            assert trio.current_time() - started < RETRY_FIRST + 1.0
            assert rest.rest.statistics().requests == 1
    assert isinstance(caught.value, SnapshotError)
    assert caught.value.symbol.lower() == "ethusdt"
    assert "ETHUSDT" in str(caught.value).upper() and "Invalid symbol" in str(caught.value)


async def test_a_stream_on_an_unknown_symbol_fails_at_once() -> None:
    with trio.fail_after(10):
        async with open_exchange(symbols=["btcusdt"]) as exchange:
            with pytest.raises(HandshakeError) as caught:
                async with open_order_books(["btcusdt", "xyzusdt"], base_url=exchange.base_url,
                                            rest_url=exchange.rest_url):
                    pass  # pragma: no cover
    assert caught.value.status == 400


async def test_http_fetcher_reads_weight_headers_and_429() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=13, rate=500.0, clock=None) as exchange, open_order_books(
            ["btcusdt"], base_url=exchange.base_url, rest_url=exchange.rest_url
        ) as books:
            await books.wait_live()
            # Room for exactly one more limit=100 request (weight 5) this minute.
            limit = exchange.rest.weight_limit = exchange.rest.statistics().weight_used + 5
            budget = WeightBudget(6000)
            client = RestClient(exchange.rest_url, budget)
            fetch = _HttpFetcher(client, Rules.SPOT)
            depth = await fetch("BTCUSDT", 100)
            assert depth.symbol == "BTCUSDT" and depth.bids and depth.asks
            assert budget.used() == limit  # the server's count, books' own sync included
            with pytest.raises(RateLimited) as caught:
                await fetch("BTCUSDT", 100)
            assert caught.value.status == 429 and 1 <= caught.value.retry_after <= 60
            await client.aclose()


async def test_open_order_books_validates_early() -> None:
    with pytest.raises(ValueError, match="at least one symbol"):
        open_order_books([])
    with pytest.raises(ValueError, match="weighs more"):
        open_order_books(["btcusdt"], weight_limit=100)
    books = open_order_books(["btcusdt"], rules="usdm_futures")
    assert books.rules is Rules.USDM_FUTURES and books.budget.limit == 2400
    with trio.fail_after(5):
        async with open_exchange() as exchange:
            books = open_order_books(["btcusdt"], base_url=exchange.base_url,
                                     rest_url=exchange.rest_url)
            async with books:
                with pytest.raises(RuntimeError, match="only once"):
                    await books.__aenter__()


def test_depth_weights() -> None:
    assert [depth_weight(n) for n in (1, 100, 101, 500, 501, 1000, 1001, 5000)] == [
        5, 5, 25, 25, 50, 50, 250, 250]
    assert [depth_weight(n, "usdm_futures") for n in (5, 50, 100, 500, 1000)] == [
        2, 2, 5, 10, 20]
    with pytest.raises(ValueError):
        depth_weight(0)


# -- the weight budget, under MockClock --------------------------------------------------


def resyncing_books(count: int) -> tuple[dict[str, OrderBook], list[NeedSnapshot]]:
    """``count`` books that were live and then hit a gap, and the requests they made.

    Each has buffered event 12, so a snapshot with ``lastUpdateId`` 11 bridges.
    """
    books, actions = {}, []
    for i in range(count):
        symbol = f"SYM{i}USDT"
        book = OrderBook(symbol)
        book.receive_update(DepthUpdate(1, symbol, 10, 10, [], []))
        book.receive_snapshot(FRESH | {"lastUpdateId": 9})
        assert book.state is LIVE
        action = book.receive_update(DepthUpdate(1, symbol, 12, 12, [["1.5", "1"]], []))
        assert action == NeedSnapshot(symbol, "gap") and book.state is RESYNCING
        books[symbol] = book
        actions.append(action)
    return books, actions


FRESH = {"lastUpdateId": 11, "bids": [["1", "1"]], "asks": [["2", "1"]]}


async def run_until_live(scheduler: SnapshotScheduler, books: dict[str, OrderBook]) -> None:
    all_live = trio.Event()

    def changed() -> None:
        if not any(book.stale for book in books.values()):
            all_live.set()

    scheduler.on_change = changed
    async with trio.open_nursery() as nursery:
        nursery.start_soon(scheduler.run)
        await all_live.wait()
        nursery.cancel_scope.cancel()


def window_peak(log: list[tuple[float, int]], window: float = 60.0) -> int:
    """The most weight spent in any ``window``-second interval of ``log``."""
    return max(sum(w for t, w in log if start <= t < start + window) for start, _ in log)


async def test_mass_resync_stays_under_the_weight_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    books, actions = resyncing_books(60)  # 60 x 250 = 15,000 weight: 2.5 minutes' worth
    log: list[tuple[float, int]] = []
    in_flight = peak_in_flight = 0

    async def fetch(symbol: str, limit: int) -> dict[str, Any]:
        nonlocal in_flight, peak_in_flight
        log.append((trio.current_time(), depth_weight(limit)))
        in_flight += 1
        peak_in_flight = max(peak_in_flight, in_flight)
        await trio.sleep(0.2)  # the request's latency
        in_flight -= 1
        return FRESH

    budget = WeightBudget(6000)
    scheduler = SnapshotScheduler(books, fetch, budget, limit=5000, weight=250,
                                  max_concurrent=3)
    for action in actions:  # all at once, as after a reconnect
        scheduler.request(action)
    start = trio.current_time()
    with trio.fail_after(600):
        await run_until_live(scheduler, books)
    assert len(log) == 60 and scheduler.snapshots == 60
    assert window_peak(log) <= 6000 and budget.peak <= 6000
    assert peak_in_flight <= 3
    # Queued, not fired together: the last 36 had to wait for the window to roll, twice.
    assert log[23][0] - start < 10 and log[24][0] - start >= 60 and log[48][0] - start >= 120
    assert budget.waits >= 36
    assert all(book.last_update_id == 12 for book in books.values())


async def test_rate_limited_answer_pauses_every_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    books, actions = resyncing_books(3)
    log: list[tuple[float, str]] = []
    limited = False

    async def fetch(symbol: str, limit: int) -> dict[str, Any]:
        nonlocal limited
        log.append((trio.current_time(), symbol))
        if not limited:
            limited = True
            raise RateLimited(30.0)
        return FRESH

    budget = WeightBudget(6000)
    scheduler = SnapshotScheduler(books, fetch, budget, limit=100, weight=5, max_concurrent=1)
    for action in actions:
        scheduler.request(action)
    start = trio.current_time()
    with trio.fail_after(300):
        await run_until_live(scheduler, books)
    assert scheduler.rate_limited == 1 and len(log) == 4
    assert log[0][1] == log[1][1] == "SYM0USDT"  # retried first: FIFO kept
    assert all(t - start >= 30 for t, _ in log[1:])


async def test_stale_fake_snapshot_goes_to_the_back_of_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    books, actions = resyncing_books(2)
    order: list[str] = []
    served: dict[str, int] = {}

    async def fetch(symbol: str, limit: int) -> dict[str, Any]:
        order.append(symbol)
        served[symbol] = served.get(symbol, 0) + 1
        too_old = symbol == "SYM0USDT" and served[symbol] == 1
        return FRESH | {"lastUpdateId": 5} if too_old else FRESH

    scheduler = SnapshotScheduler(books, fetch, WeightBudget(), limit=100, weight=5,
                                  max_concurrent=1)
    for action in actions:
        scheduler.request(action)
    with trio.fail_after(60):
        await run_until_live(scheduler, books)
    assert order == ["SYM0USDT", "SYM1USDT", "SYM0USDT"]
    assert books["SYM0USDT"].statistics().refetches == 1


async def test_weight_budget_follows_the_server_and_rejects_oversized(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = WeightBudget(1000)
    await budget.acquire(100)
    budget.note_server_usage(950)  # another client on the IP spent more
    assert budget.used() == 950
    start = trio.current_time()
    await budget.acquire(100)
    assert trio.current_time() - start == pytest.approx(60.0)
    with pytest.raises(ValueError):
        await budget.acquire(1001)
    with pytest.raises(ValueError):
        WeightBudget(0)


# -- the example --------------------------------------------------------------------------


def test_orderbook_example_runs_on_the_embedded_exchange() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "orderbook.py"), "--limit", "40"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(" live " in line and "spread" in line for line in lines), lines[:5]
    assert lines[-2].startswith("-- ") and "updates" in lines[-2]
    assert lines[-1].startswith("   (weight: ")  # the legend of the summary's figures
    assert "Traceback" not in result.stderr


def test_orderbook_example_refuses_an_unknown_symbol_at_once() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "orderbook.py"), "xyzusdt", "--limit", "1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 1  # refused by the server: not a usage error (2)
    assert result.stderr.startswith("error: ") and "HTTP 400" in result.stderr
    assert "Traceback" not in result.stderr
