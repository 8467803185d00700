"""The local exchange: Binance's stream endpoints served from a simulated market.

Every example runs against this server by default, and every test targets it,
so it must be a *real* WebSocket server (TCP or TLS, HTTP upgrade, frames,
pings) with Binance's URL forms, control protocol and keepalive rules, and it
must be reproducible.  It is built on trio-websocket's server, which is slow
per message compared with the client this project builds, but is an
independent implementation of RFC 6455: the client is tested against someone
else's reading of the protocol, not its own.

Theory of operation
-------------------

:func:`open_exchange` starts a listener in its own nursery and yields a
:class:`LocalExchange`.  Each accepted connection runs three tasks in one
nursery: the *receiver* answers control messages, the *sender* steps the
market and sends data, and the *keeper* pings.  When the receiver sees the
connection close, it cancels the other two, so:

Rule 1: no task outlives its connection, and none outlives the exchange:
    leaving ``open_exchange`` sends every open connection a Close (1001,
    with a short grace period) and then cancels the nursery.

Reproducibility.  Each connection gets its *own* ``Market(seed)``, replayed
from tick 0, and the market only advances while the connection has at least
one subscription.  So two connections with the same seed and the same
subscriptions receive the same sequence, whether they subscribed in the URL or
with SUBSCRIBE, and however long they waited before doing so.  A shared
market, where late joiners see the same trades as early ones, is a possible
later addition; it would trade this property away.

REST.  Beside the WebSocket server runs an HTTP/1.1 endpoint (``_rest``,
``exchange.rest_url``) answering ``GET /api/v3/depth`` from the market of the
connection the client reads, so a REST snapshot and the diff stream describe
one book.  Connections belong to a *session*, an optional ``/s/<name>`` path
prefix (``session_urls``), and REST requests with the same prefix read that
session's newest connection's market; see ``_rest`` for why, for request
weights and 429s, and for the faults ``exchange.faults`` injects (dropped or
reordered diff events, stale snapshots).

Pacing.  ``rate`` is market ticks per second, per connection; each tick sends
every payload the subscribed streams emit for it (see ``_market``: trades on
most ticks, ``@depth@100ms`` every tick, ``@depth`` and tickers every tenth).
Ticks are scheduled on trio's clock at ``start + k / rate``; a late sender
(a slow reader, a busy loop) sends late ticks back to back, and forgives lag
beyond one second, so a stalled client is not flooded when it resumes.
``rate=None`` or ``0`` runs ticks back to back, yielding to trio every few
ticks that sent nothing.  ``max_messages`` stops data (not control replies,
not pings) after that many messages, leaving the connection open.

Rule 2: no data message for a stream is sent after the response to the
    UNSUBSCRIBE that removed it.  The sender rechecks the subscription before
    every send, and a response is encoded before the receiver yields, because
    trio-websocket serialises frames in the order ``send_message`` is called.

Keepalive.  Every ``ping_interval`` seconds the keeper sends a ping with a
fresh payload and waits up to ``pong_timeout`` for the matching pong.  A
missing pong counts in ``pongs_missed`` and ends the connection: a Close with
code 1008 (policy violation) and reason ``"pong timeout"``, a one-second wait
for the peer's Close, then the TCP connection is dropped either way.  The
keeper is its own task, so a ping never waits for data, but a client that
stops reading altogether fills the socket, the ping cannot be written, and
it is disconnected by the same timeout, which is what Binance does too.

Control protocol (``STREAMS.md`` §3).  Responses are ``{"result":...,"id":...}``.
Errors follow the documented templates: ``{"code":0,"msg":"Unknown property",
"id":...}`` carries the id, codes 1, 2 and 3 do not, except for the two errors
Binance does not document, which carry it: a stream name that
:func:`~trio_feed.binance.parse_stream` rejects (code 2, the message names the
stream) and a SUBSCRIBE that would exceed 1024 streams (code 2).  A SUBSCRIBE
with any invalid name changes nothing.  The 5-messages-per-second limit on
client messages is not enforced.

URLs.  ``/ws/<stream>[/<stream>...]`` and ``/ws`` deliver bare payloads
(``combined`` starts false), ``/stream?streams=a/b`` and ``/stream`` deliver
``{"stream":name,"data":payload}`` envelopes (``combined`` starts true).
Path segments and the query are percent-decoded; in the query a bare ``+`` is
a space, as in any form-encoded query, so ``@+08:00`` must be sent as
``@%2B08:00`` (``combined_url`` does).  An invalid stream name is refused
with HTTP 400 and a body naming it, an unknown path with 404, and a
``timeUnit`` other than milliseconds with 400: the market has no microsecond
clock.
"""

from __future__ import annotations

import itertools
import math
import re
import ssl
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
import orjson
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from .._errors import InvalidStreamName
from ..binance._streams import Stream, combined_url, parse_stream, raw_url
from ._market import DEFAULT_SYMBOLS, Market, envelope
from ._rest import RestEndpoint, split_session

__all__ = ["ExchangeStatistics", "LocalExchange", "open_exchange"]

#: Binance's limit of streams per connection.
MAX_STREAMS = 1024
#: How long a closing handshake may take before the TCP connection is dropped.
CLOSE_GRACE = 1.0
#: How far behind schedule the sender may fall before the schedule restarts.
MAX_LAG = 1.0
#: In "as fast as possible" mode, yield after this many ticks that sent nothing.
IDLE_TICKS_PER_CHECKPOINT = 16

_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_ID_TEXT = re.compile(r"[A-Za-z0-9]{0,36}")
_INT64 = range(-(2**63), 2**63)


@attrs.frozen
class ExchangeStatistics:
    """A snapshot of what a :class:`LocalExchange` has done so far.

    ``messages_sent`` counts data messages (market payloads and
    ``serverShutdown`` notices); control replies count in
    ``control_requests`` (all of them) and ``control_errors`` (the error
    replies).  ``messages_dropped`` counts data messages that were due on a
    tick but never sent because the connection closed first.
    """

    connections_accepted: int
    connections_open: int
    handshakes_rejected: int
    messages_sent: int
    messages_dropped: int
    pings_sent: int
    pongs_missed: int
    control_requests: int
    control_errors: int


@attrs.define
class _Counters:
    connections_accepted: int = 0
    connections_open: int = 0
    handshakes_rejected: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    pings_sent: int = 0
    pongs_missed: int = 0
    control_requests: int = 0
    control_errors: int = 0

    def snapshot(self) -> ExchangeStatistics:
        return ExchangeStatistics(**attrs.asdict(self))


class _Rejection(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.body = text.encode()


def _parse_target(target: str) -> tuple[bool, list[Stream]]:
    """``(combined, streams)`` for a request target, or :class:`_Rejection`."""
    parts = urlsplit(target)
    path = parts.path.rstrip("/") or "/"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unit = query.get("timeUnit")
    if unit is not None and unit.lower() != "millisecond":
        raise _Rejection(400, f"timeUnit {unit!r} is not supported by the local exchange")
    if path == "/ws" or path.startswith("/ws/"):
        combined = False
        names = [unquote(segment) for segment in path[len("/ws/"):].split("/")] \
            if path != "/ws" else []
    elif path == "/stream":
        combined = True
        text = query.get("streams", "")
        names = text.split("/") if text else []
    else:
        raise _Rejection(404, f"unknown path {parts.path!r}: use /ws/<stream> or /stream?streams=")
    streams: dict[str, Stream] = {}
    for name in names:
        try:
            streams.setdefault(name, parse_stream(name))
        except InvalidStreamName as exc:
            raise _Rejection(400, f"invalid stream {name!r}: {exc}") from None
    if len(streams) > MAX_STREAMS:
        raise _Rejection(400, f"too many streams: {len(streams)} > {MAX_STREAMS}")
    return combined, list(streams.values())


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _error(code: int, msg: str, *, request_id: Any = None, with_id: bool = False) -> str:
    reply: dict[str, Any] = {"code": code, "msg": msg}
    if with_id:
        reply["id"] = request_id
    return _dumps(reply)


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value in _INT64
    return isinstance(value, str) and _ID_TEXT.fullmatch(value) is not None


class _Connection:
    """One client: its subscriptions, its market and its three tasks."""

    def __init__(self, exchange: LocalExchange, ws: WebSocketConnection, number: int,
                 combined: bool, streams: Sequence[Stream], session: str = "") -> None:
        self.exchange = exchange
        self.ws = ws
        self.number = number
        self.combined = combined
        self.subs: dict[str, Stream] = {s.name: s for s in streams}
        self.market = Market(exchange.seed, exchange.symbols)
        self.session = session
        self.counters = exchange._counters
        self.sent = 0
        self.wakeup = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.send_data)
            if self.exchange.ping_interval:
                nursery.start_soon(self.keep_alive, nursery.cancel_scope)
            await self.receive_control()
            nursery.cancel_scope.cancel()

    # -- data -------------------------------------------------------------------

    def _text(self, stream: Stream, raw: bytes) -> str:
        if self.combined:
            return envelope(stream.name, raw).decode()
        return raw.decode()

    async def send_data(self) -> None:
        limit = self.exchange.max_messages
        if limit is not None and limit <= 0:
            return
        rate = self.exchange.rate
        period = 1.0 / rate if rate else 0.0
        market, subs, ws, counters = self.market, self.subs, self.ws, self.counters
        faults = self.exchange.faults
        idle = 0
        deadline = trio.current_time()
        while True:
            slept = False
            if not subs:
                self.wakeup = trio.Event()
                await self.wakeup.wait()
                deadline = trio.current_time()
            if period:
                deadline += period
                now = trio.current_time()
                if deadline > now:
                    await trio.sleep_until(deadline)
                    slept = True
                elif now - deadline > MAX_LAG:
                    deadline = now
            market.step()
            sent_before = self.sent
            for stream in list(subs.values()):
                batch = market.encoded(stream)
                if faults.armed:
                    batch = faults.filter(self.session, stream, batch)
                for index, raw in enumerate(batch):
                    if subs.get(stream.name) is not stream:
                        break
                    try:
                        await ws.send_message(self._text(stream, raw))
                    except ConnectionClosed:
                        counters.messages_dropped += len(batch) - index
                        return
                    self.sent += 1
                    counters.messages_sent += 1
                    if limit is not None and self.sent >= limit:
                        return
            if self.sent == sent_before and not slept:
                idle += 1
                if idle >= IDLE_TICKS_PER_CHECKPOINT:
                    idle = 0
                    await trio.lowlevel.checkpoint()

    async def send_shutdown_notice(self) -> None:
        raw = orjson.dumps(self.market.server_shutdown())
        text = (envelope("!serverShutdown", raw) if self.combined else raw).decode()
        try:
            await self.ws.send_message(text)
        except ConnectionClosed:
            self.counters.messages_dropped += 1
            return
        self.counters.messages_sent += 1

    # -- keepalive ----------------------------------------------------------------

    async def keep_alive(self, connection_scope: trio.CancelScope) -> None:
        interval = self.exchange.ping_interval
        assert interval
        deadline = trio.current_time()
        for count in itertools.count():
            deadline += interval
            await trio.sleep_until(deadline)
            payload = f"{self.number}:{count}".encode()
            self.counters.pings_sent += 1
            with trio.move_on_after(self.exchange.pong_timeout) as waiting:
                try:
                    await self.ws.ping(payload)
                except ConnectionClosed:
                    return
            if waiting.cancelled_caught:
                self.counters.pongs_missed += 1
                with trio.move_on_after(min(CLOSE_GRACE, self.exchange.pong_timeout)):
                    await self.ws.aclose(1008, "pong timeout")
                connection_scope.cancel()
                return
            deadline = max(deadline, trio.current_time() - interval)

    # -- control ------------------------------------------------------------------

    async def receive_control(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
                reply = self.handle(message)
                await self.ws.send_message(reply)
            except ConnectionClosed:
                return

    def handle(self, message: str | bytes) -> str:
        """Apply one control message and return the reply, as Binance would."""
        self.counters.control_requests += 1
        reply = self._handle(message)
        if reply.startswith('{"code"'):
            self.counters.control_errors += 1
        return reply

    def _handle(self, message: str | bytes) -> str:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            return _error(3, f"Invalid JSON: expected value at line {exc.lineno} "
                             f"column {exc.colno}")
        text = message if isinstance(message, str) else message.decode()
        if not isinstance(request, dict):
            return _error(2, "Invalid request: expected a JSON object at line 1 column 1")
        if "method" not in request:
            return _error(2, f"Invalid request: missing field `method` at line 1 "
                             f"column {len(text)}")
        method = request["method"]
        if method not in _METHODS:
            encoded = _dumps(method) if isinstance(method, str) else repr(method)
            column = text.find(encoded)
            column = column + len(encoded) if column >= 0 else len(text)
            return _error(2, f"Invalid request: unknown variant `{method}`, expected one of "
                             + ", ".join(f"`{m}`" for m in _METHODS)
                             + f" at line 1 column {column}")
        request_id = request.get("id")
        if not _valid_id(request_id):
            return _error(2, "Invalid request: request ID must be an unsigned integer")
        params = request.get("params", [])
        if not isinstance(params, list):
            return _error(2, "Invalid request: params must be an array")
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                return _error(2, "Invalid request: too many parameters")
            return _dumps({"result": list(self.subs), "id": request_id})
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return self._subscription(method, params, request_id)
        return self._property(method, params, request_id)

    def _subscription(self, method: str, params: list[Any], request_id: Any) -> str:
        streams: dict[str, Stream] = {}
        for name in params:
            if not isinstance(name, str):
                return _error(2, f"Invalid request: invalid stream {name!r}: "
                                 "a stream name must be a string",
                              request_id=request_id, with_id=True)
            try:
                streams[name] = parse_stream(name)
            except InvalidStreamName as exc:
                return _error(2, f"Invalid request: invalid stream {name!r}: {exc}",
                              request_id=request_id, with_id=True)
        if method == "UNSUBSCRIBE":
            for name in streams:
                self.subs.pop(name, None)
            return _dumps({"result": None, "id": request_id})
        new = [name for name in streams if name not in self.subs]
        if len(self.subs) + len(new) > MAX_STREAMS:
            return _error(2, f"Invalid request: too many streams: a connection carries at "
                             f"most {MAX_STREAMS}", request_id=request_id, with_id=True)
        for name in new:
            self.subs[name] = streams[name]
        if self.subs:
            self.wakeup.set()
        return _dumps({"result": None, "id": request_id})

    def _property(self, method: str, params: list[Any], request_id: Any) -> str:
        expected = 2 if method == "SET_PROPERTY" else 1
        if len(params) > expected:
            return _error(2, "Invalid request: too many parameters")
        if not params or not isinstance(params[0], str):
            return _error(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            return _error(0, "Unknown property", request_id=request_id, with_id=True)
        if method == "GET_PROPERTY":
            return _dumps({"result": self.combined, "id": request_id})
        if len(params) < 2 or not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean")
        self.combined = params[1]
        return _dumps({"result": None, "id": request_id})


class LocalExchange:
    """A running local exchange; see :func:`open_exchange`.

    ``port`` and ``base_url`` say where it listens.  ``raw_url`` and
    ``combined_url`` build stream URLs exactly as the client's own helpers
    do, pointed here.
    """

    def __init__(self, *, host: str, seed: int, symbols: Sequence[str], rate: float | None,
                 ping_interval: float | None, pong_timeout: float,
                 ssl_context: ssl.SSLContext | None, max_messages: int | None) -> None:
        self.host = host
        self.seed = seed
        self.symbols = tuple(symbols)
        self.rate = rate
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.ssl_context = ssl_context
        self.max_messages = max_messages
        self.port = 0
        self._counters = _Counters()
        #: The HTTP/1.1 REST endpoint (snapshots, weights) and its fault hooks.
        self.rest = RestEndpoint(host)
        self.faults = self.rest.faults
        self._connections: set[_Connection] = set()
        self._numbers = itertools.count()
        self._all_closed = trio.Event()
        self._all_closed.set()

    @property
    def base_url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS), without a trailing slash."""
        scheme = "wss" if self.ssl_context is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """``http://host:rest_port``: the REST endpoint (``GET /api/v3/depth``)."""
        return self.rest.url

    def session_urls(self, session: str) -> tuple[str, str]:
        """``(base_url, rest_url)`` for ``session``: the REST side reads its connection's book.

        ``session`` is 1 to 64 of ``A-Z a-z 0-9 _ -``.
        """
        if split_session(f"/s/{session}")[0] != session or not session:
            raise ValueError(f"invalid session name {session!r}")
        return f"{self.base_url}/s/{session}", f"{self.rest_url}/s/{session}"

    def raw_url(self, stream: str | Stream) -> str:
        """``/ws/<stream>`` on this exchange: bare payloads."""
        return raw_url(stream, self.base_url)

    def combined_url(self, streams: Iterable[str | Stream]) -> str:
        """``/stream?streams=a/b`` on this exchange: enveloped payloads."""
        return combined_url(streams, self.base_url)

    def market(self) -> Market:
        """A fresh market with this exchange's seed: what every connection replays."""
        return Market(self.seed, self.symbols)

    def statistics(self) -> ExchangeStatistics:
        """Counters since the exchange opened; see :class:`ExchangeStatistics`."""
        return self._counters.snapshot()

    async def wait_all_closed(self) -> None:
        """Return once no connection is open (at once if none is)."""
        await self._all_closed.wait()

    async def announce_shutdown(self) -> None:
        """Push ``serverShutdown`` to every open connection, as Binance does before a restart.

        Combined connections get it as ``{"stream":"!serverShutdown","data":...}``.
        Connections stay open; close the exchange to drop them.
        """
        async with trio.open_nursery() as nursery:
            for connection in list(self._connections):
                nursery.start_soon(connection.send_shutdown_notice)

    async def _close_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for connection in list(self._connections):
                nursery.start_soon(connection.ws.aclose, 1001, "exchange shutting down")

    async def _handle(self, request: WebSocketRequest) -> None:
        try:
            session, target = split_session(request.path)
            combined, streams = _parse_target(target)
        except _Rejection as rejection:
            self._counters.handshakes_rejected += 1
            try:
                await request.reject(rejection.status, body=rejection.body)
            except ConnectionClosed:
                pass
            return
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        connection = _Connection(self, ws, next(self._numbers), combined, streams, session)
        self.rest.register(session, connection.market)
        self._counters.connections_accepted += 1
        self._counters.connections_open += 1
        self._connections.add(connection)
        if self._all_closed.is_set():
            self._all_closed = trio.Event()
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            self.rest.unregister(session, connection.market)
            self._counters.connections_open -= 1
            if not self._connections:
                self._all_closed.set()


class _OpenExchange(AbstractAsyncContextManager[LocalExchange]):
    def __init__(self, exchange: LocalExchange) -> None:
        self._exchange = exchange
        self._manager: Any = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> LocalExchange:
        if self._manager is not None:
            raise RuntimeError("open_exchange() can be entered only once")
        exchange = self._exchange
        self._manager = trio.open_nursery()
        self._nursery = nursery = await self._manager.__aenter__()
        serve = partial(trio_websocket.serve_websocket, exchange._handle, exchange.host,
                        exchange.port, exchange.ssl_context, connect_timeout=10.0,
                        disconnect_timeout=CLOSE_GRACE)
        try:
            server = await nursery.start(serve)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await exit_nursery(self._manager, type(exc), exc, exc.__traceback__)
            raise
        exchange.port = server.port
        try:
            await nursery.start(exchange.rest.serve)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await exit_nursery(self._manager, type(exc), exc, exc.__traceback__)
            raise
        return exchange

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        assert self._nursery is not None
        if exc is None:
            with trio.move_on_after(CLOSE_GRACE, shield=True):
                await self._exchange._close_all()
        self._nursery.cancel_scope.cancel()
        return await exit_nursery(self._manager, exc_type, exc, tb)



async def exit_nursery(
    manager: AbstractAsyncContextManager[trio.Nursery],
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool:
    """Leave a nursery entered by hand; the body's own exception comes out as itself.

    Shared by the exchange and the replay server, whose ``__aenter__`` enters
    a nursery that their ``__aexit__`` leaves.
    """
    try:
        return bool(await manager.__aexit__(exc_type, exc, tb))
    except BaseExceptionGroup as group:
        if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
            return False
        raise


def open_exchange(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    symbols: Iterable[str] = DEFAULT_SYMBOLS,
    rate: float | None = 1000.0,
    ping_interval: float | None = 20.0,
    pong_timeout: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
    max_messages: int | None = None,
) -> AbstractAsyncContextManager[LocalExchange]:
    """Serve Binance's public streams from a simulated market on ``host:port``.

    Use it as ``async with open_exchange() as exchange:``; the server is
    accepting connections when the block starts, and every connection and
    task is gone when it ends.  ``port=0`` picks a free port (read
    ``exchange.port``).  ``seed`` and ``symbols`` define the market each
    connection replays; ``rate`` is market ticks per second per connection
    (``None`` or ``0``: as fast as possible); ``ping_interval`` (``None``:
    never) and ``pong_timeout`` are Binance's keepalive, 20 s and 60 s;
    ``ssl_context`` (a server context) serves ``wss://``; ``max_messages``
    caps the data messages per connection.

    Raises ``ValueError`` for a negative rate or a non-positive timeout, and
    :class:`~trio_feed.InvalidStreamName` for a malformed symbol.
    """
    if rate is not None and (rate < 0 or math.isnan(rate)):
        raise ValueError(f"rate must be >= 0 or None, got {rate!r}")
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError(f"ping_interval must be > 0 or None, got {ping_interval!r}")
    if pong_timeout <= 0:
        raise ValueError(f"pong_timeout must be > 0, got {pong_timeout!r}")
    names = tuple(symbols)
    Market(seed, names)
    exchange = LocalExchange(host=host, seed=seed, symbols=names, rate=rate,
                             ping_interval=ping_interval, pong_timeout=pong_timeout,
                             ssl_context=ssl_context, max_messages=max_messages)
    exchange.port = port
    return _OpenExchange(exchange)
