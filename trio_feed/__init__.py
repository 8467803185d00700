"""trio_feed: Binance market-data WebSocket streams on Trio, with checked zero-copy borrowing.

The public surface is listed in ``__all__`` (a test guards it).  The layers,
from the socket up:

- ``trio_feed.wire``: sans-I/O RFC 6455 (frames lent as views, client frames, handshake);
- :func:`open_connection`: the only layer that does I/O;
- :func:`run_inline` / :func:`run_channel`: borrow in one task, or copy across two;
- ``trio_feed.binance``: stream names, typed events, decoding;
- :func:`open_feed`: all of the above, as ``async for event in feed``;
- :func:`open_order_books`: local order books kept in sync by Binance's procedure;
- ``trio_feed.exchange``: the embedded local exchange the examples and tests run on;
- ``trio_feed.recording`` and the ``trio-feed`` command: record, replay and inspect streams;
- ``trio_feed.testing``: the same tools for your own tests.
"""

import logging as _logging
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._backoff import AttemptLimiter
from ._books import (
    DEFAULT_REST_URL,
    OrderBooks,
    OrderBooksStatistics,
    SnapshotError,
    WeightBudget,
    open_order_books,
)
from ._connection import Connection, ConnectionStatistics, open_connection
from ._errors import (
    BorrowError,
    ConnectionClosed,
    DecodeError,
    HandshakeError,
    InvalidStreamName,
    MessageTooBig,
    ProtocolError,
    SlowConsumerError,
    SubscriptionError,
    TrioFeedError,
)
from ._feed import Feed, open_feed
from ._feed_statistics import FeedStatistics, StreamStatistics
from ._outbox import SlowConsumerPolicy
from ._pipelines import PipelineCounters, PipelineStatistics, run_channel, run_inline
from .binance import Decoder, Event, OrderBook, Stream, format_event, parse_stream

__all__ = [
    "DEFAULT_REST_URL",
    "AttemptLimiter",
    "BorrowError",
    "Connection",
    "ConnectionClosed",
    "ConnectionStatistics",
    "DecodeError",
    "Decoder",
    "Event",
    "Feed",
    "FeedStatistics",
    "HandshakeError",
    "InvalidStreamName",
    "MessageTooBig",
    "OrderBook",
    "OrderBooks",
    "OrderBooksStatistics",
    "PipelineCounters",
    "PipelineStatistics",
    "ProtocolError",
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

try:
    __version__: str = _version("trio_feed")
    """The installed distribution's version (``trio-feed --version`` prints it)."""
except _PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# A library logs, the application decides where to: silent until configured.
_logging.getLogger("trio_feed").addHandler(_logging.NullHandler())
