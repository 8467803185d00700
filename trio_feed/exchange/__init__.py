"""The embedded local exchange: a deterministic market behind a real WebSocket server.

Examples and tests run against it by default, so nothing needs the internet.
It speaks Binance's vocabulary through :mod:`trio_feed.binance`, so the
client and the server cannot disagree about what a stream name means.
"""

from ._market import DEFAULT_SYMBOLS, EPOCH_MS, TICK_MS, Market, SymbolSpec
from ._server import ExchangeStatistics, LocalExchange, open_exchange

__all__ = [
    "DEFAULT_SYMBOLS",
    "EPOCH_MS",
    "TICK_MS",
    "ExchangeStatistics",
    "LocalExchange",
    "Market",
    "SymbolSpec",
    "open_exchange",
]
