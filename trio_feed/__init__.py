"""trio_feed: Binance market-data WebSocket streams on Trio, with checked zero-copy borrowing.

The public surface is listed in ``__all__`` (a test guards it).  The layers,
from the socket up:

- ``trio_feed.wire``: sans-I/O RFC 6455 (frames lent as views, client frames, handshake);
- :func:`open_connection`: the only layer that does I/O;
- :func:`run_inline` / :func:`run_channel`: borrow in one task, or copy across two;
- ``trio_feed.binance``: stream names, typed events, decoding, sequence rules, the pure book;
- :func:`open_feed` (``trio_feed.feed``): all of the above, as ``async for event in feed``;
- :func:`open_order_books` (``trio_feed.books``): local order books kept in sync over REST;
- ``trio_feed.exchange``: the embedded local exchange the examples and tests run on;
- ``trio_feed.recording`` and the ``trio-feed`` command: record, replay and inspect streams;
- ``trio_feed.testing``: the same tools for your own tests.

``import trio_feed`` stays light: the order books (and httpx, which only they
use) and the pure ``OrderBook`` are imported the first time one of their
names is looked up here.
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._connection import Connection, ConnectionContext, ConnectionStatistics, open_connection
from ._errors import (
    BorrowError,
    ConnectionClosed,
    DecodeError,
    HandshakeError,
    InvalidStreamName,
    InvalidSymbol,
    MessageTooBig,
    ProtocolError,
    RateLimited,
    RecordingError,
    RequestTimeout,
    RestError,
    SlowConsumerError,
    SnapshotError,
    SubscriptionError,
    TrioFeedError,
)
from ._pipelines import PipelineCounters, PipelineStatistics, run_channel, run_inline
from ._version import __version__ as __version__
from .binance import Decoder, Event, Stream, format_event, parse_stream
from .feed import (
    AttemptLimiter,
    Feed,
    FeedStatistics,
    SlowConsumerPolicy,
    StreamStatistics,
    open_feed,
)

if _TYPE_CHECKING:
    from .binance import OrderBook
    from .books import (
        DEFAULT_REST_URL,
        OrderBooks,
        OrderBooksStatistics,
        open_order_books,
    )
    from .rest import WeightBudget

#: Names imported on first use (see the module docstring), and the part that serves each.
_LAZY = {
    "DEFAULT_REST_URL": "books",
    "OrderBooks": "books",
    "OrderBooksStatistics": "books",
    "WeightBudget": "rest",  # light: the budget alone, no httpx
    "open_order_books": "books",
    "OrderBook": "binance",
}


def __getattr__(name: str) -> _Any:
    part = _LAZY.get(name)
    if part is not None:
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{part}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trio_feed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_REST_URL",
    "AttemptLimiter",
    "BorrowError",
    "Connection",
    "ConnectionClosed",
    "ConnectionContext",
    "ConnectionStatistics",
    "DecodeError",
    "Decoder",
    "Event",
    "Feed",
    "FeedStatistics",
    "HandshakeError",
    "InvalidStreamName",
    "InvalidSymbol",
    "MessageTooBig",
    "OrderBook",
    "OrderBooks",
    "OrderBooksStatistics",
    "PipelineCounters",
    "PipelineStatistics",
    "ProtocolError",
    "RateLimited",
    "RecordingError",
    "RequestTimeout",
    "RestError",
    "SlowConsumerError",
    "SlowConsumerPolicy",
    "SnapshotError",
    "Stream",
    "StreamStatistics",
    "SubscriptionError",
    "TrioFeedError",
    "WeightBudget",
    "format_event",
    "open_connection",
    "open_feed",
    "open_order_books",
    "parse_stream",
    "run_channel",
    "run_inline",
]


# A library logs, the application decides where to: silent until configured.
_logging.getLogger("trio_feed").addHandler(_logging.NullHandler())
