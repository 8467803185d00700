"""The replay server: a recording (or a scripted list of records) served over WebSocket.

Any client can consume a recording as if it were live: the server speaks
the local exchange's URL forms (``/stream?streams=a/b`` and ``/ws/<stream>``,
parsed by the same function, so a bad name is refused with the same HTTP
400) and sends each recorded frame byte for byte, at the recorded pacing or
faster.  Like the exchange it is built on trio-websocket, an independent
RFC 6455 implementation, but it owns each TCP stream itself (via
``trio_websocket.wrap_server_stream``) so that it can also drop a
connection abruptly, which scripted fault scenarios need.

Theory of operation
-------------------

Every connection gets the whole recording from the start, on its own
schedule, as every exchange connection gets its own market: two clients see
the same sequence whenever they connect.

Routing.  A record names its stream when it was received in a combined
envelope (see :mod:`trio_feed.recording`).  For each record, in order:

- a record with a stream goes to clients that asked for that stream, or
  that named no stream at all (``/stream``, ``/ws``); a combined client
  gets the envelope exactly as recorded, a raw client the payload sliced
  out of it (:func:`~trio_feed.recording.unwrap`), still byte-exact;
- a record without a stream (recorded on a raw connection, or a scripted
  raw frame) goes to every client unchanged;
- binary frames are sent as binary, text frames as text.

Pacing.  Record ``i`` is due at ``connection start + (t[i] - t[0]) / speed``,
``t[0]`` being the recording's first receive time, so gaps and bursts keep
their shape.  ``speed=None`` sends back to back.

RPL1: no task outlives its connection, and none outlives the server.
    Each connection's trio-websocket reader, its client-message drain and
    its player share one nursery; leaving :func:`open_replay_server` closes
    every open connection (1001, with a short grace period) and cancels the
    rest.

Endings.  After the last record the server ends each connection as told:
``CloseWith(code, reason)`` (by default 1000, ``"end of recording"``),
``DropConnection()`` (TCP reset, no Close frame: the client sees 1006) or
``KeepOpen()`` (wait for the client to leave).  Client messages are read and
ignored: a replay cannot honour SUBSCRIBE.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._errors import InvalidStreamName
from ..binance._limits import USDM_FUTURES
from ..binance._streams import Stream, parse_stream
from ..binance._urls import combined_url, raw_url
from ..recording import Record, read_recording, unwrap
from ._server import _parse_target, _Rejection, exit_nursery

__all__ = [
    "CloseWith",
    "DropConnection",
    "Ending",
    "KeepOpen",
    "ReplayServer",
    "ReplayStatistics",
    "open_replay_server",
]

#: How long a client has to send its upgrade request.
CONNECT_TIMEOUT = 10.0
#: How long a closing handshake may take before the TCP connection is dropped.
CLOSE_GRACE = 1.0
#: In "as fast as possible" mode, yield to trio after this many sends.
SENDS_PER_CHECKPOINT = 64


@attrs.frozen
class CloseWith:
    """End each connection with a Close frame carrying ``code`` and ``reason``."""

    code: int = 1000
    reason: str = ""


@attrs.frozen
class DropConnection:
    """End each connection by resetting TCP, without a Close frame (the client sees 1006)."""


@attrs.frozen
class KeepOpen:
    """Keep each connection open after the last record, until the client leaves."""


Ending = CloseWith | DropConnection | KeepOpen


@attrs.frozen
class ReplayStatistics:
    """Counters since the server opened.

    ``connections_finished`` counts connections that ended, whoever ended
    them; ``messages_sent`` counts frames sent to all clients together.
    """

    connections_accepted: int
    connections_open: int
    connections_finished: int
    handshakes_rejected: int
    messages_sent: int


@attrs.define
class _Counters:
    connections_accepted: int = 0
    connections_open: int = 0
    connections_finished: int = 0
    handshakes_rejected: int = 0
    messages_sent: int = 0

    def snapshot(self) -> ReplayStatistics:
        return ReplayStatistics(**attrs.asdict(self))


def route(record: Record, combined: bool, wanted: frozenset[str]) -> str | bytes | None:
    """What a client of this kind receives for ``record`` (``None``: nothing); see above.

    A back-filled line was never received, so a replay, which sends what
    the connection received, skips it.
    """
    if record.backfilled:
        return None
    if record.stream is None:
        return record.raw
    if wanted and record.stream not in wanted:
        return None
    if combined or isinstance(record.raw, bytes):
        return record.raw
    return unwrap(record.raw, record.stream)


class ReplayServer:
    """A running replay server; see :func:`open_replay_server`.

    ``base_url`` is where it listens; ``raw_url`` and ``combined_url`` build
    stream URLs on it.  ``streams`` lists the stream names the recording
    holds, in order of first appearance, and ``messages`` how many records
    it has.
    """

    def __init__(
        self,
        *,
        source: str | tuple[Record, ...],
        streams: Sequence[str],
        messages: int,
        first_t: int,
        speed: float | None,
        host: str,
        ssl_context: ssl.SSLContext | None,
        end: Ending,
    ) -> None:
        self._source = source
        self.streams = tuple(streams)
        self.messages = messages
        self.first_t = first_t
        self.speed = speed
        self.host = host
        self.port = 0
        self.ssl_context = ssl_context
        self.end = end
        self._counters = _Counters()
        self._connections: set[WebSocketConnection] = set()
        self._changed = trio.lowlevel.ParkingLot()

    @property
    def base_url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS), without a trailing slash."""
        scheme = "wss" if self.ssl_context is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def raw_url(self, stream: str | Stream) -> str:
        """``/ws/<stream>`` here: payloads without envelopes."""
        return raw_url(stream, self.base_url, market=_market_of([stream]))

    def combined_url(self, streams: Iterable[str | Stream] | None = None) -> str:
        """``/stream?streams=a/b`` here; by default every stream of the recording."""
        names = list(self.streams if streams is None else streams)
        if not names:
            return f"{self.base_url}/stream"
        return combined_url(names, self.base_url, market=_market_of(names))

    def statistics(self) -> ReplayStatistics:
        return self._counters.snapshot()

    async def wait_done(self) -> None:
        """Return once at least one client has connected and every client has finished."""
        while not (self._counters.connections_finished and not self._connections):
            await self._changed.park()

    def records(self) -> Iterator[Record]:
        """The recording, from the start (read again from the file each time)."""
        if isinstance(self._source, str):
            return read_recording(self._source)
        return iter(self._source)

    # -- serving ----------------------------------------------------------------

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3 in _server)
    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                with trio.move_on_after(CONNECT_TIMEOUT) as waited:
                    request = await trio_websocket.wrap_server_stream(nursery, stream)
                if waited.cancelled_caught:
                    nursery.cancel_scope.cancel()
                    return
                try:
                    combined, streams = _replay_target(request.path)
                except _Rejection as rejection:
                    self._counters.handshakes_rejected += 1
                    with trio.move_on_after(CLOSE_GRACE):
                        await request.reject(rejection.status, body=rejection.body)
                    nursery.cancel_scope.cancel()
                    return
                ws = await request.accept()
                self._opened(ws)
                try:
                    await self._serve(ws, stream, combined, frozenset(s.name for s in streams))
                finally:
                    with trio.move_on_after(CLOSE_GRACE) as scope:
                        scope.shield = True
                        await ws.aclose()
                    self._closed(ws)
                    nursery.cancel_scope.cancel()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # a client that vanished mid-handshake is not the server's failure
        finally:
            await trio.aclose_forcefully(stream)

    def _opened(self, ws: WebSocketConnection) -> None:
        self._counters.connections_accepted += 1
        self._counters.connections_open += 1
        self._connections.add(ws)

    def _closed(self, ws: WebSocketConnection) -> None:
        self._connections.discard(ws)
        self._counters.connections_open -= 1
        self._counters.connections_finished += 1
        self._changed.unpark_all()

    async def _serve(self, ws: WebSocketConnection, stream: trio.abc.Stream, combined: bool,
                     wanted: frozenset[str]) -> None:
        left = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, ws, left)
            if await self._play(ws, combined, wanted):
                end = self.end
                if isinstance(end, CloseWith):
                    with trio.move_on_after(CLOSE_GRACE):
                        await ws.aclose(end.code, end.reason)
                elif isinstance(end, DropConnection):
                    _reset_on_close(stream)
                    await trio.aclose_forcefully(stream)
                else:
                    await left.wait()
            nursery.cancel_scope.cancel()

    async def _play(self, ws: WebSocketConnection, combined: bool,
                    wanted: frozenset[str]) -> bool:
        """Send the recording; ``False`` if the client left first."""
        speed = self.speed
        first = self.first_t
        start = trio.current_time()
        counters = self._counters
        sends = 0
        for record in self.records():
            message = route(record, combined, wanted)
            if message is None:
                continue
            if speed is not None:
                await trio.sleep_until(start + (record.t - first) / 1e9 / speed)
            else:
                sends += 1
                if sends % SENDS_PER_CHECKPOINT == 0:
                    await trio.lowlevel.checkpoint()
            try:
                await ws.send_message(message)
            except ConnectionClosed:
                return False
            counters.messages_sent += 1
        return True

    async def _close_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for ws in list(self._connections):
                nursery.start_soon(ws.aclose, 1001, "replay server shutting down")


@trio.lowlevel.enable_ki_protection  # a task's root (EXC3 in _server)
async def _drain(ws: WebSocketConnection, left: trio.Event) -> None:
    """Read and ignore client messages, so trio-websocket keeps processing control frames."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        left.set()


def _reset_on_close(stream: trio.abc.Stream) -> None:
    """Make closing ``stream`` send a TCP RST instead of a FIN (SO_LINGER with timeout 0)."""
    transport: Any = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(transport, trio.SocketStream):
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _OpenReplay(AbstractAsyncContextManager[ReplayServer]):
    def __init__(self, server: ReplayServer, port: int) -> None:
        self._server = server
        self._port = port
        self._manager: Any = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> ReplayServer:
        if self._manager is not None:
            raise RuntimeError("open_replay_server() can be entered only once")
        server = self._server
        listeners: list[Any] = list(await trio.open_tcp_listeners(self._port, host=server.host))
        sockets = [listener.socket for listener in listeners]
        if server.ssl_context is not None:
            listeners = [trio.SSLListener(listener, server.ssl_context) for listener in listeners]
        self._manager = trio.open_nursery()
        self._nursery = nursery = await self._manager.__aenter__()
        try:
            await nursery.start(trio.serve_listeners, server._handle, listeners)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await exit_nursery(self._manager, type(exc), exc, exc.__traceback__)
            raise
        server.port = sockets[0].getsockname()[1]
        return server

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        assert self._nursery is not None
        if exc is None:
            with trio.move_on_after(CLOSE_GRACE, shield=True):
                await self._server._close_all()
        self._nursery.cancel_scope.cancel()
        return await exit_nursery(self._manager, exc_type, exc, tb)



def _scan(records: Iterable[Record]) -> tuple[list[str], int, int]:
    streams: dict[str, None] = {}
    count = 0
    first = 0
    for record in records:
        if count == 0:
            first = record.t
        count += 1
        if record.stream is not None:
            streams.setdefault(record.stream)
    return list(streams), count, first


def _market_of(streams: Iterable[str | Stream]) -> str:
    """``"spot"`` if every name is a spot one, else ``"usdm"`` (a futures recording)."""
    try:
        for stream in streams:
            parse_stream(stream)
    except InvalidStreamName:
        return "usdm"
    return "spot"


def _replay_target(path: str) -> tuple[bool, list[Stream]]:
    """A replay serves what was recorded: spot names and paths, else USD-M ones (any route)."""
    try:
        combined, streams, _ = _parse_target(path)
    except _Rejection:
        combined, streams, _ = _parse_target(path, venue=USDM_FUTURES)
    return combined, streams


def open_replay_server(
    recording: str | os.PathLike[str] | Iterable[Record],
    *,
    speed: float | None = 1.0,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    end: Ending | None = None,
) -> AbstractAsyncContextManager[ReplayServer]:
    """Serve ``recording`` (a file path, or records) to every client that connects.

    Use as ``async with open_replay_server("btc.jsonl") as server:`` and point
    a client at ``server.base_url`` (``open_feed(..., base_url=server.base_url)``).
    ``speed`` multiplies the recorded pacing (``10.0``: ten times faster;
    ``None``: as fast as possible).  ``port=0`` picks a free port;
    ``ssl_context`` (a server context) serves ``wss://``.  ``end`` says how
    each connection ends after the last record (default
    ``CloseWith(1000, "end of recording")``).

    A path is read once here, to check it and list its streams, and again,
    lazily, for each connection.  Raises
    :class:`~trio_feed.recording.RecordingError` for a file that cannot be
    read or is not a recording, and ``ValueError`` for a bad ``speed``.
    """
    if speed is not None and (not math.isfinite(speed) or speed <= 0):
        raise ValueError(f"speed must be a positive number or None, got {speed!r}")
    source: str | tuple[Record, ...]
    if isinstance(recording, (str, os.PathLike)):
        source = os.fspath(recording)
        streams, count, first = _scan(read_recording(source))
    else:
        source = tuple(recording)
        streams, count, first = _scan(source)
    server = ReplayServer(
        source=source, streams=streams, messages=count, first_t=first, speed=speed,
        host=host, ssl_context=ssl_context,
        end=end if end is not None else CloseWith(1000, "end of recording"),
    )
    return _OpenReplay(server, port)
