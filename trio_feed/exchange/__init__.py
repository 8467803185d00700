"""The embedded local exchange: a deterministic market behind a real WebSocket server.

Examples and tests run against it by default, so nothing needs the internet.
It speaks Binance's vocabulary through :mod:`trio_feed.binance`, so the
client and the server cannot disagree about what a stream name means.
:func:`open_replay_server` serves a recording (``trio_feed.recording``) the
same way, byte for byte.
"""

from ._market import DEFAULT_SYMBOLS, EPOCH_MS, TICK_MS, Market, SymbolSpec
from ._replay import (
    CloseWith,
    DropConnection,
    Ending,
    KeepOpen,
    ReplayServer,
    ReplayStatistics,
    open_replay_server,
)
from ._rest import Faults, RestEndpoint, RestStatistics
from ._server import ConnectionInfo, ExchangeStatistics, LocalExchange, open_exchange

__all__ = [
    "DEFAULT_SYMBOLS",
    "EPOCH_MS",
    "TICK_MS",
    "CloseWith",
    "ConnectionInfo",
    "DropConnection",
    "Ending",
    "ExchangeStatistics",
    "Faults",
    "KeepOpen",
    "LocalExchange",
    "Market",
    "ReplayServer",
    "ReplayStatistics",
    "RestEndpoint",
    "RestStatistics",
    "SymbolSpec",
    "open_exchange",
    "open_replay_server",
]
