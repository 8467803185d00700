"""Many distinct, valid stream names on few symbols, for the streams-per-connection limit.

A market costs time per symbol, so the limit is tested with every stream kind
of a few symbols rather than one stream on each of many symbols.
"""

from __future__ import annotations

from trio_feed.binance._streams import KLINE_INTERVALS, TICKER_WINDOWS

_KINDS = [
    "trade", "aggTrade", "blockTrade", "miniTicker", "ticker", "avgPrice", "bookTicker",
    "referencePrice",
    *(f"{depth}{speed}" for depth in ("depth", "depth5", "depth10", "depth20")
      for speed in ("", "@100ms", "@1000ms")),
    *(f"kline_{interval}{zone}" for interval in KLINE_INTERVALS for zone in ("", "@+08:00")),
    *(f"ticker_{window}" for window in TICKER_WINDOWS),
]


def many_streams(count: int) -> tuple[list[str], list[str]]:
    """``(symbols, names)``: ``count`` distinct stream names and the symbols they use."""
    symbols = [f"s{i}" for i in range(-(-count // len(_KINDS)))]
    names = [f"{symbol}@{kind}" for symbol in symbols for kind in _KINDS][:count]
    return symbols, names
