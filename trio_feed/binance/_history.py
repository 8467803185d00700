"""Trade history over REST, as events: what a back-fill hands out in place of a gap.

Binance serves a symbol's past trades by id: ``aggTrades`` (aggregate trades,
``fromId`` inclusive) and ``historicalTrades`` (plain trades), at most
``max_trades_limit`` rows a page, oldest first (the paths and weights are the
:class:`~trio_feed.binance._limits.Venue` records').  This module turns one
page into the same events the streams decode to, of the subclasses
:class:`BackfilledTrade` and :class:`BackfilledAggTrade`: a consumer that
does not care reads them as a :class:`Trade` or an :class:`AggTrade`; one
that does asks ``event.backfilled`` or ``isinstance``.

A REST row has no event time ``E``; a back-filled event carries the trade
time ``T`` there (the time the trade happened, which is also what ``E``
is within a few milliseconds of on the stream).

Pure: no I/O, no trio.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import attrs
import orjson

from ._events import AggTrade, Kline, Trade

__all__ = [
    "BackfilledAggTrade", "BackfilledKline", "BackfilledTrade", "history_id",
    "parse_history_page", "parse_kline_rows",
]


@attrs.define(slots=True)
class BackfilledTrade(Trade):
    """A :class:`Trade` fetched over REST to fill a gap (``backfilled`` is true)."""

    backfilled: ClassVar[bool] = True


@attrs.define(slots=True)
class BackfilledAggTrade(AggTrade):
    """An :class:`AggTrade` fetched over REST to fill a gap (``backfilled`` is true)."""

    backfilled: ClassVar[bool] = True


@attrs.define(slots=True)
class BackfilledKline(Kline):
    """A closed :class:`Kline` fetched over REST (``/api/v3/klines``) for one the stream missed.

    Its ``event_time`` is its close time; ``first_trade_id``/``last_trade_id``
    are ``-1`` (a REST kline row does not carry them).
    """

    backfilled: ClassVar[bool] = True


def parse_kline_rows(rows: list[Any], symbol: str, interval: str, stream: str | None, *,
                     decimals: bool = False) -> list[BackfilledKline]:
    """Closed klines from the rows of a ``klines`` answer (``ValueError`` if malformed)."""
    events = []
    try:
        for row in rows:
            t, o, h, low, c, v, close, q, n, bv, bq = row[:11]
            events.append(BackfilledKline(
                int(close), symbol, interval, int(t), int(close), -1, -1,
                _number(o, decimals), _number(h, decimals), _number(low, decimals),
                _number(c, decimals), _number(v, decimals), int(n), True,
                _number(q, decimals), _number(bv, decimals), _number(bq, decimals),
                stream=stream,
            ))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed kline row: {exc!r}") from None
    return events


def _number(value: Any, decimals: bool) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected a decimal string, got {value!r}")
    if not decimals:
        return value
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None


def _agg_row(row: dict[str, Any], symbol: str, stream: str | None,
             decimals: bool) -> BackfilledAggTrade:
    when = int(row["T"])
    return BackfilledAggTrade(
        when, symbol, int(row["a"]), _number(row["p"], decimals), _number(row["q"], decimals),
        int(row["f"]), int(row["l"]), when, bool(row["m"]), stream=stream,
    )


def _trade_row(row: dict[str, Any], symbol: str, stream: str | None,
               decimals: bool) -> BackfilledTrade:
    when = int(row["time"])
    return BackfilledTrade(
        when, symbol, int(row["id"]), _number(row["price"], decimals),
        _number(row["qty"], decimals), when, bool(row["isBuyerMaker"]), stream=stream,
    )


_ROWS: dict[str, Callable[[dict[str, Any], str, str | None, bool], Any]] = {
    "aggTrade": _agg_row,
    "trade": _trade_row,
}


def parse_history_page(kind: str, body: bytes | list[Any], symbol: str, stream: str | None,
                       *, decimals: bool = False) -> list[BackfilledTrade | BackfilledAggTrade]:
    """The events of one ``aggTrades`` (``kind="aggTrade"``) or ``historicalTrades`` page.

    ``symbol`` is the uppercase symbol the events carry (``s``) and
    ``stream`` the stream they are handed out on.  Raises ``ValueError`` for
    a body that is not a list of well-formed rows in increasing id order.
    """
    build = _ROWS[kind]
    rows = orjson.loads(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
    if not isinstance(rows, list):
        raise ValueError(f"a {kind} history page must be a JSON list, got {type(rows).__name__}")
    try:
        events = [build(row, symbol, stream, decimals) for row in rows]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {kind} history row: {exc!r}") from None
    for before, after in itertools.pairwise(events):
        if history_id(after) <= history_id(before):
            raise ValueError(f"{kind} history page is not in increasing id order")
    return events


def history_id(event: Any) -> int:
    """The id a trade or aggregate trade is numbered by (``t`` or ``a``)."""
    if isinstance(event, AggTrade):
        return event.agg_trade_id
    return int(event.trade_id)
