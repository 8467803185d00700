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

Each accepted connection runs, in one nursery, a *receiver* that answers
control messages, and an *output* nursery holding a *writer* (drains the
connection's outgoing queue), the *sender* (per-connection market only:
steps the market and sends data), the *keeper* (server pings) and, with
``max_lifetime``, an *expiry* timer.  A close (for any reason) runs as one
more task in the connection's nursery: Close frame, at most ``CLOSE_GRACE``
for the peer's reply, then the nursery is cancelled.  So:

EXC1: no task outlives its connection, and none outlives the exchange:
    when the receiver sees the connection end, the connection's nursery is
    cancelled (or, if a close or drop is in progress, that task cancels it
    when done); leaving ``open_exchange`` closes every open connection
    (1001, with a short grace period) and then cancels the exchange's
    nursery, which holds the listeners, the connections and the shared
    market's ticker.

Markets.  By default each connection gets its *own* ``Market(seed)``, replayed
from tick 0, and the market only advances while the connection has at least
one subscription.  So two connections with the same seed and the same
subscriptions receive the same sequence, whether they subscribed in the URL or
with SUBSCRIBE, and however long they waited before doing so.
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

Pacing.  ``rate`` is market ticks per second (per connection, or for the
shared market); each tick sends every payload the subscribed streams emit for
it (see ``_market``: trades on most ticks, ``@depth@100ms`` every tick,
``@depth`` and tickers every tenth).  Ticks are scheduled on trio's clock at
``start + k / rate``; a late sender (a slow reader, a busy loop) sends late
ticks back to back, and forgives lag beyond one second, so a stalled client
is not flooded when it resumes.  ``rate=None`` or ``0`` (per-connection
markets only) runs ticks back to back, yielding to trio every few ticks that
sent nothing.  ``max_messages`` stops data (not control replies, not pings)
after that many messages per connection, leaving the connection open.

Outgoing queue.  Control replies and ``serverShutdown`` notices are written
at once when nothing is queued ahead of them and sending is not paused, and
otherwise go to the connection's bounded outgoing queue, which the writer
drains in order; shared-market data always goes through that queue.  The
receiver therefore never waits for a slow client or a pause, so the client's
messages, pings and pongs keep being read and counted.  A queue that would
exceed ``max_queued_messages`` closes the connection with 1008
``"slow client"``; what it could not hold, and whatever is still queued when
a connection ends, counts in ``messages_dropped``.  The Close can only be
written once the socket accepts data again, so a client that has stopped
reading altogether sees 1008 if it resumes within ``CLOSE_GRACE``, and a
dropped TCP connection (1006) otherwise.

EXC2: no data message for a stream is sent after the response to the
    UNSUBSCRIBE that removed it.  The sender and the writer recheck the
    subscription (the very ``Stream`` object, so an UNSUBSCRIBE followed by a
    SUBSCRIBE does not revive queued data) before every send, and a response
    is either written before the receiver yields (trio-websocket serialises
    frames in the order ``send_message`` is called) or queued behind the data
    it must follow.

Keepalive.  Every ``ping_interval`` seconds the keeper sends a ping with a
fresh payload and waits up to ``pong_timeout`` for the matching pong.  A
missing pong counts in ``pongs_missed`` and ends the connection: a Close with
code 1008 (policy violation) and reason ``"pong timeout"``, a short wait for
the peer's Close, then the TCP connection is dropped either way.  The keeper
is its own task, so a ping never waits for data, but a client that stops
reading altogether fills the socket, the ping cannot be written, and it is
disconnected by the same timeout, which is what Binance does too.  The
client's own pings are answered by trio-websocket's reader.

Control protocol (``STREAMS.md`` §3).  Responses are ``{"result":...,"id":...}``.
Errors follow the documented templates: ``{"code":0,"msg":"Unknown property",
"id":...}`` carries the id, codes 1, 2 and 3 do not, except for the two errors
Binance does not document, which carry it: a stream name that
:func:`~trio_feed.binance.parse_stream` rejects (code 2, the message names the
stream) and a SUBSCRIBE that would exceed 1024 streams (code 2).  A SUBSCRIBE
with any invalid name changes nothing.  Every SUBSCRIBE and UNSUBSCRIBE is
logged in ``exchange.subscribe_requests``.

URLs.  ``/ws/<stream>[/<stream>...]`` and ``/ws`` deliver bare payloads
(``combined`` starts false), ``/stream?streams=a/b`` and ``/stream`` deliver
``{"stream":name,"data":payload}`` envelopes (``combined`` starts true).
Path segments and the query are percent-decoded; in the query a bare ``+`` is
a space, as in any form-encoded query, so ``@+08:00`` must be sent as
``@%2B08:00`` (``combined_url`` does).  An invalid stream name is refused
with HTTP 400 and a body naming it, an unknown path with 404, and a
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
                                          is not reading (see *Outgoing queue*)
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
import re
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from .._errors import InvalidStreamName
from ..binance._streams import Stream, combined_url, parse_stream, raw_url
from ._faults import ClientTraffic, Refusals, half_close, max_rate, reset
from ._hooks import HookedWebSocket, check_hooks, receive_request
from ._market import DEFAULT_SYMBOLS, Market, envelope
from ._rest import RestEndpoint, split_session
from ._shared import SharedMarket

__all__ = ["ConnectionInfo", "ExchangeStatistics", "LocalExchange", "open_exchange"]

#: Binance's limit of streams per connection.
MAX_STREAMS = 1024
#: How long a closing handshake may take before the TCP connection is dropped.
CLOSE_GRACE = 1.0
#: How long a client may take to send its upgrade request.
CONNECT_TIMEOUT = 10.0
#: How far behind schedule the sender may fall before the schedule restarts.
MAX_LAG = 1.0
#: In "as fast as possible" mode, yield after this many ticks that sent nothing.
IDLE_TICKS_PER_CHECKPOINT = 16
#: The close code and reason for each fault that closes with a Close frame.
LIFETIME_CLOSE = (1001, "connection lifetime exceeded")
RATE_LIMIT_CLOSE = (1008, "Too many requests")
SLOW_CLIENT_CLOSE = (1008, "slow client")
PONG_TIMEOUT_CLOSE = (1008, "pong timeout")
SHUTDOWN_CLOSE = (1001, "exchange shutting down")

_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_ID_TEXT = re.compile(r"[A-Za-z0-9]{0,36}")
_INT64 = range(-(2**63), 2**63)
_REFUSED_BODY = b"connection refused by the local exchange (refuse_connections)"


@attrs.frozen
class ExchangeStatistics:
    """A snapshot of what a :class:`LocalExchange` has done so far.

    ``messages_sent`` counts data messages (market payloads and
    ``serverShutdown`` notices); control replies count in
    ``control_requests`` (all of them) and ``control_errors`` (the error
    replies).  ``messages_dropped`` counts data messages that were due to a
    connection but never written: the connection closed first, its queue
    overflowed, or (shared market) sending was paused.  Data discarded
    because its stream was unsubscribed first is not counted.

    ``connection_attempts`` counts upgrade requests: ``connections_refused``
    (503, ``refuse_connections``), ``handshakes_rejected`` (400, 404) and
    ``connections_accepted`` are its parts.  ``connections_dropped`` counts
    TCP connections ended without a Close frame by ``drop_connections`` and
    ``accept_and_close``.  ``rate_limit_closes``, ``lifetime_closes`` and
    ``slow_client_closes`` count closes for those faults.
    ``client_messages`` counts everything clients sent (messages, pings and
    pongs), ``client_pings`` and ``client_pongs`` its control frames, and
    ``client_pings_unanswered`` the pings that got no pong
    (``ignore_client_pings``, ``pause_sending``, over the budget, closing).
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
    connection_attempts: int
    connections_refused: int
    connections_dropped: int
    rate_limit_closes: int
    lifetime_closes: int
    slow_client_closes: int
    client_messages: int
    client_pings: int
    client_pongs: int
    client_pings_unanswered: int


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
    connection_attempts: int = 0
    connections_refused: int = 0
    connections_dropped: int = 0
    rate_limit_closes: int = 0
    lifetime_closes: int = 0
    slow_client_closes: int = 0
    client_messages: int = 0
    client_pings: int = 0
    client_pongs: int = 0
    client_pings_unanswered: int = 0

    def snapshot(self) -> ExchangeStatistics:
        return ExchangeStatistics(**attrs.asdict(self))


@attrs.frozen
class ConnectionInfo:
    """One open connection, as :meth:`LocalExchange.open_connections` reports it.

    ``number`` is the connection's number (0, 1, ... in order of
    acceptance; the same number as in ``subscribe_requests``),
    ``subscriptions`` its stream names in subscription order, ``opened_at``
    ``trio.current_time()`` when it was accepted.  ``messages_sent`` and
    ``messages_dropped`` are its share of the exchange's counters,
    ``client_messages`` what it sent (pings and pongs included) and
    ``queued`` the length of its outgoing queue.
    """

    number: int
    subscriptions: tuple[str, ...]
    opened_at: float
    session: str
    combined: bool
    messages_sent: int
    messages_dropped: int
    client_messages: int
    queued: int


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


_Item = tuple[Stream | None, str, bool]  # (data stream or None, text, counts as data)


class _Connection:
    """One client: its subscriptions, its market, its outgoing queue and its tasks."""

    def __init__(self, exchange: LocalExchange, ws: HookedWebSocket, stream: trio.abc.Stream,
                 traffic: ClientTraffic, number: int, combined: bool,
                 streams: Sequence[Stream], session: str = "") -> None:
        self.exchange = exchange
        self.ws = ws
        self.stream = stream
        self.traffic = traffic
        self.number = number
        self.combined = combined
        self.subs: dict[str, Stream] = {s.name: s for s in streams}
        self.shared = exchange._shared
        self.market = self.shared.market if self.shared is not None \
            else Market(exchange.seed, exchange.symbols)
        self.session = session
        self.counters = exchange._counters
        self.opened_at = trio.current_time()
        self.sent = 0  # data messages written
        self.dropped = 0  # data messages due but never written
        self.delivered = 0  # market messages sent or queued, for max_messages
        self.wakeup = trio.Event()
        self.outbox: deque[_Item] = deque()
        self._writer_lot = trio.lowlevel.ParkingLot()
        #: Why the connection is ending, once it is (``None`` while it is open).
        self.closing: str | None = None
        self._pending_close: tuple[int, str, float] | None = None
        self._dropped: bool | None = None  # once dropped: whether abruptly
        self._nursery: trio.Nursery | None = None
        self._output: trio.CancelScope | None = None
        self._receiver_done = trio.Event()
        self.finished = trio.Event()
        traffic.on_violation = self._over_budget
        if traffic.violated:
            self._over_budget()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._dropped is not None:
                    self._after_drop()
                else:
                    if self.shared is not None and self.closing is None:
                        for stream in self.subs.values():
                            self.shared.subscribe(self, stream)
                    nursery.start_soon(self._run_output)
                    if self._pending_close is not None:
                        nursery.start_soon(self._close, *self._pending_close)
                await self.receive_control()
                self._receiver_done.set()
                if self.closing is None:
                    self.closing = "ended"
                    nursery.cancel_scope.cancel()
                # else the close or drop in progress cancels the nursery when done
        finally:
            if self.closing is None:
                self.closing = "ended"
            self.traffic.closing = True
            self._leave_market()
            for queued, _, counted in self.outbox:
                if counted and (queued is None or self.subs.get(queued.name) is queued):
                    self._count_dropped(1)
            self.outbox.clear()
            self.ws.close_written.set()
            self.finished.set()

    async def _run_output(self) -> None:
        exchange = self.exchange
        async with trio.open_nursery() as output:
            self._output = output.cancel_scope
            if self._dropped is not None:
                output.cancel_scope.cancel()
            if self.shared is None:
                output.start_soon(self.send_data)
            output.start_soon(self.write)
            if exchange.ping_interval:
                output.start_soon(self.keep_alive)
            if exchange.max_lifetime is not None:
                output.start_soon(self.expire)

    # -- ending ---------------------------------------------------------------------

    def close(self, code: int, reason: str, grace: float = CLOSE_GRACE) -> bool:
        """Start a closing handshake with ``code``; ``False`` if already ending.

        Never blocks: the handshake runs as a task in the connection's
        nursery, which it cancels when done (at most ``grace`` seconds).
        """
        if self.closing is not None:
            return False
        self.closing = reason or f"close {code}"
        self.traffic.closing = True
        self._leave_market()
        if self._nursery is None:
            self._pending_close = (code, reason, grace)
        else:
            self._spawn(self._close, code, reason, grace)
        return True

    def _spawn(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        try:
            self._nursery.start_soon(task, *args)
        except RuntimeError:
            pass  # the nursery has just closed: the connection is over anyway

    async def _close(self, code: int, reason: str, grace: float) -> None:
        with trio.move_on_after(grace):
            await self.ws.aclose(code, reason)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def drop(self, abrupt: bool) -> bool:
        """End the TCP connection without a Close frame: FIN, or RST if ``abrupt``."""
        if self._dropped is not None:
            return False
        self._dropped = abrupt
        if self.closing is None:
            self.closing = "reset" if abrupt else "dropped"
        self.traffic.closing = True
        self._leave_market()
        if self._output is not None:
            self._output.cancel()  # nothing of ours is written after the FIN
        if abrupt:
            reset(self.stream)
        else:
            half_close(self.stream)
        if self._nursery is not None:
            self._after_drop()
        return True

    def _after_drop(self) -> None:
        assert self._nursery is not None
        if self._dropped:
            self._nursery.cancel_scope.cancel()
        else:
            self._spawn(self._linger)

    async def _linger(self) -> None:
        # Keep reading until the client closes its side, so that its last
        # messages (pongs, say) do not turn our close into an RST.
        with trio.move_on_after(CLOSE_GRACE):
            await self._receiver_done.wait()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def _over_budget(self) -> None:
        if self.close(*RATE_LIMIT_CLOSE):
            self.counters.rate_limit_closes += 1

    def _slow(self) -> None:
        if self.close(*SLOW_CLIENT_CLOSE):
            self.counters.slow_client_closes += 1

    def _leave_market(self) -> None:
        if self.shared is not None:
            for name in self.subs:
                self.shared.unsubscribe(self, name)

    # -- data -------------------------------------------------------------------

    def _count_sent(self) -> None:
        self.sent += 1
        self.counters.messages_sent += 1

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        self.counters.messages_dropped += count

    def _text(self, stream: Stream, raw: bytes) -> str:
        if self.combined:
            return envelope(stream.name, raw).decode()
        return raw.decode()

    async def send_data(self) -> None:
        """The per-connection market's sender: step, then send what the subscriptions emit."""
        exchange = self.exchange
        limit = exchange.max_messages
        if limit is not None and limit <= 0:
            return
        rate = exchange.rate
        period = 1.0 / rate if rate else 0.0
        market, subs, ws = self.market, self.subs, self.ws
        faults = exchange.faults
        idle = 0
        deadline = trio.current_time()
        while True:
            slept = False
            if not subs:
                self.wakeup = trio.Event()
                await self.wakeup.wait()
                deadline = trio.current_time()
            if exchange._paused:
                await exchange._resumed.wait()
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
                    if exchange._paused:
                        await exchange._resumed.wait()
                    if subs.get(stream.name) is not stream:
                        break
                    try:
                        await ws.send_message(self._text(stream, raw))
                    except ConnectionClosed:
                        self._count_dropped(len(batch) - index)
                        return
                    self._count_sent()
                    self.delivered += 1
                    if limit is not None and self.delivered >= limit:
                        return
            if self.sent == sent_before and not slept:
                idle += 1
                if idle >= IDLE_TICKS_PER_CHECKPOINT:
                    idle = 0
                    await trio.lowlevel.checkpoint()

    def deliver(self, name: str, texts: list[str]) -> None:
        """Queue one tick of the shared market's ``texts`` for stream ``name``; never blocks."""
        stream = self.subs.get(name)
        if stream is None or self.closing is not None:
            return
        exchange = self.exchange
        if exchange._paused:
            self._count_dropped(len(texts))
            return
        limit = exchange.max_messages
        if limit is not None:
            room = limit - self.delivered
            if room <= 0:
                return
            if len(texts) > room:
                texts = texts[:room]
        self.delivered += len(texts)
        outbox = self.outbox
        space = exchange.max_queued_messages - len(outbox)
        if len(texts) > space:
            self._count_dropped(len(texts) - max(space, 0))
            texts = texts[:max(space, 0)]
            self._slow()
        outbox.extend((stream, text, True) for text in texts)
        self._writer_lot.unpark_all()

    def _enqueue(self, text: str, counted: bool) -> None:
        if len(self.outbox) >= self.exchange.max_queued_messages:
            if counted:
                self._count_dropped(1)
            self._slow()
            return
        self.outbox.append((None, text, counted))
        self._writer_lot.unpark_all()

    async def send_text(self, text: str, *, counted: bool) -> None:
        """Send a control reply or a notice now, or queue it behind what is queued.

        Raises ``ConnectionClosed`` if it was to be written now and could not be.
        """
        if self.outbox or self.exchange._paused:
            self._enqueue(text, counted)
            return
        await self.ws.send_message(text)
        if counted:
            self._count_sent()

    async def write(self) -> None:
        """Drain the outgoing queue, in order, while sending is not paused."""
        exchange, outbox, subs, ws = self.exchange, self.outbox, self.subs, self.ws
        while True:
            if not outbox:
                await self._writer_lot.park()
                continue
            if exchange._paused:
                await exchange._resumed.wait()
                continue
            stream, text, counted = outbox.popleft()
            if stream is not None and subs.get(stream.name) is not stream:
                continue  # unsubscribed since it was queued (EXC2)
            try:
                await ws.send_message(text)
            except ConnectionClosed:
                if counted:
                    self._count_dropped(1)
                return
            if counted:
                self._count_sent()

    async def send_shutdown_notice(self) -> None:
        if self.closing is not None:
            return
        raw = orjson.dumps(self.market.server_shutdown())
        text = (envelope("!serverShutdown", raw) if self.combined else raw).decode()
        try:
            await self.send_text(text, counted=True)
        except ConnectionClosed:
            self._count_dropped(1)

    # -- timers -------------------------------------------------------------------

    async def keep_alive(self) -> None:
        exchange = self.exchange
        interval = exchange.ping_interval
        assert interval
        deadline = trio.current_time()
        for count in itertools.count():
            deadline += interval
            await trio.sleep_until(deadline)
            if exchange._paused:
                await exchange._resumed.wait()
            payload = f"{self.number}:{count}".encode()
            self.counters.pings_sent += 1
            with trio.move_on_after(exchange.pong_timeout) as waiting:
                try:
                    await self.ws.ping(payload)
                except ConnectionClosed:
                    return
            if waiting.cancelled_caught:
                self.counters.pongs_missed += 1
                self.close(*PONG_TIMEOUT_CLOSE, grace=min(CLOSE_GRACE, exchange.pong_timeout))
                return
            deadline = max(deadline, trio.current_time() - interval)

    async def expire(self) -> None:
        lifetime = self.exchange.max_lifetime
        assert lifetime is not None
        await trio.sleep_until(self.opened_at + lifetime)
        if self.close(*LIFETIME_CLOSE):
            self.counters.lifetime_closes += 1

    # -- control ------------------------------------------------------------------

    async def receive_control(self) -> None:
        index = 0
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed:
                return
            index += 1
            if self.closing is not None or not self.traffic.accepts(index):
                continue  # over the budget, or closing: not acted on
            reply = self.handle(message)
            try:
                await self.send_text(reply, counted=False)
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
        params = request.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self.exchange.subscribe_requests.append(
                (self.number, trio.current_time(), method,
                 list(params) if isinstance(params, list) else []))
        request_id = request.get("id")
        if not _valid_id(request_id):
            return _error(2, "Invalid request: request ID must be an unsigned integer")
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
        shared = self.shared
        if method == "UNSUBSCRIBE":
            for name in streams:
                if self.subs.pop(name, None) is not None and shared is not None:
                    shared.unsubscribe(self, name)
            return _dumps({"result": None, "id": request_id})
        new = [name for name in streams if name not in self.subs]
        if len(self.subs) + len(new) > MAX_STREAMS:
            return _error(2, f"Invalid request: too many streams: a connection carries at "
                             f"most {MAX_STREAMS}", request_id=request_id, with_id=True)
        for name in new:
            self.subs[name] = streams[name]
            if shared is not None:
                shared.subscribe(self, streams[name])
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

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            number=self.number, subscriptions=tuple(self.subs), opened_at=self.opened_at,
            session=self.session, combined=self.combined, messages_sent=self.sent,
            messages_dropped=self.dropped, client_messages=len(self.traffic.times),
            queued=len(self.outbox))


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
                 max_client_messages_per_second: float | None = None) -> None:
        self.host = host
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
        self.port = 0
        self._counters = _Counters()
        #: The HTTP/1.1 REST endpoint (snapshots, weights) and its fault hooks.
        self.rest = RestEndpoint(host)
        self.faults = self.rest.faults
        self._shared: SharedMarket | None = None
        if shared_market:
            assert rate
            self._shared = SharedMarket(Market(seed, self.symbols), rate, self.faults, MAX_LAG)
        self._connections: dict[_Connection, None] = {}
        self._numbers = itertools.count()
        self._all_closed = trio.Event()
        self._all_closed.set()
        self._paused = False
        self._resumed = trio.Event()
        self._resumed.set()
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

    def raw_url(self, stream: str | Stream) -> str:
        """``/ws/<stream>`` on this exchange: bare payloads."""
        return raw_url(stream, self.base_url)

    def combined_url(self, streams: Iterable[str | Stream]) -> str:
        """``/stream?streams=a/b`` on this exchange: enveloped payloads."""
        return combined_url(streams, self.base_url)

    def market(self) -> Market:
        """A fresh market with this exchange's seed: what every connection replays.

        With a shared market, its tick ``k`` is the shared market's tick ``k``.
        """
        return Market(self.seed, self.symbols)

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
        if not self._paused:
            self._paused = True
            self._resumed = trio.Event()

    def resume_sending(self) -> None:
        """Undo :meth:`pause_sending`.  Idempotent."""
        if self._paused:
            self._paused = False
            self._resumed.set()

    def ignore_client_pings(self, ignore: bool = True) -> None:
        """Stop (or, with ``False``, resume) answering the clients' pings with pongs."""
        self._ignore_pings = ignore

    def _answering_pings(self) -> bool:
        return not (self._ignore_pings or self._paused)

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
            combined, streams = _parse_target(target)
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
        connection = _Connection(self, ws, stream, traffic, next(self._numbers), combined,
                                 streams, session)
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
    ping_interval: float | None = 20.0,
    pong_timeout: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
    max_messages: int | None = None,
    shared_market: bool = False,
    max_queued_messages: int = 100_000,
    max_lifetime: float | None = None,
    max_client_messages_per_second: float | None = None,
) -> AbstractAsyncContextManager[LocalExchange]:
    """Serve Binance's public streams from a simulated market on ``host:port``.

    Use it as ``async with open_exchange() as exchange:``; the server is
    accepting connections when the block starts, and every connection and
    task is gone when it ends.  ``port=0`` picks a free port (read
    ``exchange.port``).  ``seed`` and ``symbols`` define the market;
    ``rate`` is market ticks per second (``None`` or ``0``: as fast as
    possible); ``ping_interval`` (``None``: never) and ``pong_timeout`` are
    Binance's keepalive, 20 s and 60 s; ``ssl_context`` (a server context)
    serves ``wss://``; ``max_messages`` caps the data messages per connection.

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

    Raises ``ValueError`` for a negative rate, a non-positive timeout, limit
    or lifetime, or a shared market without a rate, and
    :class:`~trio_feed.InvalidStreamName` for a malformed symbol.
    """
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
    Market(seed, names)
    exchange = LocalExchange(host=host, seed=seed, symbols=names, rate=rate,
                             ping_interval=ping_interval, pong_timeout=pong_timeout,
                             ssl_context=ssl_context, max_messages=max_messages,
                             shared_market=shared_market,
                             max_queued_messages=max_queued_messages,
                             max_lifetime=max_lifetime,
                             max_client_messages_per_second=max_client_messages_per_second)
    exchange.port = port
    return _OpenExchange(exchange)
