"""The Binance vocabulary: stream names and URLs, typed events, decoding, limits.

Spot and USD-M futures (``market="usdm"``) share it; each market's rules are a
``Venue`` record in ``_limits``.

Nothing here knows about sockets or trio; the local exchange and the client
both speak through this package, so they cannot disagree about a name.  The
pure order book (``OrderBook`` and its companions) is imported the first
time one of its names is looked up, since a feed never needs it.
"""

from typing import TYPE_CHECKING, Any

from ._decode import Decoder
from ._events import (
    AggTrade,
    AllBookTicker,
    AssetIndex,
    AssetIndexArray,
    AvgPrice,
    BlockTrade,
    BookTicker,
    CompositeIndex,
    ContinuousKline,
    ContractInfo,
    ControlError,
    ControlResponse,
    DepthUpdate,
    Event,
    ForceOrder,
    FuturesTicker,
    Kline,
    Level,
    MarkPrice,
    MarkPriceArray,
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
from ._sequence import Rules
from ._streams import KINDS, Stream, parse_stream
from ._urls import DEFAULT_BASE_URL, combined_url, raw_url

if TYPE_CHECKING:
    from ._book import (
        BookState,
        BookStatistics,
        NeedSnapshot,
        OrderBook,
        PriceLevel,
        parse_depth_snapshot,
    )
    from ._history import BackfilledAggTrade, BackfilledKline, BackfilledTrade

#: Names imported on first use, and their module: a feed never needs the pure order book,
#: and only a back-filling one needs the events fetched over REST.
_LAZY = {
    **dict.fromkeys(("BookState", "BookStatistics", "NeedSnapshot", "OrderBook", "PriceLevel",
                     "parse_depth_snapshot"), "._book"),
    **dict.fromkeys(("BackfilledAggTrade", "BackfilledKline", "BackfilledTrade"), "._history"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        from importlib import import_module

        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trio_feed.binance' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "DEFAULT_BASE_URL",
    "KINDS",
    "AggTrade",
    "AllBookTicker",
    "AssetIndex",
    "AssetIndexArray",
    "AvgPrice",
    "BackfilledAggTrade",
    "BackfilledKline",
    "BackfilledTrade",
    "BlockTrade",
    "BookState",
    "BookStatistics",
    "BookTicker",
    "CompositeIndex",
    "ContinuousKline",
    "ContractInfo",
    "ControlError",
    "ControlResponse",
    "Decoder",
    "DepthUpdate",
    "Event",
    "ForceOrder",
    "FuturesTicker",
    "Kline",
    "Level",
    "MarkPrice",
    "MarkPriceArray",
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
