"""Binance's REST API, shared: one weight budget and one HTTP client for every caller.

Two parts of trio_feed speak REST: the order books (depth snapshots) and a
feed's back-fill (trade history after a gap).  Both go through this package,
the only importer of httpx, so their requests are charged to one
:class:`WeightBudget` when the application passes the same one to both::

    budget = WeightBudget(6000)
    async with open_order_books(symbols, weight_budget=budget) as books, \\
            open_feed(trades, backfill=True, weight_budget=budget) as feed:
        ...

The weight budget is light (trio only); the client, and httpx with it, is
imported the first time :class:`RestClient` is looked up here, which a feed
does only when ``backfill=True``, so ``import trio_feed`` stays free of httpx.

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

from typing import TYPE_CHECKING, Any

from ._budget import WeightBudget

if TYPE_CHECKING:
    from ._client import DEFAULT_REST_TIMEOUT, RestClient

_LAZY = frozenset({"DEFAULT_REST_TIMEOUT", "RestClient"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _client

        return getattr(_client, name)
    raise AttributeError(f"module 'trio_feed.rest' has no attribute {name!r}")


__all__ = ["DEFAULT_REST_TIMEOUT", "RestClient", "WeightBudget"]
