"""Binance stream names.

A stream name is the only key Binance gives for some payloads: bookTicker and
partial depth carry no ``e`` field, and partial depth not even a symbol.  So
the name is parsed once, at subscription time, into a :class:`Stream` whose
``kind`` tells the decoder what to expect.  The local exchange parses the
same names with the same function, so the client and the server cannot
disagree about what a name means.

Source: ``STREAMS.md`` §1 and §4.  The URLs that carry them are ``_urls``'s.
"""

from __future__ import annotations

import re

import attrs

from .._errors import InvalidStreamName

__all__ = [
    "KINDS",
    "KLINE_INTERVALS",
    "SERVER_SHUTDOWN",
    "TICKER_WINDOWS",
    "Stream",
    "interval_ms",
    "parse_stream",
]

#: The stream name Binance gives its ``serverShutdown`` notice in an envelope.
SERVER_SHUTDOWN = "!serverShutdown"

#: Every stream kind this library knows, with the ``e`` value its events carry
#: (``None`` when the payload has no ``e`` and must be typed by stream name).
KINDS: dict[str, str | None] = {
    "trade": "trade",
    "aggTrade": "aggTrade",
    "blockTrade": "blockTrade",
    "kline": "kline",
    "miniTicker": "24hrMiniTicker",
    "miniTicker_arr": "24hrMiniTicker",
    "ticker": "24hrTicker",
    "ticker_arr": "24hrTicker",
    "ticker_window": None,  # "1hTicker" / "4hTicker" / "1dTicker", depends on the window
    "ticker_window_arr": None,
    "avgPrice": "avgPrice",
    "bookTicker": None,
    "depth_partial": None,
    "depth": "depthUpdate",
    "referencePrice": "referencePrice",
    "serverShutdown": "serverShutdown",
}

#: Kline intervals, shortest first.  ``1w`` opens on Monday and ``1M`` on
#: the first of the month, so only the others have a fixed length.
KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                   "1d", "3d", "1w", "1M")
#: Rolling-window ticker windows (``@ticker_<w>``).
TICKER_WINDOWS = ("1h", "4h", "1d")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
DEPTH_LEVELS = frozenset({5, 10, 20})
DEPTH_SPEEDS = frozenset({"100ms", "1000ms"})



def interval_ms(interval: str) -> int | None:
    """The length of a kline interval or ticker window in ms; ``None`` for ``1w`` and ``1M``."""
    if interval not in KLINE_INTERVALS:
        raise ValueError(f"unknown kline interval {interval!r}")
    if interval in ("1w", "1M"):
        return None
    return int(interval[:-1]) * _UNIT_MS[interval[-1]]


_SYMBOL_BAD = re.compile(r"[\s@/!?&#%]")


@attrs.frozen
class Stream:
    """One parsed stream name.

    ``name`` is the exact text sent to Binance and echoed in combined
    envelopes.  ``symbol`` is the lowercase symbol, or ``None`` for the
    all-market ``!…`` streams.  ``interval`` is the kline interval, the
    rolling-ticker window or the depth update speed, when the name has one.
    ``levels`` is 5, 10 or 20 for partial depth.  ``timezone`` is ``"+08:00"``
    for the UTC+8 kline variant.
    """

    name: str
    kind: str
    symbol: str | None = None
    interval: str | None = None
    levels: int | None = None
    timezone: str | None = None

    @property
    def is_array(self) -> bool:
        """True for the ``!…@arr`` streams, whose payload is a JSON array."""
        return self.kind.endswith("_arr")

    def __str__(self) -> str:
        return self.name


def _check_symbol(symbol: str, name: str) -> None:
    if not symbol:
        raise InvalidStreamName(f"{name!r}: the symbol is empty")
    if _SYMBOL_BAD.search(symbol):
        raise InvalidStreamName(f"{name!r}: the symbol {symbol!r} contains a forbidden character")
    if symbol != symbol.lower():
        raise InvalidStreamName(
            f"{name!r}: Binance stream names use lowercase symbols; use {symbol.lower()!r}"
        )


def parse_stream(name: str | Stream) -> Stream:
    """Parse a stream name such as ``"btcusdt@depth@100ms"`` into a :class:`Stream`.

    Raises :class:`~trio_feed.InvalidStreamName` (a ``ValueError``) for a name
    that is malformed, has an uppercase symbol, or names no stream kind that
    Binance documents.
    """
    if isinstance(name, Stream):
        return name
    if not isinstance(name, str):
        raise InvalidStreamName(f"a stream name must be a str, not {type(name).__name__}")
    if name.startswith("!"):
        return _parse_all_market(name)
    symbol, sep, rest = name.partition("@")
    if not sep:
        raise InvalidStreamName(f"{name!r}: expected '<symbol>@<stream>', e.g. 'btcusdt@trade'")
    _check_symbol(symbol, name)
    parts = rest.split("@")
    head, tail = parts[0], parts[1:]

    if head in ("trade", "aggTrade", "blockTrade", "miniTicker", "ticker", "avgPrice",
                "bookTicker", "referencePrice") and not tail:
        return Stream(name, head, symbol)
    if head.startswith("kline_"):
        interval = head[len("kline_"):]
        if interval not in KLINE_INTERVALS:
            raise InvalidStreamName(f"{name!r}: unknown kline interval {interval!r}")
        if not tail:
            return Stream(name, "kline", symbol, interval)
        if tail == ["+08:00"]:
            return Stream(name, "kline", symbol, interval, timezone="+08:00")
        raise InvalidStreamName(f"{name!r}: the only kline timezone suffix is '@+08:00'")
    if head.startswith("ticker_") and not tail:
        window = head[len("ticker_"):]
        if window not in TICKER_WINDOWS:
            raise InvalidStreamName(f"{name!r}: ticker windows are 1h, 4h and 1d")
        return Stream(name, "ticker_window", symbol, window)
    if head.startswith("depth"):
        speed = None
        if tail:
            if len(tail) != 1 or tail[0] not in DEPTH_SPEEDS:
                raise InvalidStreamName(f"{name!r}: depth speeds are '@100ms' and '@1000ms'")
            speed = tail[0]
        if head == "depth":
            return Stream(name, "depth", symbol, speed)
        levels_text = head[len("depth"):]
        if levels_text in ("5", "10", "20"):  # exactly; not "05" nor non-ASCII digits
            return Stream(name, "depth_partial", symbol, speed, levels=int(levels_text))
        raise InvalidStreamName(f"{name!r}: partial depth has 5, 10 or 20 levels")
    raise InvalidStreamName(f"{name!r}: unknown stream kind {rest!r}")


def _parse_all_market(name: str) -> Stream:
    if name == "!miniTicker@arr":
        return Stream(name, "miniTicker_arr")
    if name == "!ticker@arr":
        return Stream(name, "ticker_arr")
    if name == SERVER_SHUTDOWN:
        return Stream(name, "serverShutdown")
    match = re.fullmatch(r"!ticker_(\w+)@arr", name)
    if match and match.group(1) in TICKER_WINDOWS:
        return Stream(name, "ticker_window_arr", interval=match.group(1))
    if name == "!bookTicker":
        raise InvalidStreamName(
            "'!bookTicker' was removed by Binance in 2022-12; subscribe to "
            "'<symbol>@bookTicker' per symbol instead"
        )
    raise InvalidStreamName(f"{name!r}: unknown all-market stream")
