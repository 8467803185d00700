"""``open_order_books``: local order books kept in sync from a depth stream and REST snapshots.

::

    async with open_order_books(["btcusdt", "ethusdt"]) as books:
        await books.wait_live()
        seen = 0
        while True:
            seen = await books.wait_updated(seen)
            book = books["btcusdt"]
            print(book.state.value, book.best_bid(), book.best_ask())

The deciding is done by the pure :class:`~trio_feed.binance.OrderBook`
(``binance/_book.py`` explains the procedure); this module does its I/O.

Theory of operation
-------------------

Three kinds of task run in one nursery owned by the :class:`OrderBooks`:

- the *pump* reads ``<symbol>@depth@100ms`` for every symbol from one combined
  :func:`~trio_feed.open_feed` connection (inline mode: no extra task, no
  copy), hands each diff event to its book, and queues any
  :class:`~trio_feed.binance.NeedSnapshot` the book returns;
- ``max_concurrent_snapshots`` *snapshot workers* take requests from that
  queue in FIFO order, wait for the :class:`WeightBudget`, ``GET`` the depth
  snapshot with httpx (which runs on trio through anyio), and pass it to the
  book; a snapshot too old to bridge comes back as a new request and goes to
  the back of the queue.

BKS1: no task outlives the books.  The nursery is opened in ``__aenter__``
    and cancelled in ``__aexit__``; the feed and the HTTP client are closed
    after it.  A failure in any task (the connection closed, snapshots that
    keep failing) cancels the body of the ``async with`` and is raised from
    it, unwrapped from its ``ExceptionGroup`` when it is alone.

BKS2: a book that lost sync is never hidden.  While a snapshot is queued or
    in flight the book keeps answering from its last good state with
    ``stale`` true; callers decide whether stale is good enough.

The weight budget.  Snapshots are charged to a
:class:`~trio_feed.rest.WeightBudget` (a sliding window: see
``trio_feed.rest`` for why), the books' own or, with ``weight_budget=``, one
shared with other REST callers of the process such as a feed's back-fill.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import attrs
import httpx
import trio

from .._errors import InvalidSymbol, RateLimited, RestError, SnapshotError, lone_exception
from ..binance import DepthUpdate, NeedSnapshot, OrderBook, PartialDepth, Rules
from ..binance._book import parse_depth_snapshot
from ..binance._limits import SPOT, USDM_FUTURES, venue_for, venue_named
from ..feed import Feed, open_feed
from ..rest import RestClient, WeightBudget

__all__ = [
    "DEFAULT_REST_URL",
    "FUTURES_REST_URL",
    "InvalidSymbol",
    "OrderBooks",
    "OrderBooksStatistics",
    "RateLimited",
    "SnapshotError",
    "WeightBudget",
    "depth_weight",
    "open_order_books",
]

#: Binance spot REST API.
DEFAULT_REST_URL = SPOT.rest_url
#: Binance USD-M futures REST API.
FUTURES_REST_URL = USDM_FUTURES.rest_url
#: REQUEST_WEIGHT per minute per IP: spot, USD-M futures.
SPOT_WEIGHT_LIMIT = SPOT.weight_limit
FUTURES_WEIGHT_LIMIT = USDM_FUTURES.weight_limit
#: Seconds between retries of a failed snapshot request, doubling up to the cap.
RETRY_FIRST = 0.5
RETRY_CAP = 30.0

#: ``fetch_snapshot(symbol, limit)``: the raw depth body, its decoded object, or a PartialDepth.
SnapshotFetcher = Callable[[str, int], Awaitable["bytes | Mapping[str, Any] | PartialDepth"]]




def depth_weight(limit: int, rules: Rules | str = Rules.SPOT) -> int:
    """The request weight of a depth snapshot with ``limit`` levels.

    Spot (``/api/v3/depth``): 1-100 -> 5, 101-500 -> 25, 501-1000 -> 50,
    1001-5000 -> 250.  USD-M futures (``/fapi/v1/depth``): up to 50 -> 2,
    100 -> 5, 500 -> 10, 1000 -> 20.
    """
    return venue_for(rules).depth_weight(limit)


@attrs.frozen
class OrderBooksStatistics:
    """Counters of an :class:`OrderBooks` (each book has its own ``statistics()`` too).

    ``updates`` diff events handed to books; ``snapshot_requests`` HTTP
    requests sent; ``snapshots`` answers passed to books; ``rate_limited``
    429/418 answers; ``snapshot_failures`` other failed requests;
    ``weight_used`` weight admitted in the last minute and ``peak_weight``
    the most ever admitted within one window; ``budget_waits`` requests that
    had to wait for the budget.
    """

    updates: int
    snapshot_requests: int
    snapshots: int
    rate_limited: int
    snapshot_failures: int
    weight_used: int
    peak_weight: int
    budget_waits: int


class _HttpFetcher:
    """``GET {rest_url}/api/v3/depth`` (or ``/fapi/v1/depth``) through the shared REST client.

    The scheduler has already charged the weight to the budget; the client
    is given weight 0 so it is not charged twice.
    """

    def __init__(self, client: RestClient, rules: Rules) -> None:
        self.path = venue_for(rules).snapshot_path
        self.client = client

    async def __call__(self, symbol: str, limit: int) -> PartialDepth:
        body = await self.client.get(self.path, {"symbol": symbol, "limit": limit}, 0,
                                     symbol=symbol)
        return parse_depth_snapshot(body, symbol)


async def _not_open(symbol: str, limit: int) -> PartialDepth:
    raise RuntimeError("the order books are not open")


class SnapshotScheduler:
    """Fetches the snapshots books ask for: FIFO, within a :class:`WeightBudget`, retried.

    :meth:`request` queues a :class:`~trio_feed.binance.NeedSnapshot`
    (without blocking); :meth:`run` serves the queue until cancelled.  The
    I/O-free parts of :class:`OrderBooks` are here so they can be tested
    under ``MockClock`` with a fake ``fetch``.
    """

    def __init__(
        self,
        books: Mapping[str, OrderBook],
        fetch: SnapshotFetcher,
        budget: WeightBudget,
        *,
        limit: int,
        weight: int,
        max_concurrent: int = 2,
        max_failures: int = 5,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.books = books
        self.fetch = fetch
        self.budget = budget
        self.limit = limit
        self.weight = weight
        self.max_concurrent = max_concurrent
        self.max_failures = max_failures
        self.on_change = on_change
        self._send, self._receive = trio.open_memory_channel[NeedSnapshot](math.inf)
        self.requests = self.snapshots = self.rate_limited = self.failures = 0

    def request(self, action: NeedSnapshot) -> None:
        """Queue a snapshot request; never blocks."""
        self._send.send_nowait(action)

    async def run(self) -> None:
        """Serve requests with ``max_concurrent`` workers until cancelled."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.max_concurrent):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        async for action in self._receive:
            await self._serve(action)

    async def _serve(self, action: NeedSnapshot) -> None:
        book = self.books[action.symbol]
        failures = 0
        while True:
            await self.budget.acquire(self.weight)
            self.requests += 1
            try:
                body = await self.fetch(action.symbol, self.limit)
                depth = parse_depth_snapshot(body, action.symbol)
                again = book.receive_snapshot(depth)
            except RateLimited as exc:
                self.rate_limited += 1
                self.budget.pause(exc.retry_after)
                continue
            except (RestError, httpx.HTTPError, OSError, ValueError) as exc:
                failures += 1
                self.failures += 1
                if failures >= self.max_failures:
                    raise SnapshotError(
                        f"{failures} depth snapshot requests for {action.symbol} failed in a "
                        f"row; the last: {exc}") from exc
                await trio.sleep(min(RETRY_CAP, RETRY_FIRST * 2 ** (failures - 1)))
                continue
            self.snapshots += 1
            self.on_change()
            if again is not None:
                self.request(again)  # a stale snapshot: to the back of the queue
            return


class OrderBooks(Mapping[str, OrderBook]):
    """Order books for several symbols, kept in sync; made by :func:`open_order_books`.

    A read-only mapping from lowercase symbol to its
    :class:`~trio_feed.binance.OrderBook` (``books["BTCUSDT"]`` works too).
    Read the books at any time; they change between your awaits, never during
    synchronous code.
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        base_url: str,
        rest_url: str,
        rules: Rules,
        limit: int,
        weight_limit: int,
        max_concurrent_snapshots: int,
        max_snapshot_failures: int,
        max_buffer: int,
        fetch_snapshot: SnapshotFetcher | None,
        stream_suffix: str,
        feed_options: dict[str, Any],
        weight_budget: WeightBudget | None = None,
        market: str = "spot",
    ) -> None:
        names = [s.lower() for s in dict.fromkeys(symbols)]
        if not names:
            raise ValueError("open_order_books needs at least one symbol")
        self.rules = rules
        self.rest_url = rest_url
        self._books = {name: OrderBook(name, rules=rules, max_buffer=max_buffer)
                       for name in names}
        self._by_symbol = {book.symbol: book for book in self._books.values()}
        self._feed: Feed = open_feed([f"{name}{stream_suffix}" for name in names],
                                     mode="inline", base_url=base_url, market=market,
                                     **feed_options)
        self.budget = weight_budget if weight_budget is not None else WeightBudget(weight_limit)
        self._client: RestClient | None = None
        self._fetch = fetch_snapshot
        self._scheduler = SnapshotScheduler(
            self._by_symbol, _not_open, self.budget, limit=limit,
            weight=depth_weight(limit, rules), max_concurrent=max_concurrent_snapshots,
            max_failures=max_snapshot_failures, on_change=self._changed,
        )
        self._updates = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._entered = False
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None

    # -- the mapping --------------------------------------------------------------

    def __getitem__(self, symbol: str) -> OrderBook:
        return self._books[symbol.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._books)

    def __len__(self) -> int:
        return len(self._books)

    # -- waiting --------------------------------------------------------------------

    @property
    def updates(self) -> int:
        """How many diff events have been handed to the books so far."""
        return self._updates

    def _changed(self) -> None:
        self._lot.unpark_all()

    async def wait_updated(self, seen: int = 0) -> int:
        """Wait until :attr:`updates` exceeds ``seen`` (or a book changed state), and return it.

        Pass back what it returned to wait for the next change; updates that
        arrive while you are busy are not queued, the count just moves on.
        Raises ``trio.ClosedResourceError`` once the books are closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("the order books are closed")
        if self._updates > seen:
            await trio.lowlevel.checkpoint()
        while self._updates <= seen:
            await self._lot.park()
            if self._closed:
                raise trio.ClosedResourceError("the order books are closed")
        return self._updates

    async def wait_live(self, *symbols: str) -> None:
        """Wait until the named books (all by default) are live at the same time."""
        books = [self[s] for s in symbols] if symbols else list(self._books.values())
        if self._closed:
            raise trio.ClosedResourceError("the order books are closed")
        if not any(book.stale for book in books):
            await trio.lowlevel.checkpoint()
        while any(book.stale for book in books):
            await self._lot.park()
            if self._closed:
                raise trio.ClosedResourceError("the order books are closed")

    def statistics(self) -> OrderBooksStatistics:
        """A snapshot of the counters; see :class:`OrderBooksStatistics`."""
        s = self._scheduler
        return OrderBooksStatistics(
            updates=self._updates, snapshot_requests=s.requests, snapshots=s.snapshots,
            rate_limited=s.rate_limited, snapshot_failures=s.failures,
            weight_used=self.budget.used(), peak_weight=self.budget.peak,
            budget_waits=self.budget.waits,
        )

    # -- lifetime -------------------------------------------------------------------

    async def __aenter__(self) -> OrderBooks:
        if self._entered:
            raise RuntimeError("open_order_books() can be entered only once")
        self._entered = True
        await self._feed.__aenter__()
        try:
            if self._fetch is None:
                self._client = RestClient(self.rest_url, self.budget)
                self._scheduler.fetch = _HttpFetcher(self._client, self.rules)
            else:
                self._scheduler.fetch = self._fetch
            self._nursery_manager = trio.open_nursery()
            self._nursery = await self._nursery_manager.__aenter__()
            self._nursery.start_soon(self._pump)
            self._nursery.start_soon(self._scheduler.run)
        except BaseException:
            await self._close_resources()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        assert self._nursery_manager is not None and self._nursery is not None
        try:
            self._nursery.cancel_scope.cancel()
            try:
                await self._nursery_manager.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                raise lone_exception(group) from None
        finally:
            await self._close_resources()
        return None

    async def _close_resources(self) -> None:
        self._closed = True
        self._lot.unpark_all()
        try:
            if self._client is not None:
                with trio.CancelScope(shield=True):
                    await self._client.aclose()
        finally:
            await self._feed.__aexit__(None, None, None)

    async def _pump(self) -> None:
        by_symbol = self._by_symbol
        request = self._scheduler.request
        lot = self._lot
        async for event in self._feed:
            if isinstance(event, DepthUpdate):
                book = by_symbol.get(event.symbol)
                if book is None:
                    continue
                action = book.receive_update(event)
                if action is not None:
                    request(action)
                self._updates += 1
                lot.unpark_all()


def open_order_books(
    symbols: Iterable[str],
    *,
    base_url: str | None = None,
    rest_url: str | None = None,
    rules: Rules | str | None = None,
    market: str | None = None,
    limit: int | None = None,
    weight_limit: int | None = None,
    weight_budget: WeightBudget | None = None,
    max_concurrent_snapshots: int = 2,
    max_snapshot_failures: int = 5,
    max_buffer: int = 10_000,
    fetch_snapshot: SnapshotFetcher | None = None,
    stream_suffix: str = "@depth@100ms",
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
) -> OrderBooks:
    """Keep order books for ``symbols`` in sync: ``async with open_order_books(...) as books``.

    ``market`` is ``"spot"`` (the default) or ``"usdm"`` (USD-M futures):
    it picks the sequence rules (``rules`` may name them instead:
    ``rules="usdm_futures"`` means ``market="usdm"``), the default hosts, the
    snapshot endpoint and the weights.  One combined connection to
    ``base_url`` (the market's host by default; on USD-M its ``/public``
    route, which carries depth) carries ``<symbol>@depth@100ms``
    (``stream_suffix``) for every symbol; snapshots come from ``rest_url``
    (``/api/v3/depth``, or ``/fapi/v1/depth`` on USD-M).  For the local
    exchange pass its ``base_url`` and ``rest_url`` (or a pair from
    ``exchange.session_urls(name)``).

    ``limit`` is the snapshot depth (default 5000 for spot, 1000 for
    futures), which sets the request weight; ``weight_limit`` the weight per
    minute the books may spend (default 6000 spot, 2400 futures; lower it
    if other code shares the IP); ``weight_budget`` a
    :class:`WeightBudget` to charge instead of the books' own (pass the same
    one to ``open_feed(..., backfill=True, weight_budget=...)`` so that
    snapshots and back-fill share the IP's weight; ``weight_limit`` is then
    ignored).  ``max_concurrent_snapshots`` requests are
    in flight at most; a symbol whose requests fail ``max_snapshot_failures``
    times in a row raises :class:`SnapshotError`.  ``fetch_snapshot``
    replaces the HTTP request (an ``async (symbol, limit)`` returning the
    body); raise :class:`RateLimited` from it to report a 429.

    When the block is entered the connection is open and the books are
    ``syncing``; :meth:`OrderBooks.wait_live` waits for them.  Raises
    :class:`~trio_feed.InvalidStreamName` at once for a bad symbol.
    """
    if market is None:
        venue = venue_for(rules if rules is not None else Rules.SPOT)
    else:
        venue = venue_named(market)
        if rules is not None and Rules(rules) is not venue.sequence:
            raise ValueError(f"rules={rules!r} contradicts market={market!r}")
    chosen = venue.sequence
    if base_url is None:
        base_url = venue.base_url
    for route in venue.route_names:  # a route in base_url: the feed adds its own
        if route and base_url.rstrip("/").endswith(route):
            base_url = base_url.rstrip("/")[: -len(route)]
    if rest_url is None:
        rest_url = venue.rest_url
    if limit is None:
        limit = venue.max_snapshot_limit
    if weight_limit is None:
        weight_limit = venue.weight_limit
    if depth_weight(limit, chosen) > weight_limit:
        raise ValueError(f"a snapshot with limit={limit} weighs more than weight_limit")
    return OrderBooks(
        symbols, base_url=base_url, rest_url=rest_url, rules=chosen, limit=limit,
        weight_limit=weight_limit, max_concurrent_snapshots=max_concurrent_snapshots,
        max_snapshot_failures=max_snapshot_failures, max_buffer=max_buffer,
        fetch_snapshot=fetch_snapshot, stream_suffix=stream_suffix,
        feed_options={"ssl_context": ssl_context, "connect_timeout": connect_timeout},
        weight_budget=weight_budget,
        market=venue.market,
    )
