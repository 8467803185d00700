"""Binance stream names.

A stream name is the only key Binance gives for some payloads: bookTicker and
partial depth carry no ``e`` field, and partial depth not even a symbol.  So
the name is parsed once, at subscription time, into a :class:`Stream` whose
``kind`` tells the decoder what to expect.  The local exchange parses the
same names with the same function, so the client and the server cannot
disagree about what a name means.

Each market has its own names: :func:`parse_stream` takes ``market``
(``"spot"``, the default, or ``"usdm"`` for USD-M futures) and refuses a name
the market does not document, saying which market has it.  USD-M adds mark
price, liquidations, continuous-contract klines, composite and asset
indexes, contract info, ``!bookTicker``, ``@depth@500ms`` and
``@rpiDepth@500ms``, and has no ``@trade``, ``@avgPrice`` or ``1s`` klines.

Source: ``STREAMS.md`` §1, §4 and §8, and the "Websocket Market Streams"
pages of developers.binance.com for USD-M.  The URLs that carry them are
``_urls``'s.
"""

from __future__ import annotations

import re

import attrs

from .._errors import InvalidStreamName

__all__ = [
    "ALL_BOOK_TICKER",
    "EVENT_DRIVEN_KINDS",
    "KINDS",
    "KLINE_INTERVALS",
    "MARKET_NAMES",
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
    # USD-M futures only.
    "markPrice": "markPriceUpdate",
    "markPrice_arr": "markPriceUpdate",
    "forceOrder": "forceOrder",
    "forceOrder_all": "forceOrder",  # !forceOrder@arr: one object per message, not an array
    "bookTicker_all": "bookTicker",  # !bookTicker
    "continuousKline": "continuous_kline",
    "compositeIndex": "compositeIndex",
    "contractInfo": "contractInfo",
    "assetIndex": "assetIndexUpdate",
    "assetIndex_arr": "assetIndexUpdate",
    "rpiDepth": "depthUpdate",
}

#: Kinds pushed only when something happens (a trade, a change of the best
#: price, a liquidation), which may be quiet for long on an illiquid symbol.
#: Every other kind is pushed on a clock.
EVENT_DRIVEN_KINDS = frozenset({
    "trade", "aggTrade", "blockTrade", "bookTicker", "bookTicker_all", "referencePrice",
    "serverShutdown", "forceOrder", "forceOrder_all", "contractInfo",
})

#: USD-M's all-market bookTicker stream: symbols mixed, each with its own update ids.
ALL_BOOK_TICKER = "!bookTicker"

#: The markets :func:`parse_stream` knows.
MARKET_NAMES = ("spot", "usdm")

#: Kline intervals, shortest first.  ``1w`` opens on Monday and ``1M`` on
#: the first of the month, so only the others have a fixed length.
KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
                   "1d", "3d", "1w", "1M")
#: Rolling-window ticker windows (``@ticker_<w>``).
TICKER_WINDOWS = ("1h", "4h", "1d")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
DEPTH_LEVELS = frozenset({5, 10, 20})
DEPTH_SPEEDS = frozenset({"100ms", "1000ms"})
#: USD-M: depth is pushed every 250 ms unless ``@500ms`` or ``@100ms`` is asked for.
USDM_DEPTH_SPEEDS = frozenset({"100ms", "500ms"})
#: USD-M kline intervals: spot's without ``1s``.
USDM_KLINE_INTERVALS = KLINE_INTERVALS[1:]
#: ``<pair>_<contract type>@continuousKline_<interval>``.
CONTRACT_TYPES = ("perpetual", "current_quarter", "next_quarter")



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
    for the UTC+8 kline variant.  ``contract_type`` is the continuous
    kline's contract (``"perpetual"``...), its ``symbol`` being the pair.
    ``market`` is the market whose rules the name was read by.
    """

    name: str
    kind: str
    symbol: str | None = None
    interval: str | None = None
    levels: int | None = None
    timezone: str | None = None
    contract_type: str | None = None
    market: str = "spot"

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


def parse_stream(name: str | Stream, market: str = "spot") -> Stream:
    """Parse a stream name such as ``"btcusdt@depth@100ms"`` into a :class:`Stream`.

    ``market`` is ``"spot"`` (the default) or ``"usdm"`` (USD-M futures).
    Raises :class:`~trio_feed.InvalidStreamName` (a ``ValueError``) for a name
    that is malformed, has an uppercase symbol, or names no stream kind that
    the market documents (the message says when the other market has it).
    A :class:`Stream` is returned as it is (its ``market`` says which rules read it).
    """
    if isinstance(name, Stream):
        return name
    if not isinstance(name, str):
        raise InvalidStreamName(f"a stream name must be a str, not {type(name).__name__}")
    if market == "usdm":
        try:
            return _parse_usdm(name)
        except InvalidStreamName as exc:
            raise _elsewhere(name, exc, "spot", "usdm") from None
    if market != "spot":
        raise ValueError(f"unknown market {market!r}: use one of {list(MARKET_NAMES)}")
    try:
        return _parse_spot(name)
    except InvalidStreamName as exc:
        raise _elsewhere(name, exc, "usdm", "spot") from None


_MARKET_TITLES = {"spot": "spot", "usdm": "USD-M futures"}


def _elsewhere(name: str, exc: InvalidStreamName, other: str, market: str) -> InvalidStreamName:
    """``exc``, saying so when the name is valid on the ``other`` market."""
    try:
        (_parse_usdm if other == "usdm" else _parse_spot)(name)
    except InvalidStreamName:
        return exc
    return InvalidStreamName(
        f"{exc}; {name!r} is a {_MARKET_TITLES[other]} stream, not a "
        f"{_MARKET_TITLES[market]} one: open it with market={other!r} (one feed serves one market)"
    )


def _parse_spot(name: str) -> Stream:
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


def _parse_usdm(name: str) -> Stream:
    """A USD-M futures stream name (see the module docstring)."""
    if name.startswith("!"):
        return _parse_usdm_all_market(name)
    symbol, sep, rest = name.partition("@")
    if not sep:
        raise InvalidStreamName(f"{name!r}: expected '<symbol>@<stream>', e.g. 'btcusdt@aggTrade'")
    _check_symbol(symbol, name)
    parts = rest.split("@")
    head, tail = parts[0], parts[1:]
    m = "usdm"
    if head in ("aggTrade", "miniTicker", "ticker", "bookTicker", "forceOrder",
                "compositeIndex", "assetIndex") and not tail:
        return Stream(name, head, symbol, market=m)
    if head == "markPrice":
        if not tail:
            return Stream(name, "markPrice", symbol, market=m)
        if tail == ["1s"]:
            return Stream(name, "markPrice", symbol, "1s", market=m)
        raise InvalidStreamName(f"{name!r}: mark price comes every 3 s, or every 1 s with '@1s'")
    if head.startswith("kline_") and not tail:
        interval = head[len("kline_"):]
        if interval not in USDM_KLINE_INTERVALS:
            raise InvalidStreamName(
                f"{name!r}: unknown kline interval {interval!r} on USD-M futures (no 1s)"
            )
        return Stream(name, "kline", symbol, interval, market=m)
    if head.startswith("continuousKline_") and not tail:
        interval = head[len("continuousKline_"):]
        contract = next((c for c in CONTRACT_TYPES if symbol.endswith("_" + c)), "")
        pair = symbol[: -len(contract) - 1] if contract else ""
        if not pair:
            raise InvalidStreamName(
                f"{name!r}: expected '<pair>_<{'|'.join(CONTRACT_TYPES)}>"
                "@continuousKline_<interval>'"
            )
        if interval not in USDM_KLINE_INTERVALS:
            raise InvalidStreamName(
                f"{name!r}: unknown kline interval {interval!r} on USD-M futures (no 1s)"
            )
        return Stream(name, "continuousKline", pair, interval, contract_type=contract, market=m)
    if head == "rpiDepth":
        if tail != ["500ms"]:
            raise InvalidStreamName(f"{name!r}: the RPI depth stream is '<symbol>@rpiDepth@500ms'")
        return Stream(name, "rpiDepth", symbol, "500ms", market=m)
    if head.startswith("depth"):
        speed = None
        if tail:
            if len(tail) != 1 or tail[0] not in USDM_DEPTH_SPEEDS:
                raise InvalidStreamName(
                    f"{name!r}: USD-M depth speeds are 250 ms (no suffix), '@500ms' and '@100ms'"
                )
            speed = tail[0]
        if head == "depth":
            return Stream(name, "depth", symbol, speed, market=m)
        levels_text = head[len("depth"):]
        if levels_text in ("5", "10", "20"):
            return Stream(name, "depth_partial", symbol, speed, levels=int(levels_text), market=m)
        raise InvalidStreamName(f"{name!r}: partial depth has 5, 10 or 20 levels")
    raise InvalidStreamName(f"{name!r}: unknown stream kind {rest!r} on USD-M futures")


def _parse_usdm_all_market(name: str) -> Stream:
    m = "usdm"
    fixed = {
        "!miniTicker@arr": "miniTicker_arr",
        "!ticker@arr": "ticker_arr",
        ALL_BOOK_TICKER: "bookTicker_all",
        "!forceOrder@arr": "forceOrder_all",
        "!contractInfo": "contractInfo",
        "!assetIndex@arr": "assetIndex_arr",
        SERVER_SHUTDOWN: "serverShutdown",
    }
    kind = fixed.get(name)
    if kind is not None:
        return Stream(name, kind, market=m)
    if name == "!markPrice@arr":
        return Stream(name, "markPrice_arr", market=m)
    if name == "!markPrice@arr@1s":
        return Stream(name, "markPrice_arr", interval="1s", market=m)
    raise InvalidStreamName(f"{name!r}: unknown all-market stream on USD-M futures")
