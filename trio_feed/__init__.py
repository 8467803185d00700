"""trio_feed: Binance market-data WebSocket streams on Trio."""

from ._errors import (
    BorrowError,
    ConnectionClosed,
    DecodeError,
    HandshakeError,
    InvalidStreamName,
    MessageTooBig,
    ProtocolError,
    SubscriptionError,
    TrioFeedError,
)

__all__ = [
    "BorrowError",
    "ConnectionClosed",
    "DecodeError",
    "HandshakeError",
    "InvalidStreamName",
    "MessageTooBig",
    "ProtocolError",
    "SubscriptionError",
    "TrioFeedError",
]
