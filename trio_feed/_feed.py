"""``open_feed``: stream names in, typed Binance events out, over either pipeline.

::

    async with open_feed(["btcusdt@trade", "ethusdt@bookTicker"], mode="inline") as feed:
        async for event in feed:
            print(event)

``mode="channel"`` (the default) runs the copy pipeline's reader task in a
nursery owned by the feed; the consumer's ``async for`` receives one batch of
owned payloads per receive chunk and decodes it.  ``mode="inline"`` starts no
task at all: the consumer's own ``async for`` reads a chunk, decodes every
message in it straight from the lent views into events, releases each view,
and only then hands the events out.  Either way no view is lent across an
``await`` and none is ever handed to the consumer: events are owned objects.

The feed is a class with ``__aenter__``/``__aexit__`` and ``__anext__``, not
an async generator: an async generator cannot safely suspend inside the
nursery that holds the reader task.

Errors arrive in order.  If decoding fails or the connection ends after some
events of a chunk were decoded, those events are handed out first and the
exception is raised on the next iteration, so nothing already received is
lost.  When the connection ends, iteration raises
:class:`~trio_feed.ConnectionClosed`; a feed never stops silently.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Literal

import attrs
import trio

from ._connection import Connection, ConnectionStatistics, connect
from ._errors import ProtocolError, lone_exception
from ._pipelines import DEFAULT_MAX_BATCHES, PipelineCounters, drain, read_batches
from .binance import DEFAULT_BASE_URL, Decoder, Event, Stream, combined_url, parse_stream

__all__ = ["Feed", "FeedStatistics", "open_feed"]


@attrs.frozen
class FeedStatistics:
    """A snapshot of a feed's counters (see :meth:`Feed.statistics`).

    ``messages`` counts messages read off the connection, ``events`` events
    handed to the consumer, ``copies`` payloads copied into owned bytes (0 in
    inline mode), ``batches`` channel hops, ``peak_queued`` the most batches
    waiting at once, ``stalls``/``stall_seconds`` how often and how long the
    reader found the channel full (the consumer was slower than the feed), and
    ``discarded`` messages read but never handed out
    because the feed was closed first (including those that arrived during
    the closing handshake).  So ``messages == events + discarded`` once the
    feed is closed, in both modes.
    """

    mode: str
    messages: int
    events: int
    copies: int
    batches: int
    peak_queued: int
    discarded: int
    stalls: int
    stall_seconds: float
    connection: ConnectionStatistics


class Feed:
    """A running feed: iterate it with ``async for``.  Made by :func:`open_feed`."""

    def __init__(
        self,
        streams: list[Stream],
        *,
        mode: Literal["channel", "inline"],
        url: str,
        decimals: bool,
        max_batches: int,
        connect_options: dict[str, object],
    ) -> None:
        if mode not in ("channel", "inline"):
            raise ValueError(f"mode must be 'channel' or 'inline', not {mode!r}")
        self.streams = streams
        self.mode = mode
        self.url = url
        self._decoder = Decoder(streams, decimals=decimals)
        self._max_batches = max_batches
        self._connect_options = connect_options
        self._counters = PipelineCounters()
        self._pending: deque[Event] = deque()
        self._error: BaseException | None = None
        self._events = 0
        self._conn: Connection | None = None
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._receive: trio.MemoryReceiveChannel[list[bytes]] | None = None
        self._ended: list[Exception] = []

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the feed is not open: use 'async with open_feed(...)'")
        return self._conn

    def statistics(self) -> FeedStatistics:
        c = self._counters
        conn = self.connection
        return FeedStatistics(
            mode=self.mode,
            messages=conn.parser.messages_lent,
            events=self._events,
            copies=c.copies,
            batches=c.batches,
            peak_queued=c.peak_queued,
            discarded=c.discarded + len(self._pending) + conn.statistics().discarded_at_close,
            stalls=c.stalls,
            stall_seconds=c.stall_seconds,
            connection=conn.statistics(),
        )

    # -- lifetime --------------------------------------------------------------

    async def __aenter__(self) -> Feed:
        # orjson rejects invalid UTF-8 itself and the decoder maps that to close
        # code 1007, so the frame layer need not validate text a second time.
        self._conn = await connect(self.url, validate_utf8=False, **self._connect_options)  # type: ignore[arg-type]
        if self.mode == "channel":
            try:
                self._nursery_manager = trio.open_nursery()
                self._nursery = await self._nursery_manager.__aenter__()
                send, self._receive = trio.open_memory_channel[list[bytes]](self._max_batches)
                self._nursery.start_soon(
                    read_batches, self._conn, send, self._counters, self._ended
                )
            except BaseException:
                await self._conn.aclose()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._conn is not None
        try:
            if self._nursery_manager is not None:
                assert self._nursery is not None and self._receive is not None
                self._nursery.cancel_scope.cancel()
                try:
                    await self._nursery_manager.__aexit__(exc_type, exc, tb)
                except BaseExceptionGroup as group:
                    raise lone_exception(group) from None
                finally:
                    self._counters.discarded += drain(self._receive)
                    self._receive.close()
        finally:
            await self._conn.aclose()
        return None

    # -- iteration -------------------------------------------------------------

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Event:
        pending = self._pending
        while not pending:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._receive is not None:
                await self._fill_from_channel(self._receive)
            else:
                await self._fill_inline(self.connection)
        self._events += 1
        return pending.popleft()

    async def _fill_inline(self, conn: Connection) -> None:
        """Read one chunk and decode every message in it, in this task (the borrow path)."""
        decode = self._decoder.decode
        append = self._pending.append
        try:
            for view in conn.parser.messages():
                try:
                    append(decode(view))
                finally:
                    view.release()
        except ProtocolError as exc:
            await conn.fail(exc)
            self._error = exc
            return
        except Exception as exc:
            self._error = exc
            return
        if not self._pending:
            try:
                await conn.receive_more()
            except Exception as exc:
                self._error = exc

    async def _fill_from_channel(self, receive: trio.MemoryReceiveChannel[list[bytes]]) -> None:
        """Take one batch of owned payloads from the reader task and decode it (the copy path)."""
        try:
            batch = await receive.receive()
        except trio.EndOfChannel:
            self._error = self._ended[0] if self._ended else ProtocolError("reader task ended")
            return
        decode = self._decoder.decode
        append = self._pending.append
        for index, payload in enumerate(batch):
            try:
                append(decode(payload))
            except ProtocolError as exc:
                await self.connection.fail(exc)
                self._error = exc
                self._counters.discarded += len(batch) - index - 1
                return
            except Exception as exc:
                self._error = exc
                self._counters.discarded += len(batch) - index - 1
                return


def open_feed(
    streams: Iterable[str | Stream],
    *,
    mode: Literal["channel", "inline"] = "channel",
    url: str | None = None,
    base_url: str = DEFAULT_BASE_URL,
    decimals: bool = False,
    max_batches: int = DEFAULT_MAX_BATCHES,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
    close_timeout: float = 5.0,
    max_message_size: int | None = None,
    poison: bool = False,
) -> Feed:
    """Open a feed of typed events for ``streams``: use as ``async with open_feed(...) as feed``.

    The connection goes to ``base_url``'s combined endpoint
    (``/stream?streams=a/b``), Binance spot production by default; pass the
    local exchange's ``base_url`` to use it instead.  ``url`` overrides the
    whole URL (for a raw ``/ws/<stream>`` connection, say); ``streams`` then
    only tells the decoder what the payloads are.

    ``mode`` picks the pipeline (see the module docstring).  ``decimals=True``
    turns prices and quantities into ``Decimal``; by default they stay the
    exact wire strings.  ``max_batches`` bounds the channel of the copy
    pipeline.  The remaining arguments go to
    :func:`~trio_feed.open_connection`.

    Raises :class:`~trio_feed.InvalidStreamName` at once for a bad name.
    """
    parsed = [parse_stream(s) for s in streams]
    if url is None:
        url = combined_url(parsed, base_url)
    options: dict[str, object] = dict(
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        poison=poison,
    )
    if max_message_size is not None:
        options["max_message_size"] = max_message_size
    return Feed(
        parsed,
        mode=mode,
        url=url,
        decimals=decimals,
        max_batches=max_batches,
        connect_options=options,
    )
