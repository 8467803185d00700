"""The exception tree of trio_feed.

Every error the library raises on purpose is a :class:`TrioFeedError`, so a
caller can catch "anything trio_feed refused" in one clause, and each leaf says
what went wrong precisely enough to act on::

    TrioFeedError
    ├── BorrowError              a lent view outlived its frame (a bug in the caller)
    ├── ProtocolError            the peer broke RFC 6455; carries the close code we sent
    │   └── MessageTooBig        a frame or message exceeded max_message_size (1009)
    ├── HandshakeError           the HTTP upgrade was refused or malformed
    ├── ConnectionClosed         the connection is gone; carries the close code and reason
    ├── InvalidStreamName        a Binance stream name that cannot exist (also ValueError)
    ├── DecodeError              a payload that is not a Binance message (also ValueError)
    ├── SubscriptionError        the server answered a control request with an error
    ├── RequestTimeout           a control request got no reply within request_timeout
    ├── SlowConsumerError        the consumer fell behind under the 'disconnect' policy
    ├── SnapshotError            depth snapshots for a symbol kept failing (order books)
    │   └── InvalidSymbol        the depth endpoint does not list the symbol (-1121)
    ├── RateLimited              a REST endpoint answered 429/418: wait ``retry_after`` s
    ├── RestError                a REST request got no answer, or an error status
    ├── RecordingError           a recording that cannot be read or written
    └── BrokerError              the Redis Streams broker refused something (trio_feed.broker)
        ├── SchemaError          an entry of an unknown schema version or format (also ValueError)
        └── SinkClosed           send() on a sink that is closed or whose writer failed

``Stale`` (a :class:`ConnectionClosed` the feed's watchdog raises on a silent
connection) never reaches the caller: the feed counts it and reconnects.

Transport failures below the WebSocket layer (refused connections, TLS
verification failures, resets) are not re-wrapped: they arrive as the
``OSError``, ``ssl.SSLError`` or ``trio.BrokenResourceError`` that trio raised,
because those types already say exactly what happened.  ``open_connection``
adds the URL to the message where it can.

Close codes follow RFC 6455 section 7.4.1; :class:`CloseCode` lives in
``trio_feed.wire`` with the rest of the protocol vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

__all__ = [
    "BorrowError",
    "BrokerError",
    "ConnectionClosed",
    "DecodeError",
    "HandshakeError",
    "InvalidStreamName",
    "InvalidSymbol",
    "MessageTooBig",
    "ProtocolError",
    "RateLimited",
    "RecordingError",
    "RequestTimeout",
    "RestError",
    "SchemaError",
    "SinkClosed",
    "SlowConsumerError",
    "SnapshotError",
    "Stale",
    "SubscriptionError",
    "TrioFeedError",
]


class TrioFeedError(Exception):
    """Base class of every error trio_feed raises on purpose."""


class BorrowError(TrioFeedError):
    """A view lent for one frame was still alive when its buffer was about to be reused.

    This is always a bug in the code that received the lent view: it stored the
    view (or a slice of it, or an object such as a ``numpy`` array built on
    it) somewhere that outlived the handler call.  Copy what you need with
    ``bytes(view)`` inside the handler instead.

    The message names the frame whose view escaped.  The buffer is *not*
    reused after this error: the connection is unusable and must be closed.
    """


class ProtocolError(TrioFeedError):
    """The peer violated the WebSocket protocol.

    ``close_code`` is the code the client sends (or would send) in its Close
    frame: 1002 for a protocol violation, 1007 for invalid UTF-8 in a text
    message, 1009 for an oversized frame or message.
    """

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class MessageTooBig(ProtocolError):
    """A frame or reassembled message exceeded the configured maximum size (1009)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, close_code=1009)


class HandshakeError(TrioFeedError):
    """The server refused the HTTP upgrade, or answered it incorrectly.

    ``status`` is the HTTP status code when one was received, else ``None``;
    ``headers`` the response's headers (lowercased names; empty if none were
    parsed); ``body`` the start of the response body, if any.  ``retry_after``
    is the ``Retry-After`` header in seconds from now (it may be given in
    seconds or as an HTTP date), or ``None``.
    """

    def __init__(
        self, message: str, status: int | None = None, headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: Mapping[str, str] = dict(headers or {})
        #: The start of a refusing server's response body (Binance explains a 451 there),
        #: at most ``MAX_REFUSAL_BODY`` bytes of it; empty if none arrived in time.
        self.body = body

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        import datetime
        import email.utils  # an HTTP date: rare, and email costs 15 ms to import

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - time.time())


class ConnectionClosed(TrioFeedError):
    """The WebSocket connection is closed; no more messages will arrive.

    ``code`` is the close code the peer sent (1005 if its Close frame had no
    code, 1006 if the connection dropped without a Close frame) and ``reason``
    its text.  ``initiated_by_peer`` tells who started the closing handshake.
    """

    def __init__(self, code: int, reason: str = "", *, initiated_by_peer: bool = True) -> None:
        who = "peer" if initiated_by_peer else "client"
        text = f"connection closed by {who} with code {code}"
        if reason:
            text += f": {reason}"
        super().__init__(text)
        self.code = code
        self.reason = reason
        self.initiated_by_peer = initiated_by_peer


class InvalidStreamName(TrioFeedError, ValueError):
    """A Binance stream name that is malformed or names no known stream kind."""


class DecodeError(TrioFeedError, ValueError):
    """A payload that could not be decoded as a Binance message.

    ``payload`` holds (at most the first 200 bytes of) the offending message,
    as owned bytes, so it can be logged after the frame is gone.
    """

    def __init__(self, message: str, payload: bytes = b"") -> None:
        super().__init__(message)
        self.payload = payload[:200]


class SubscriptionError(TrioFeedError):
    """The server answered a SUBSCRIBE/UNSUBSCRIBE/... request with an error.

    ``code`` and ``msg`` are Binance's error fields; ``request_id`` is the id
    of the request it answered, when the server echoed one; ``streams`` the
    streams that request named (empty when unknown).
    """

    def __init__(
        self, code: int, msg: str, request_id: object = None, streams: Sequence[str] = ()
    ) -> None:
        text = f"Binance error {code}: {msg} (request id {request_id!r})"
        if streams:
            shown = ", ".join(streams[:5]) + (f" and {len(streams) - 5} more"
                                              if len(streams) > 5 else "")
            text += f" for {len(streams)} streams: {shown}"
        super().__init__(text)
        self.code = code
        self.msg = msg
        self.request_id = request_id
        self.streams = tuple(streams)


class RequestTimeout(TrioFeedError):
    """A control request (SUBSCRIBE, UNSUBSCRIBE...) got no reply within ``timeout`` seconds.

    The connection that carried it is treated as broken and replaced; the
    streams stay wanted, so the replacement subscribes them again.
    """

    def __init__(self, method: str, streams: Sequence[str], timeout: float) -> None:
        super().__init__(
            f"no reply to {method} of {len(streams)} streams within {timeout} s "
            "(request_timeout); the connection is replaced"
        )
        self.method = method
        self.streams = tuple(streams)
        self.timeout = timeout


class SlowConsumerError(TrioFeedError):
    """The feed's consumer fell too far behind and the policy was ``disconnect``.

    Raised by the feed's iteration after every event queued before the
    overflow has been handed out; ``feed.statistics().dropped`` counts what
    was read and not delivered.
    """

class Stale(ConnectionClosed):
    """The watchdog fired: no frame for ``stale_after`` s, or our ping went unanswered."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(1006, message, initiated_by_peer=False)
        self.cause = cause

class SnapshotError(TrioFeedError):
    """Depth snapshots for a symbol kept failing; the books cannot sync it.

    Raised from the ``async with open_order_books(...)`` block after
    ``max_snapshot_failures`` consecutive failures (429s do not count).  The
    cause is chained as ``__cause__``.
    """

class InvalidSymbol(SnapshotError):
    """The exchange does not list ``symbol``: its depth endpoint answered ``-1121``.

    Raised from the ``async with open_order_books(...)`` block at the first
    such answer, never retried: no later request can succeed.
    """

    def __init__(self, symbol: str, message: str = "Invalid symbol.") -> None:
        super().__init__(f"the exchange does not list the symbol {symbol!r} ({message})")
        self.symbol = symbol


class RateLimited(TrioFeedError):
    """Raised by a snapshot fetcher for HTTP 429 or 418: wait ``retry_after`` seconds."""

    def __init__(self, retry_after: float, status: int = 429) -> None:
        super().__init__(f"HTTP {status}: rate limited, retry after {retry_after} s")
        self.retry_after = retry_after
        self.status = status

class RestError(TrioFeedError):
    """A REST request failed: no answer (``status`` ``None``) or an HTTP error status.

    Raised by the REST client the order books and a feed's back-fill share;
    both retry it with backoff, up to their named limits.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RecordingError(TrioFeedError):
    """A recording that cannot be read or written: the message names the file (and line)."""


def lone_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The single leaf of ``group`` if it holds exactly one, else ``group`` itself.

    trio's nurseries always raise an ``ExceptionGroup``; a task pair that
    fails for one reason should reach the caller as that reason.  Callers
    write ``raise lone_exception(group) from None`` inside ``except
    BaseExceptionGroup``; the leaf keeps its own traceback.
    """
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    return leaves[0] if len(leaves) == 1 else group


class BrokerError(TrioFeedError):
    """The Redis Streams broker (``trio_feed.broker``) refused something or could not do it."""


class SchemaError(BrokerError, ValueError):
    """An entry read from the broker has a schema version or format this reader does not know."""


class SinkClosed(BrokerError):
    """``send`` on a broker sink that is closed, or whose writer task failed."""
