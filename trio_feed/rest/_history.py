"""Walking a range of trade ids through the REST trade history, page by page.

The one loop the feed's back-fill and the recorder's share: pages of up to
``venue.max_trades_limit`` ids from ``fromId``, each charged to the client's
weight budget; a failed request (no answer, an error status, a page that
does not convert) is retried after a doubling backoff, at most ``retries``
times in a row; a 429/418 has paused the budget already and is simply asked
again.  The caller bounds the whole walk in time (a cancel scope).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from .._errors import InvalidSymbol, RateLimited, RestError
from ..binance._limits import Venue

if TYPE_CHECKING:  # the client brings httpx; this module stays light
    from ._client import RestClient

__all__ = ["RETRY_CAP", "RETRY_FIRST", "HistoryCounters", "fetch_history", "fetch_klines"]

#: Seconds before the first retry of a failed request, doubling up to the cap.
RETRY_FIRST = 0.5
RETRY_CAP = 8.0

#: The id of a row: ``a`` on aggregate trades, ``id`` on trades.
_ID_KEY = {"aggTrade": "a", "trade": "id"}


@attrs.define
class HistoryCounters:
    """Requests sent, failed and answered 429/418, and the weight they had admitted."""

    requests: int = 0
    failures: int = 0
    rate_limited: int = 0
    weight: int = 0


async def fetch_history(
    client: RestClient,
    venue: Venue,
    kind: str,
    symbol: str,
    first: int,
    last: int,
    convert: Callable[[list[dict[str, Any]]], list[Any]],
    deliver: Callable[[list[Any]], None],
    *,
    retries: int,
    counters: HistoryCounters,
    limiter: trio.CapacityLimiter | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[int, Exception | None]:
    """Fetch ids ``first..last`` of ``symbol``'s ``kind`` (``trade`` or ``aggTrade``) history.

    Each page's rows within the range, in increasing id order, go through
    ``convert`` (a ``ValueError`` there counts as a failed request) and then
    to ``deliver``.  Returns the first id not fetched (``last + 1`` when all
    were) and the last failure if the retries ran out.  Stops early when the
    server has nothing from there on, for an unknown symbol, or when
    ``stop()`` turns true.
    """
    if kind == "aggTrade":
        path, weight = venue.agg_trades_path, venue.agg_trades_weight
    else:
        path, weight = venue.trades_path, venue.trades_weight
    key = _ID_KEY[kind]
    nxt = first
    failures = 0
    while nxt <= last and not stop():
        limit = min(venue.max_trades_limit, last - nxt + 1)
        try:
            counters.requests += 1
            counters.weight += weight
            params = {"symbol": symbol, "fromId": nxt, "limit": limit}
            if limiter is None:
                body = await client.get(path, params, weight, symbol=symbol)
            else:
                async with limiter:
                    body = await client.get(path, params, weight, symbol=symbol)
            rows = _rows(body, key, nxt, last)
            items = convert(rows)
        except RateLimited:
            counters.rate_limited += 1
            continue  # the client paused the budget: the next acquire waits it out
        except InvalidSymbol:
            break
        except (RestError, ValueError, OSError) as exc:
            failures += 1
            counters.failures += 1
            if failures > retries:
                return nxt, exc
            await trio.sleep(min(RETRY_CAP, RETRY_FIRST * 2 ** (failures - 1)))
            continue
        failures = 0
        if not rows:
            break  # the server has nothing from there on
        deliver(items)
        nxt = rows[-1][key] + 1
    return nxt, None


async def fetch_klines(
    client: RestClient,
    venue: Venue,
    symbol: str,
    interval: str,
    start: int,
    end: int,
    convert: Callable[[list[Any]], list[Any]],
    deliver: Callable[[list[Any]], None],
    *,
    retries: int,
    counters: HistoryCounters,
    limiter: trio.CapacityLimiter | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[int, Exception | None]:
    """Fetch the closed ``interval`` candles of ``symbol`` opening in ``start..end`` (ms).

    The same rules as :func:`fetch_history`, by time instead of by id:
    returns the first open time not fetched, and the last failure if the
    retries ran out.
    """
    path, weight = venue.klines_path, venue.klines_weight
    nxt = start
    failures = 0
    while nxt <= end and not stop():
        try:
            counters.requests += 1
            counters.weight += weight
            params = {"symbol": symbol, "interval": interval, "startTime": nxt, "endTime": end,
                      "limit": venue.max_trades_limit}
            if limiter is None:
                body = await client.get(path, params, weight, symbol=symbol)
            else:
                async with limiter:
                    body = await client.get(path, params, weight, symbol=symbol)
            try:
                rows = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"a klines page that is not JSON: {exc}") from None
            if type(rows) is not list or any(type(r) is not list or not r for r in rows):
                raise ValueError("a klines page must be a list of rows")
            rows = [r for r in rows if type(r[0]) is int and nxt <= r[0] <= end]
            items = convert(rows)
        except RateLimited:
            counters.rate_limited += 1
            continue
        except InvalidSymbol:
            break
        except (RestError, ValueError, OSError) as exc:
            failures += 1
            counters.failures += 1
            if failures >= retries + 1:  # (as fetch_history: the retries ran out)
                return nxt, exc
            await trio.sleep(min(RETRY_CAP, RETRY_FIRST * 2 ** (failures - 1)))
            continue
        failures = 0
        if not rows:
            break
        deliver(items)
        nxt = rows[-1][0] + 1
    return nxt, None


def _rows(body: bytes, key: str, first: int, last: int) -> list[dict[str, Any]]:
    """The rows of a page with ids in ``first..last``; ``ValueError`` for a malformed page."""
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"a trade history page that is not JSON: {exc}") from None
    if type(rows) is not list:
        raise ValueError("a trade history page must be a JSON list")
    kept: list[dict[str, Any]] = []
    previous = first - 1
    for row in rows:
        ident = row.get(key) if type(row) is dict else None
        if type(ident) is not int:
            raise ValueError(f"a trade history row without an integer {key!r}")
        if ident <= previous and ident >= first:
            raise ValueError("a trade history page not in increasing id order")
        if first <= ident <= last:
            kept.append(row)
            previous = ident
    return kept
