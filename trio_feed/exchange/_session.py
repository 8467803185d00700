"""One accepted connection: its subscriptions, its outgoing queue and its tasks.

Each connection runs, in one nursery, a *receiver* that answers control
messages (``_control``), and an *output* nursery holding a *writer* (drains
the connection's outgoing queue), the *sender* (per-connection market only:
steps the market and sends data), the *keeper* (server pings) and, with
``max_lifetime``, an *expiry* timer.  A close (for any reason) runs as one
more task in the connection's nursery: Close frame, at most ``CLOSE_GRACE``
for the peer's reply, then the nursery is cancelled.  So no task outlives
its connection: when the receiver sees the connection end, the connection's
nursery is cancelled (or, if a close or drop is in progress, that task
cancels it when done).

Pacing.  ``rate`` is market ticks per second (per connection, or for the
shared market); each tick sends every payload the subscribed streams emit for
it (see ``_market``).  Ticks are scheduled on trio's clock at
``start + k / rate``; a late sender (a slow reader, a busy loop) sends late
ticks back to back, and forgives lag beyond ``MAX_LAG``, so a stalled client
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

Rule: no data message for a stream is sent after the response to the
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
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
import trio
from trio_websocket import ConnectionClosed

from ..binance._limits import SPOT, Venue
from ..binance._streams import SERVER_SHUTDOWN, Stream
from ..binance._urls import envelope
from . import _control
from ._faults import ClientTraffic, half_close, reset
from ._hooks import HookedWebSocket
from ._market import Market
from ._rest import Faults
from ._shared import SharedMarket
from ._statistics import ConnectionInfo, Counters

__all__ = ["CLOSE_GRACE", "MAX_LAG", "Gate", "Host", "Session"]

#: Binance's limit of streams per connection.
MAX_STREAMS = SPOT.streams_per_connection
#: How long a closing handshake may take before the TCP connection is dropped.
CLOSE_GRACE = 1.0
#: How far behind schedule the sender may fall before the schedule restarts.
MAX_LAG = 1.0
#: In "as fast as possible" mode, yield after this many ticks that sent nothing.
IDLE_TICKS_PER_CHECKPOINT = 16
#: The close code and reason for each fault that closes with a Close frame.
LIFETIME_CLOSE = (1001, "connection lifetime exceeded")
RATE_LIMIT_CLOSE = (1008, "Too many requests")
SLOW_CLIENT_CLOSE = (1008, "slow client")
PONG_TIMEOUT_CLOSE = (1008, "pong timeout")


class Gate:
    """Whether the exchange's sending is paused, and the event that ends the pause."""

    def __init__(self) -> None:
        self.paused = False
        self.resumed = trio.Event()
        self.resumed.set()

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.resumed = trio.Event()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.resumed.set()


class Host(Protocol):
    """What a session needs of the exchange that accepted it (:class:`LocalExchange`)."""

    symbols: tuple[str, ...]
    rate: float | None
    max_messages: int | None
    max_queued_messages: int
    ping_interval: float | None
    pong_timeout: float
    max_lifetime: float | None
    faults: Faults
    subscribe_requests: list[tuple[int, float, str, list[str]]]


_Item = tuple[Stream | None, str, bool]  # (data stream or None, text, counts as data)


class Session:
    """One client: its subscriptions, its market, its outgoing queue and its tasks."""

    def __init__(self, exchange: Host, ws: HookedWebSocket, stream: trio.abc.Stream,
                 traffic: ClientTraffic, number: int, combined: bool,
                 streams: Sequence[Stream], *, market: Market, shared: SharedMarket | None,
                 counters: Counters, gate: Gate, session: str = "",
                 venue: Venue = SPOT, route: str = "") -> None:
        self.exchange = exchange
        self.ws = ws
        self.stream = stream
        self.traffic = traffic
        self.number = number
        self.combined = combined
        self.subs: dict[str, Stream] = {s.name: s for s in streams}
        #: The market's rules and the route this connection was opened on: a stream
        #: whose kind the route does not serve is subscribed but sent nothing.
        self.venue = venue
        self.route = route
        self.market_name = venue.market
        self.silent: set[str] = set()
        self.shared = shared
        self.market = market
        self.session = session
        self.counters = counters
        self._note_routes(streams)
        self.gate = gate
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
                            if stream.name not in self.silent:
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

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
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

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
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

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
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

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
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
            if self.gate.paused:
                await self.gate.resumed.wait()
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
            silent = self.silent
            for stream in list(subs.values()):
                if silent and stream.name in silent:
                    continue  # on the wrong route: Binance accepts it and sends nothing
                batch = market.encoded(stream)
                if faults.armed:
                    batch = faults.filter(self.session, stream, batch)
                for index, raw in enumerate(batch):
                    if self.gate.paused:
                        await self.gate.resumed.wait()
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
        if self.gate.paused:
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
        if self.outbox or self.gate.paused:
            self._enqueue(text, counted)
            return
        await self.ws.send_message(text)
        if counted:
            self._count_sent()

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
    async def write(self) -> None:
        """Drain the outgoing queue, in order, while sending is not paused."""
        outbox, subs, ws = self.outbox, self.subs, self.ws
        while True:
            if not outbox:
                await self._writer_lot.park()
                continue
            if self.gate.paused:
                await self.gate.resumed.wait()
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

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
    async def send_shutdown_notice(self) -> None:
        if self.closing is not None:
            return
        raw = orjson.dumps(self.market.server_shutdown())
        text = (envelope(SERVER_SHUTDOWN, raw) if self.combined else raw).decode()
        try:
            await self.send_text(text, counted=True)
        except ConnectionClosed:
            self._count_dropped(1)

    # -- timers -------------------------------------------------------------------

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
    async def keep_alive(self) -> None:
        exchange = self.exchange
        interval = exchange.ping_interval
        assert interval
        deadline = trio.current_time()
        for count in itertools.count():
            deadline += interval
            await trio.sleep_until(deadline)
            if self.gate.paused:
                await self.gate.resumed.wait()
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

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
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
        reply = _control.handle(self, message)
        if reply.startswith('{"code"'):
            self.counters.control_errors += 1
        return reply

    # What the control protocol needs (``_control.ControlTarget``).

    @property
    def max_streams(self) -> int:
        return self.venue.streams_per_connection

    def _note_routes(self, streams: Sequence[Stream]) -> None:
        """Mark the streams this connection's route does not serve (counted once each)."""
        for stream in streams:
            if not self.venue.serves(self.route, stream.kind):
                self.silent.add(stream.name)
                self.counters.misrouted_streams += 1

    def known_symbol(self, symbol: str) -> bool:
        return symbol in self.exchange.symbols

    def log_request(self, method: str, params: list[Any]) -> None:
        self.exchange.subscribe_requests.append(
            (self.number, trio.current_time(), method, params))

    def add(self, streams: list[Stream]) -> None:
        self._note_routes(streams)
        for stream in streams:
            self.subs[stream.name] = stream
            if self.shared is not None and stream.name not in self.silent:
                self.shared.subscribe(self, stream)
        if self.subs:
            self.wakeup.set()

    def remove(self, names: list[str]) -> None:
        for name in names:
            del self.subs[name]
            if name in self.silent:
                self.silent.discard(name)
            elif self.shared is not None:
                self.shared.unsubscribe(self, name)

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            number=self.number, subscriptions=tuple(self.subs), opened_at=self.opened_at,
            session=self.session, combined=self.combined, messages_sent=self.sent,
            messages_dropped=self.dropped, client_messages=len(self.traffic.times),
            queued=len(self.outbox))

