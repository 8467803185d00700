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

The weight budget.  A 5000-level spot snapshot costs 250 of the 6000 weight
an IP may use per minute, so a mass resync of more than 24 books must be
spread over minutes, not fired at once.  :class:`WeightBudget` is a
*sliding-window* limiter: it admits a request only if the weight admitted in
the last 60 s plus this one stays within the limit.  A token bucket of the
same capacity would admit up to twice the limit in some 60 s windows (a full
bucket, then a minute of refill), which a fixed-minute counter such as
Binance's could still reject; the sliding window never exceeds the limit in
*any* window, so it is safe whatever the server's window alignment.  Requests
wait in FIFO order (a ``trio.Lock`` is fair).  The server's
``X-MBX-USED-WEIGHT-1M`` header, when it reports more than we counted (other
clients on the IP), is added to the window, and a 429 or 418 pauses every
request for its ``Retry-After``.
"""

from __future__ import annotations

import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import attrs
import httpx
import trio

from .._errors import InvalidSymbol, RateLimited, SnapshotError, lone_exception
from ..binance import DepthUpdate, NeedSnapshot, OrderBook, PartialDepth, Rules
from ..binance._book import parse_depth_snapshot
from ..binance._limits import INVALID_SYMBOL_CODE, SPOT, USDM_FUTURES, venue_for, venue_named
from ..feed import Feed, open_feed

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


class WeightBudget:
    """At most ``limit`` request weight in any ``window`` seconds, admitted in FIFO order.

    See the module docstring for why a sliding window.  Uses trio's clock,
    so ``trio.testing.MockClock`` drives it.
    """

    def __init__(self, limit: int = SPOT_WEIGHT_LIMIT, window: float = 60.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = window
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0
        self._paused_until = -math.inf
        self._lock = trio.Lock()
        self.peak = 0
        self.waits = 0

    def used(self) -> int:
        """Weight admitted within the last ``window`` seconds."""
        self._expire(trio.current_time())
        return self._used

    def _expire(self, now: float) -> None:
        log = self._log
        while log and log[0][0] <= now - self.window:
            self._used -= log.popleft()[1]

    def _record(self, now: float, weight: int) -> None:
        self._log.append((now, weight))
        self._used += weight
        self.peak = max(self.peak, self._used)

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` fits in the window, then count it.

        Raises ``ValueError`` if ``weight`` exceeds ``limit``: it would never fit.
        """
        if weight > self.limit:
            raise ValueError(f"weight {weight} exceeds the budget of {self.limit}")
        waited = self._lock.locked()  # queued behind an earlier request
        async with self._lock:
            while True:
                now = trio.current_time()
                if now < self._paused_until:
                    waited = True
                    await trio.sleep_until(self._paused_until)
                    continue
                self._expire(now)
                excess = self._used + weight - self.limit
                if excess <= 0:
                    break
                # Sleep until enough of the oldest entries have left the window.
                freed = 0
                for stamp, spent in self._log:  # noqa: B007 (stamp is used after the loop)
                    freed += spent
                    if freed >= excess:
                        break
                waited = True
                await trio.sleep_until(stamp + self.window)
            self.waits += waited
            self._record(now, weight)

    def note_server_usage(self, used: int) -> None:
        """The server says ``used`` weight is spent this minute: never count less than that."""
        now = trio.current_time()
        self._expire(now)
        if used > self._used:
            self._record(now, used - self._used)

    def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` (a 429's or 418's ``Retry-After``)."""
        self._paused_until = max(self._paused_until, trio.current_time() + seconds)


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
    """``GET {rest_url}/api/v3/depth`` (or ``/fapi/v1/depth``) with httpx."""

    def __init__(self, client: httpx.AsyncClient, rest_url: str, rules: Rules,
                 budget: WeightBudget) -> None:
        self.url = rest_url.rstrip("/") + venue_for(rules).snapshot_path
        self.client = client
        self.budget = budget

    async def __call__(self, symbol: str, limit: int) -> PartialDepth:
        response = await self.client.get(self.url, params={"symbol": symbol, "limit": limit})
        used = response.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.budget.note_server_usage(int(used))
        if response.status_code == 400:
            _raise_invalid_symbol(response, symbol)
        if response.status_code in (418, 429):
            try:
                retry = float(response.headers.get("retry-after", "60"))
            except ValueError:
                retry = 60.0
            raise RateLimited(retry if math.isfinite(retry) and retry >= 0 else 60.0,
                              response.status_code)
        response.raise_for_status()
        return parse_depth_snapshot(response.content, symbol)


def _raise_invalid_symbol(response: httpx.Response, symbol: str) -> None:
    """Raise :class:`InvalidSymbol` for Binance's ``{"code":-1121,...}`` answer."""
    try:
        body = response.json()
    except ValueError:
        return
    if isinstance(body, dict) and body.get("code") == INVALID_SYMBOL_CODE:
        raise InvalidSymbol(symbol, str(body.get("msg", "Invalid symbol.")))


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
            except (httpx.HTTPError, OSError, ValueError) as exc:
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
        self.budget = WeightBudget(weight_limit)
        self._client: httpx.AsyncClient | None = None
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
                self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
                self._scheduler.fetch = _HttpFetcher(self._client, self.rest_url, self.rules,
                                                     self.budget)
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
    if other code shares the IP).  ``max_concurrent_snapshots`` requests are
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
        market=venue.market,
    )
