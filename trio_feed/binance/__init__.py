"""The Binance vocabulary: stream names and URLs, typed events, decoding, limits.

Nothing here knows about sockets or trio; the local exchange and the client
both speak through this package, so they cannot disagree about a name.
"""

from ._book import (
    BookState,
    BookStatistics,
    NeedSnapshot,
    OrderBook,
    PriceLevel,
    Rules,
    parse_depth_snapshot,
)
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
from ._history import BackfilledAggTrade, BackfilledTrade
from ._streams import KINDS, Stream, parse_stream
from ._urls import DEFAULT_BASE_URL, combined_url, raw_url

__all__ = [
    "DEFAULT_BASE_URL",
    "KINDS",
    "AggTrade",
    "AvgPrice",
    "BackfilledAggTrade",
    "BackfilledTrade",
    "BlockTrade",
    "BookState",
    "BookStatistics",
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
    "NeedSnapshot",
    "Number",
    "OrderBook",
    "PartialDepth",
    "PriceLevel",
    "ReferencePrice",
    "RollingWindowTicker",
    "RollingWindowTickerArray",
    "Rules",
    "ServerShutdown",
    "Stream",
    "Ticker",
    "TickerArray",
    "Trade",
    "UnknownEvent",
    "combined_url",
    "format_event",
    "parse_depth_snapshot",
    "parse_stream",
    "raw_url",
]
