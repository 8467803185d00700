"""The local exchange: Binance's stream endpoints served from a simulated market.

Every example runs against this server by default, and every test targets it,
so it must be a *real* WebSocket server (TCP or TLS, HTTP upgrade, frames,
pings) with Binance's URL forms, control protocol, keepalive rules and
connection limits, and it must be reproducible.  It is built on
trio-websocket's connection class, which is slow per message compared with
the client this project builds, but is an independent implementation of
RFC 6455: the client is tested against someone else's reading of the
protocol, not its own.

Theory of operation
-------------------

:func:`open_exchange` opens TCP (or TLS) listeners in its own nursery and
yields a :class:`LocalExchange`.  The exchange owns each accepted TCP stream
and wraps it in a ``_hooks.HookedWebSocket`` (trio-websocket's connection
with hooks that see every client message, ping and pong; see ``_hooks`` for
why that needs its private reader methods and how they are checked).  Owning
the stream is what lets a fault drop a connection with a FIN or an RST and no
Close frame.

Each accepted connection is a ``_session.Session``: its receiver answers
control messages (``_control``), and its output tasks send data, pings and
queued replies; ``_session`` says how, and how its outgoing queue is bounded.
So:

EXC1: no task outlives its connection, and none outlives the exchange:
    a session's tasks end with its nursery (``_session``); leaving
    ``open_exchange`` closes every open connection (1001, with a short grace
    period) and then cancels the exchange's nursery, which holds the
    listeners, the connections and the shared market's ticker.

EXC3: Ctrl-C never lands in the exchange.  Trio raises ``KeyboardInterrupt``
    in whichever task is running when SIGINT arrives, unless that code is
    KI-protected, in which case it is delivered to the main task at its next
    checkpoint.  Run in the same process as a client (the examples, the CLI,
    the README's snippet), an exchange task that took the interrupt would end
    its connection as if the stream were over (Close 1000, the client's
    ``ConnectionClosed(1000)``) before the interrupt cancelled the client, so
    Ctrl-C would end the program with an error instead of quietly.  Every
    task the exchange starts therefore begins in a function marked with
    ``trio.lowlevel.enable_ki_protection`` (``_serve``, the reader started by
    ``_hooks.receive_request``, the session's and the shared market's tasks,
    the REST server's, the replay server's), so the interrupt reaches the
    client's code, which ends before the exchange closes anything.
    ``tests/test_ctrl_c.py`` sends real SIGINTs at many moments.

Markets.  By default each connection gets its *own* ``Market(seed)``, replayed
from tick 0, and the market only advances while the connection has at least
one subscription.  Its events are stamped with the wall clock and its ids
start from it (``clock``), so a client sees a true lag and a reconnection or
a restarted exchange moves ids forward.  With ``clock=None`` (the simulated
clock, fixed first ids) two connections with the same seed and the same
subscriptions receive the same sequence, whether they subscribed in the URL
or with SUBSCRIBE, and however long they waited before doing so.
``shared_market=True`` trades that for continuity: one market for the whole
exchange, stepped at ``rate`` from the moment the exchange opens, its
payloads fanned out to every subscriber (see ``_shared``).  A reconnecting
client then continues the same id sequences, and two connections on one
stream receive identical payloads for the ticks they both see.

REST.  Beside the WebSocket server runs an HTTP/1.1 endpoint (``_rest``,
``exchange.rest_url``) answering ``GET /api/v3/depth`` from the market of the
connection the client reads (the shared market, if there is one), so a REST
snapshot and the diff stream describe one book.  Connections belong to a
*session*, an optional ``/s/<name>`` path prefix (``session_urls``), and REST
requests with the same prefix read that session's newest connection's market;
see ``_rest`` for why, for request weights and 429s, and for the faults
``exchange.faults`` injects (dropped or reordered diff events, stale
snapshots).

Pacing, the outgoing queue, keepalive and the rule that no data follows
the response to the UNSUBSCRIBE that removed its stream are the session's
(``_session``); the control protocol's replies and errors are ``_control``'s.

URLs.  ``/ws/<stream>[/<stream>...]`` and ``/ws`` deliver bare payloads
(``combined`` starts false), ``/stream?streams=a/b`` and ``/stream`` deliver
``{"stream":name,"data":payload}`` envelopes (``combined`` starts true).
Path segments and the query are percent-decoded; in the query a bare ``+`` is
a space, as in any form-encoded query, so ``@+08:00`` must be sent as
``@%2B08:00`` (``combined_url`` does).  An invalid stream name, or a stream
on a symbol the exchange does not list, is refused with HTTP 400 and a body
naming it (so a typo fails at once instead of delivering nothing), an unknown
path with 404, and a
``timeUnit`` other than milliseconds with 400: the market has no microsecond
clock.

Faults
------

Binance's connection rules (``STREAMS.md`` §2), and the ways a connection
fails, are there to be provoked, so that a supervised client can be tested
against each.  What the client observes:

========================================  ===========================================
fault                                     the client sees
========================================  ===========================================
``max_client_messages_per_second``        Close 1008 ``"Too many requests"`` on the
(exceeded: messages, pings and pongs      message that exceeds it in a sliding 1 s
all count)                                window; that message and later ones are
                                          ignored (``rate_limit_closes``)
``max_lifetime``                          Close 1001 ``"connection lifetime
                                          exceeded"`` that many seconds after the
                                          upgrade (``lifetime_closes``); Binance
                                          documents only that it disconnects at
                                          24 h, and 1001 (going away) tells a
                                          client to reconnect without blaming it
missing pong (``pong_timeout``)           Close 1008 ``"pong timeout"``
slow client (``max_queued_messages``)     Close 1008 ``"slow client"``, or 1006 if it
                                          is not reading (``_session``: *Outgoing queue*)
``drop_connections()``                    1006: a FIN after the data already
                                          written, no Close frame (the server then
                                          waits up to ``CLOSE_GRACE`` for the
                                          client to close its side)
``drop_connections(abrupt=True)``         1006: an RST at once; data not yet
                                          delivered may be lost
``close_connections(code, reason)``       Close ``code`` (default 1011)
``pause_sending()``                       silence: no data, no control replies
                                          (queued until ``resume_sending()``), no
                                          server pings, no pongs to its pings; in
                                          shared-market mode the missed ticks are
                                          lost (an id gap on resume)
``ignore_client_pings()``                 no pongs for its pings; all else normal
``refuse_connections(...)``               HTTP 503 instead of the upgrade
``accept_and_close(n)``                   a successful upgrade, then 1006 (FIN)
``announce_shutdown()``                   a ``serverShutdown`` event; no close
leaving ``open_exchange``                 Close 1001 ``"exchange shutting down"``
========================================  ===========================================

Counting.  Every upgrade request is a connection attempt
(``connection_attempts``, ``attempt_times``), whether it is refused (503),
rejected (400, 404) or accepted.  A client message is counted once, on its
last fragment; pings and pongs count as messages too (``client_messages``,
``client_pings``, ``client_pongs``), and their arrival times per connection
give ``max_client_rate``.  ``pause_sending`` in per-connection mode simply
blocks each connection's sender, so nothing is lost there: its market waits.
"""

from __future__ import annotations

import itertools
import math
import ssl
from collections.abc import Callable, Container, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from .._errors import InvalidStreamName
from ..binance._limits import SPOT, Venue, venue_named
from ..binance._streams import Stream, parse_stream
from ..binance._urls import combined_url, parse_stream_url, raw_url, routed_url
from ._faults import ClientTraffic, Refusals, half_close, max_rate
from ._hooks import HookedWebSocket, check_hooks, receive_request
from ._market import DEFAULT_SYMBOLS, Market, ids_from_clock, wall_clock_ms
from ._rest import RestEndpoint, split_session
from ._session import CLOSE_GRACE, MAX_LAG, Gate, Session
from ._shared import SharedMarket
from ._statistics import ConnectionInfo, Counters, ExchangeStatistics

__all__ = [
    "ConnectionInfo", "ExchangeStatistics", "LocalExchange", "TrioWallClock", "open_exchange",
]

#: How long a client may take to send its upgrade request.
CONNECT_TIMEOUT = 10.0
#: The close code and reason when the exchange shuts down.
SHUTDOWN_CLOSE = (1001, "exchange shutting down")

_REFUSED_BODY = b"connection refused by the local exchange (refuse_connections)"


class _Rejection(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.body = text.encode()


def unknown_symbol(stream: Stream, symbols: Container[str] | None) -> str | None:
    """Why ``stream`` names a symbol not in ``symbols`` (``None``: it does not, or no list)."""
    if symbols is None or stream.symbol is None or stream.symbol in symbols:
        return None
    return f"Invalid symbol {stream.symbol!r}: the exchange does not list it"


def _parse_target(target: str, symbols: Container[str] | None = None, venue: Venue = SPOT
                  ) -> tuple[bool, list[Stream], str]:
    """``(combined, streams, route)`` for a request target, or :class:`_Rejection`.

    With ``symbols``, a stream on any other symbol is refused too.  Names are
    read by ``venue``'s rules; a route the market does not serve is a 404
    (spot has none; USD-M serves ``/public`` and ``/market``, and unrouted
    paths as ``/public``).  A stream on a route that does not serve it is
    *accepted*, as on Binance: the session then sends it nothing.
    """
    parsed = parse_stream_url(target)
    if parsed is not None and parsed.route and parsed.route not in venue.route_names:
        parsed = None
    if parsed is None:
        path = urlsplit(target).path
        routes = "".join(f", {r}/ws/<stream>" for r in venue.route_names if r)
        raise _Rejection(404, f"unknown path {path!r}: use /ws/<stream> or /stream?streams="
                              f"{routes}")
    unit = parsed.time_unit
    if unit is not None and unit.lower() != "millisecond":
        raise _Rejection(400, f"timeUnit {unit!r} is not supported by the local exchange")
    streams: dict[str, Stream] = {}
    for name in parsed.names:
        try:
            stream = streams.setdefault(name, parse_stream(name, venue.market))
        except InvalidStreamName as exc:
            raise _Rejection(400, f"invalid stream {name!r}: {exc}") from None
        unknown = unknown_symbol(stream, symbols)
        if unknown is not None:
            raise _Rejection(400, f"invalid stream {name!r}: {unknown}")
    most = venue.streams_per_connection
    if len(streams) > most:
        raise _Rejection(400, f"too many streams: {len(streams)} > {most}")
    return parsed.combined, list(streams.values()), parsed.route



class TrioWallClock:
    """Epoch milliseconds: the wall clock at the first call, then advanced on trio's clock.

    Under trio's real clock this is the wall clock (but monotonic: a wall
    clock step does not move it); under ``trio.testing.MockClock`` it runs
    in the test's virtual time.  Outside ``trio.run`` it reads the wall clock.
    """

    def __init__(self) -> None:
        self._anchor: tuple[int, float] | None = None

    def __call__(self) -> int:
        try:
            now = trio.current_time()
        except RuntimeError:
            return wall_clock_ms()
        if self._anchor is None:
            self._anchor = (wall_clock_ms(), now)
        wall, start = self._anchor
        return wall + int((now - start) * 1000)


class LocalExchange:
    """A running local exchange; see :func:`open_exchange`.

    ``port`` and ``base_url`` say where it listens.  ``raw_url`` and
    ``combined_url`` build stream URLs exactly as the client's own helpers
    do, pointed here.  The fault methods (``drop_connections`` and the rest)
    act on the connections open when they are called and return promptly;
    the module docstring's *Faults* table says what a client sees for each.
    """

    def __init__(self, *, host: str, seed: int, symbols: Sequence[str], rate: float | None,
                 ping_interval: float | None, pong_timeout: float,
                 ssl_context: ssl.SSLContext | None, max_messages: int | None,
                 shared_market: bool = False, max_queued_messages: int = 100_000,
                 max_lifetime: float | None = None,
                 max_client_messages_per_second: float | None = None,
                 clock: Callable[[], int] | None = None, venue: Venue = SPOT) -> None:
        self.host = host
        #: The market served: its stream names, routes, limits and payload forms.
        self.venue = venue
        self.seed = seed
        self.symbols = tuple(symbols)
        self.rate = rate
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.ssl_context = ssl_context
        self.max_messages = max_messages
        self.max_queued_messages = max_queued_messages
        self.max_lifetime = max_lifetime
        self.max_client_messages_per_second = max_client_messages_per_second
        #: What stamps event times (epoch ms); ``None``: the simulated clock.
        self.clock = clock
        self.port = 0
        self._counters = Counters()
        #: The HTTP/1.1 REST endpoint (snapshots, weights) and its fault hooks.
        self.rest = RestEndpoint(host, symbols=self.symbols, venue=venue)
        self.faults = self.rest.faults
        self._shared: SharedMarket | None = None
        if shared_market:
            assert rate
            self._shared = SharedMarket(self.market(), rate, self.faults, MAX_LAG)
            self.rest.shared = self._shared.market
        self._connections: dict[Session, None] = {}
        self._numbers = itertools.count()
        self._all_closed = trio.Event()
        self._all_closed.set()
        self._gate = Gate()
        self._ignore_pings = False
        self._refusals = Refusals()
        self._histories: list[list[float]] = []
        #: ``trio.current_time()`` of every upgrade request, refused or not, in order.
        self.attempt_times: list[float] = []
        #: ``(connection number, time, method, params)`` of every SUBSCRIBE and
        #: UNSUBSCRIBE received, valid or not, in order.
        self.subscribe_requests: list[tuple[int, float, str, list[str]]] = []

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

    def raw_url(self, stream: str | Stream, route: str | None = None) -> str:
        """``/ws/<stream>`` on this exchange: bare payloads.

        On a routed market the URL carries the stream's route (``/public``,
        ``/market``) unless ``route`` names another (``""``: unrouted).
        """
        market = self.venue.market
        parsed = parse_stream(stream, market)
        if route is None:
            route = self.venue.route(parsed.kind)
        return raw_url(parsed, routed_url(self.base_url, route), market=market)

    def combined_url(self, streams: Iterable[str | Stream], route: str | None = None) -> str:
        """``/stream?streams=a/b`` on this exchange: enveloped payloads.

        On a routed market the route is the first stream's unless ``route``
        names one; streams of another route on it receive nothing.
        """
        market = self.venue.market
        parsed = [parse_stream(s, market) for s in streams]
        if route is None:
            route = self.venue.route(parsed[0].kind) if parsed else ""
        return combined_url(parsed, routed_url(self.base_url, route), market=market)

    def market(self) -> Market:
        """A fresh market with this exchange's seed, symbols and clock, as each connection gets.

        On the simulated clock (``clock=None``) it is what every connection
        replays, and with a shared market its tick ``k`` is the shared
        market's tick ``k``.  On another clock its ids start from the clock
        now (``ids_from_clock``), and its cadences follow that clock.
        """
        clock, market = self.clock, self.venue.market
        if clock is None:
            return Market(self.seed, self.symbols, market=market)
        return Market(self.seed, self.symbols, clock=clock, id_base=ids_from_clock(clock),
                      market=market)

    @property
    def shared_market(self) -> Market | None:
        """The live shared market (``shared_market=True``), else ``None``.  Do not step it."""
        return None if self._shared is None else self._shared.market

    # -- observing ------------------------------------------------------------------

    def statistics(self) -> ExchangeStatistics:
        """Counters since the exchange opened; see :class:`ExchangeStatistics`."""
        return self._counters.snapshot()

    def open_connections(self) -> list[ConnectionInfo]:
        """The connections that are open and not closing, in order of acceptance."""
        return [c.info() for c in sorted(self._connections, key=lambda c: c.number)
                if c.closing is None]

    def max_client_rate(self, window: float = 1.0) -> int:
        """The most client messages (pings and pongs included) one connection sent in a window.

        Over the exchange's whole life and every connection it accepted,
        closed ones included; a window is half-open, ``(t - window, t]``, as
        for the ``max_client_messages_per_second`` budget.
        """
        if not window > 0:
            raise ValueError(f"window must be > 0, got {window!r}")
        return max((max_rate(times, window) for times in self._histories), default=0)

    async def wait_all_closed(self) -> None:
        """Return once no connection is open (at once if none is)."""
        await self._all_closed.wait()

    # -- faults ---------------------------------------------------------------------

    async def announce_shutdown(self) -> None:
        """Push ``serverShutdown`` to every open connection, as Binance does before a restart.

        Combined connections get it as ``{"stream":"!serverShutdown","data":...}``.
        It is written at once, or queued behind what a connection already has
        queued (and, while sending is paused, until it resumes).  Connections
        stay open; close the exchange to drop them.
        """
        async with trio.open_nursery() as nursery:
            for connection in list(self._connections):
                nursery.start_soon(connection.send_shutdown_notice)

    async def drop_connections(self, *, abrupt: bool = False) -> int:
        """End every open connection's TCP connection without a WebSocket Close frame.

        By default with a FIN, after the data already written (the server then
        reads until the client closes its side, for at most ``CLOSE_GRACE``);
        with ``abrupt=True`` with an RST (``SO_LINGER`` 0), discarding data
        not yet delivered.  Either way the client sees an abnormal closure
        (1006).  Returns how many connections were dropped, once the FIN or
        RST is sent; ``wait_all_closed`` waits for their tasks to end.
        """
        dropped = [c for c in list(self._connections) if c.drop(abrupt)]
        self._counters.connections_dropped += len(dropped)
        await trio.lowlevel.checkpoint()
        return len(dropped)

    async def close_connections(self, code: int = 1011, reason: str = "") -> int:
        """Send a Close frame with ``code`` and ``reason`` to every open connection.

        Returns how many were closed, once each Close frame is written (not
        waiting for the client's reply, which it waits for in the background
        for at most ``CLOSE_GRACE``).  Connections already closing are left
        alone.  Raises ``ValueError`` for a code that may not be sent
        (RFC 6455 §7.4: 1000-1003, 1007-1014 and 3000-4999 may) or a reason
        longer than 123 bytes.
        """
        if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
            raise ValueError(f"close code {code} may not be sent")
        if len(reason.encode()) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        closing = [c for c in list(self._connections) if c.close(code, reason)]
        for connection in closing:
            await connection.ws.close_written.wait()
        return len(closing)

    def pause_sending(self) -> None:
        """Stop writing anything but Close frames (and upgrade responses) until resumed.

        No data, no control replies (they are queued and sent on resume), no
        server pings, no pongs to the client's pings (those are not sent
        later).  Connections stay open and are still read, so client messages
        keep being counted and the budget enforced.  In shared-market mode
        the market keeps ticking and what paused connections miss counts in
        ``messages_dropped``: on resume they continue from the current tick.
        Per-connection markets simply wait.  Idempotent.
        """
        self._gate.pause()

    def resume_sending(self) -> None:
        """Undo :meth:`pause_sending`.  Idempotent."""
        self._gate.resume()

    def ignore_client_pings(self, ignore: bool = True) -> None:
        """Stop (or, with ``False``, resume) answering the clients' pings with pongs."""
        self._ignore_pings = ignore

    def _answering_pings(self) -> bool:
        return not (self._ignore_pings or self._gate.paused)

    def refuse_connections(self, count: int | None = None, *,
                           seconds: float | None = None) -> None:
        """Answer upgrade requests with HTTP 503 (counted in ``connections_refused``).

        ``count`` refuses the next ``count`` requests; ``seconds`` refuses
        every request for that long on trio's clock; both refuse the next
        ``count`` within that time; neither refuses every request until the
        next call.  Each call replaces the previous setting, so
        ``refuse_connections(0)`` stops refusing.
        """
        self._refusals.refuse(count, seconds)

    def accept_and_close(self, count: int) -> None:
        """Complete the next ``count`` upgrades, then drop each at once (FIN, no Close frame).

        Replaces any count still pending; ``0`` cancels.  Each counts in
        ``connections_accepted`` and ``connections_dropped``.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        self._refusals.accept_and_close = count

    # -- serving --------------------------------------------------------------------

    async def _close_all(self) -> None:
        connections = list(self._connections)
        for connection in connections:
            connection.close(*SHUTDOWN_CLOSE)
        for connection in connections:
            await connection.finished.wait()

    @trio.lowlevel.enable_ki_protection  # EXC3; covers _handle and the session's receiver
    async def _serve(self, stream: trio.abc.Stream) -> None:
        """One TCP connection, from the upgrade request to the end."""
        traffic = ClientTraffic(self._counters, self.max_client_messages_per_second,
                                self._answering_pings)
        try:
            async with trio.open_nursery() as nursery:
                ws = HookedWebSocket(stream, traffic)
                with trio.move_on_after(CONNECT_TIMEOUT) as waited:
                    request = await receive_request(nursery, ws)
                if waited.cancelled_caught:
                    nursery.cancel_scope.cancel()
                    return
                try:
                    await self._handle(request, ws, stream, traffic)
                finally:
                    with trio.move_on_after(CLOSE_GRACE):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # a transport that failed, or that a fault closed under trio-websocket
        finally:
            await trio.aclose_forcefully(stream)

    async def _reject(self, request: WebSocketRequest, status: int, body: bytes) -> None:
        try:
            await request.reject(status, body=body)
        except ConnectionClosed:
            pass

    async def _handle(self, request: WebSocketRequest, ws: HookedWebSocket,
                      stream: trio.abc.Stream, traffic: ClientTraffic) -> None:
        counters = self._counters
        counters.connection_attempts += 1
        self.attempt_times.append(trio.current_time())
        if self._refusals.refuse_now():
            counters.connections_refused += 1
            await self._reject(request, 503, _REFUSED_BODY)
            return
        try:
            session, target = split_session(request.path)
            combined, streams, route = _parse_target(target, self.symbols, self.venue)
        except _Rejection as rejection:
            counters.handshakes_rejected += 1
            await self._reject(request, rejection.status, rejection.body)
            return
        try:
            await request.accept()
        except ConnectionClosed:
            return
        counters.connections_accepted += 1
        if self._refusals.close_next():
            counters.connections_dropped += 1
            traffic.closing = True
            half_close(stream)
            with trio.move_on_after(CLOSE_GRACE):
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed:
                    pass
            return
        shared = self._shared
        market = shared.market if shared is not None else self.market()
        connection = Session(self, ws, stream, traffic, next(self._numbers), combined, streams,
                             market=market, shared=shared, counters=self._counters,
                             gate=self._gate, session=session, venue=self.venue, route=route)
        self._histories.append(traffic.times)
        self.rest.register(session, connection.market)
        counters.connections_open += 1
        self._connections[connection] = None
        if self._all_closed.is_set():
            self._all_closed = trio.Event()
        try:
            await connection.run()
        finally:
            del self._connections[connection]
            self.rest.unregister(session, connection.market)
            counters.connections_open -= 1
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
        check_hooks()
        exchange = self._exchange
        self._manager = trio.open_nursery()
        self._nursery = nursery = await self._manager.__aenter__()
        try:
            listeners: list[Any]
            if exchange.ssl_context is None:
                listeners = await trio.open_tcp_listeners(exchange.port, host=exchange.host)
            else:
                listeners = await trio.open_ssl_over_tcp_listeners(
                    exchange.port, exchange.ssl_context, host=exchange.host,
                    https_compatible=True)
            first: Any = listeners[0]
            if isinstance(first, trio.SSLListener):
                first = first.transport_listener
            exchange.port = first.socket.getsockname()[1]
            await nursery.start(trio.serve_listeners, exchange._serve, listeners)
            await nursery.start(exchange.rest.serve)
            if exchange._shared is not None:
                await nursery.start(exchange._shared.run)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await exit_nursery(self._manager, type(exc), exc, exc.__traceback__)
            raise
        return exchange

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        assert self._nursery is not None
        try:
            if exc is None:
                with trio.move_on_after(CLOSE_GRACE, shield=True):
                    await self._exchange._close_all()
        finally:
            self._nursery.cancel_scope.cancel()
            result = await exit_nursery(self._manager, exc_type, exc, tb)
        return result


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
    ping_interval: float | Literal["market"] | None = "market",
    pong_timeout: float | Literal["market"] = "market",
    ssl_context: ssl.SSLContext | None = None,
    max_messages: int | None = None,
    shared_market: bool = False,
    max_queued_messages: int = 100_000,
    max_lifetime: float | None = None,
    max_client_messages_per_second: float | None = None,
    clock: Callable[[], int] | Literal["wall"] | None = "wall",
    market: str = "spot",
) -> AbstractAsyncContextManager[LocalExchange]:
    """Serve Binance's public streams from a simulated market on ``host:port``.

    Use it as ``async with open_exchange() as exchange:``; the server is
    accepting connections when the block starts, and every connection and
    task is gone when it ends.  ``port=0`` picks a free port (read
    ``exchange.port``).  ``seed`` and ``symbols`` define the market;
    ``rate`` is market ticks per second (``None`` or ``0``: as fast as
    possible); ``ping_interval`` (``None``: never) and ``pong_timeout`` are
    Binance's keepalive, by default the market's (``"market"``: 20 s and
    60 s on spot, 3 and 10 minutes on USD-M); ``ssl_context`` (a server context)
    serves ``wss://``; ``max_messages`` caps the data messages per connection.

    ``clock`` (a callable returning epoch milliseconds) stamps every event.
    The default, ``"wall"``, is the wall clock as the exchange opens,
    advanced on trio's clock (:class:`TrioWallClock`): real time, so that a
    client measures a true lag, and virtual time under
    ``trio.testing.MockClock``, so that cadences keep up with a test's
    jumps.  Each market's ids start from the clock too (``clock() * 1000``
    above the simulated market's), so an exchange started later continues
    the ids of one started earlier.  A test that needs reproducible data
    passes ``clock=None``: the simulated clock, from ``EPOCH_MS`` in steps
    of ``TICK_MS`` per tick, and fixed first ids, so that two connections
    with one seed receive the same data.

    By default each connection replays its own market from tick 0, at
    ``rate`` per connection.  ``shared_market=True`` runs one market for the
    whole exchange at ``rate`` (which must then be > 0) from the moment it
    opens, whose payloads every subscriber receives, through a queue of at
    most ``max_queued_messages`` per connection (overflow: Close 1008
    ``"slow client"``).

    Connection rules, off by default: ``max_lifetime`` closes a connection
    (Close 1001) that many seconds after its upgrade;
    ``max_client_messages_per_second`` (Binance: 5) closes a connection
    (Close 1008 ``"Too many requests"``) whose messages, pings and pongs
    exceed it within a sliding second.  More faults are methods of
    :class:`LocalExchange`; the module docstring lists what a client sees.

    ``market`` (``"spot"`` or ``"usdm"``) is the market served: its stream
    names, its routes (USD-M: ``/public`` for book data, ``/market`` for the
    rest, an unrouted path serving ``/public`` only; a stream subscribed on a
    route that does not serve it is accepted and then sent nothing, exactly
    as on Binance, and counted in ``misrouted_streams``), its payload forms,
    its REST snapshot path and limits, and its keepalive defaults.

    Raises ``ValueError`` for a negative rate, a non-positive timeout, limit
    or lifetime, or a shared market without a rate, and
    :class:`~trio_feed.InvalidStreamName` for a malformed symbol.
    """
    venue = venue_named(market)
    if ping_interval == "market":
        ping_interval = venue.ping_interval
    if pong_timeout == "market":
        pong_timeout = venue.pong_timeout
    if rate is not None and (rate < 0 or math.isnan(rate)):
        raise ValueError(f"rate must be >= 0 or None, got {rate!r}")
    if shared_market and not rate:
        raise ValueError(f"a shared market needs a rate > 0, got {rate!r}")
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError(f"ping_interval must be > 0 or None, got {ping_interval!r}")
    if pong_timeout <= 0:
        raise ValueError(f"pong_timeout must be > 0, got {pong_timeout!r}")
    if max_queued_messages < 1:
        raise ValueError(f"max_queued_messages must be >= 1, got {max_queued_messages!r}")
    if max_lifetime is not None and not max_lifetime > 0:
        raise ValueError(f"max_lifetime must be > 0 or None, got {max_lifetime!r}")
    if max_client_messages_per_second is not None and not max_client_messages_per_second > 0:
        raise ValueError("max_client_messages_per_second must be > 0 or None, "
                         f"got {max_client_messages_per_second!r}")
    names = tuple(symbols)
    Market(seed, names, market=venue.market)
    exchange = LocalExchange(host=host, seed=seed, symbols=names, rate=rate,
                             ping_interval=ping_interval, pong_timeout=pong_timeout,
                             ssl_context=ssl_context, max_messages=max_messages,
                             shared_market=shared_market,
                             max_queued_messages=max_queued_messages,
                             max_lifetime=max_lifetime,
                             max_client_messages_per_second=max_client_messages_per_second,
                             clock=TrioWallClock() if clock == "wall" else clock,
                             venue=venue)
    exchange.port = port
    return _OpenExchange(exchange)
