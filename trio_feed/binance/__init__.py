"""The Binance vocabulary: stream names and URLs, typed events, decoding.

Nothing here knows about sockets or trio; the local exchange and the client
both speak through this package, so they cannot disagree about a name.
"""

from ._decode import Decoder
from ._events import (
    AggTrade,
    AvgPrice,
    BlockTrade,
    BookTicker,
    ControlError,
    ControlResponse,
    DepthUpdate,
    Event,
    Kline,
    Level,
    MiniTicker,
    MiniTickerArray,
    Number,
    PartialDepth,
    ReferencePrice,
    RollingWindowTicker,
    RollingWindowTickerArray,
    ServerShutdown,
    Ticker,
    TickerArray,
    Trade,
    UnknownEvent,
    format_event,
)
from ._streams import DEFAULT_BASE_URL, KINDS, Stream, combined_url, parse_stream, raw_url

__all__ = [
    "DEFAULT_BASE_URL",
    "KINDS",
    "AggTrade",
    "AvgPrice",
    "BlockTrade",
    "BookTicker",
    "ControlError",
    "ControlResponse",
    "Decoder",
    "DepthUpdate",
    "Event",
    "Kline",
    "Level",
    "MiniTicker",
    "MiniTickerArray",
    "Number",
    "PartialDepth",
    "ReferencePrice",
    "RollingWindowTicker",
    "RollingWindowTickerArray",
    "ServerShutdown",
    "Stream",
    "Ticker",
    "TickerArray",
    "Trade",
    "UnknownEvent",
    "combined_url",
    "format_event",
    "parse_stream",
    "raw_url",
]
