"""One connection of a supervised feed: connect, subscribe, read, watch, and retire.

A :class:`Link` is one WebSocket connection carrying one shard's streams.
Its :meth:`Link.run` task connects (through the feed's shared
:class:`~trio_feed._backoff.AttemptLimiter`, which the shard consults first),
subscribes the shard's streams with batched SUBSCRIBEs, reports itself
started, and then reads until the connection ends, the watchdog fires, or
the shard retires it.  Reconnecting and rotating are the shard's business
(``trio_feed._shard``); a link only ever lives once.

Reading, per receive chunk:

- **channel mode** takes owned ``bytes`` copies of the chunk's payloads
  (``parser.copy_messages()``, which lends no view; the consumer decodes);
- **inline mode** decodes each payload straight from the lent view into a
  typed event, before the next read (no copy at all).

Either way the batch for the chunk goes to the feed's
:class:`~trio_feed._outbox.Outbox` in one call, control replies are routed
to the request that is waiting for them, and a ``serverShutdown`` notice
asks the shard to rotate.  The invariants:

S1, S2: a lent view never outlives its frame, and no await happens while one is lent.
    Every view from ``parser.messages()`` (inline mode) is released in a
    ``finally`` clause before the loop moves on, and the only awaits of the read loop
    (``receive_more``, and ``wait_space`` under the ``block`` policy) come
    after the chunk's loop has ended.  ``receive_more`` checks it.

S7: every client-to-server frame goes through the link's token bucket.
    The connection is opened with ``send_gate=self._gate``, so SUBSCRIBEs,
    our pings and the automatic pongs all wait for a token (at most 5 in any
    second with the defaults).

S10: a link that stops delivering is replaced.
    Liveness is complete messages, per stream kind (:class:`_Watchdog`):
    a kind pushed on a clock (depth, klines, tickers), once it has delivered
    on the shard, is alive only through its own data messages; an
    event-driven kind (trades, bookTicker), or a scheduled one that never
    delivered, through any complete message, pings included, unless a data
    message is half-way through.  Bytes alone, partial frames and endless continuation frames
    keep nothing alive.  Past its period (``stale_after``, or the kind's
    default) the read raises :class:`Stale` and the shard reconnects.  Our
    own pings, every ``ping_interval``, must be answered within
    ``pong_timeout`` of being sent, or the same.

S8: what a link read but could not hand over is counted.
    A batch still in hand when the link is cancelled (while it waits for
    outbox space) and messages held for a rotation that never completed are
    added to the feed's ``discarded``, as are the data messages that arrive
    during the closing handshake.
"""

from __future__ import annotations

import logging
import ssl
import time
from itertools import repeat
from typing import Any, Protocol

import orjson
import trio

from .._connection import Connection, connect
from .._errors import (
    BorrowError,
    ConnectionClosed,
    DecodeError,
    HandshakeError,
    InvalidStreamName,
    ProtocolError,
    RequestTimeout,
    Stale,
    SubscriptionError,
    lone_exception,
)
from ..binance import (
    AggTrade,
    AllBookTicker,
    BookTicker,
    ControlError,
    ControlResponse,
    DepthUpdate,
    PartialDepth,
    ServerShutdown,
    Stream,
    Trade,
)
from ..binance._limits import SPOT
from ..binance._streams import EVENT_DRIVEN_KINDS
from ._backoff import Backoff
from ._context import FeedContext
from ._outbox import EVENTS_AT_ONCE, Batch
from ._statistics import SKIPPED_PREFIX
from ._subscriptions import Requests
from ._token_bucket import TokenBucket

__all__ = [
    "Link", "Stale", "is_fatal", "reconnect_cause", "stale_after_for", "stream_named_in",
]

logger = logging.getLogger("trio_feed")

#: Seconds of silence after which a spot connection counts as stale, by stream
#: kind.  Event-driven streams (trades, bookTicker) may be quiet for long on an
#: illiquid symbol; Binance's pings every 20 s still arrive, so 60 s of
#: nothing at all means the connection is dead.  Streams pushed on a clock
#: (depth, klines, tickers) must never be quiet for 10 s.  Another market's
#: event-driven period is its ``Venue.quiet_after`` (USD-M pings every 3
#: minutes, so 4 minutes there), passed to the watchdog as ``quiet``.
STALE_AFTER_BY_KIND: dict[str, float] = dict.fromkeys(sorted(EVENT_DRIVEN_KINDS),
                                                      SPOT.quiet_after)
#: Any other kind: pushed on a schedule.
STALE_AFTER_SCHEDULED = 10.0

_CONTROL = (ControlResponse, ControlError)
_RETRYABLE = (ConnectionClosed, ProtocolError, HandshakeError, RequestTimeout, OSError,
              trio.BrokenResourceError, trio.TooSlowError)



def stale_after_for(streams: list[Stream], quiet: float = SPOT.quiet_after) -> float:
    """The watchdog period for a connection carrying ``streams``: the strictest kind's.

    ``quiet`` is the market's period for event-driven kinds (``Venue.quiet_after``).
    """
    periods = [quiet if s.kind in EVENT_DRIVEN_KINDS else STALE_AFTER_SCHEDULED
               for s in streams]
    return min(periods, default=quiet)


class _Watchdog:
    """When a link has been quiet too long: liveness is complete messages, per stream kind.

    A kind pushed on a clock (depth, klines, tickers: every kind not in
    :data:`STALE_AFTER_BY_KIND`) is alive only through complete *data*
    messages of its own kind, once it is *armed*: once a stream of that kind
    has delivered on the shard.  Pings, pongs and partial frames keep nothing
    alive there, so a server that pings but stopped pushing depth is
    replaced.  Event-driven kinds (trades, bookTicker), and scheduled kinds
    not armed yet, may be quiet for long (an illiquid symbol; a symbol that
    does not exist, which Binance accepts and never feeds, and which
    ``no_data_after`` reports instead of reconnecting for ever), so any
    complete message keeps them alive, a ping or pong included, but only when
    no data message is half-way through (a frame still arriving, or a
    fragmented message not finished): a server trickling one endless message
    is replaced too.  Each kind's period is ``stale_after`` if the caller
    chose one, else its entry in :data:`STALE_AFTER_BY_KIND`
    (:data:`STALE_AFTER_SCHEDULED` for the scheduled kinds, the longest
    event-driven period for those not armed).

    Which kinds a batch carried is found by a scan of its stream names, made
    only for armed kinds not credited in the last tenth of their period (and
    at most once a second for kinds not armed), so the cost is a few lookups
    per batch, and an armed kind is replaced after between 0.9 and 1.0 times
    its period of silence.
    """

    def __init__(self, streams: dict[str, Stream], armed: set[str], fixed: float | None,
                 now: float, quiet: float = SPOT.quiet_after) -> None:
        self.fixed = fixed
        #: The market's period for event-driven kinds (``Venue.quiet_after``).
        self.quiet = quiet
        #: Scheduled kinds that delivered on the shard (shared by its links).
        self.armed = armed
        #: Last time any complete message kept the event-driven kinds alive.
        self.any_alive = now
        #: Scheduled kind -> last time a data message of it arrived.
        self.alive: dict[str, float] = {}
        #: Scheduled kind -> its period.
        self.scheduled: dict[str, float] = {}
        self.event_period: float | None = None
        self.only_kind: str | None = None
        #: Stream name -> kind, for the scan.
        self.kinds: dict[str, str] = {}
        self._planned = -1
        self._arm_scan = now
        self.plan(streams, now)

    def plan(self, streams: dict[str, Stream], now: float) -> None:
        """Recompute the kinds and periods (the shard's streams changed, or a kind armed)."""
        self._planned = len(streams)
        self.kinds = {name: stream.kind for name, stream in streams.items()}
        fixed = self.fixed
        scheduled: dict[str, float] = {}
        event: float | None = None
        for kind in set(self.kinds.values()):
            if kind in EVENT_DRIVEN_KINDS:
                period = fixed or self.quiet
            elif kind in self.armed:
                scheduled[kind] = fixed or STALE_AFTER_SCHEDULED
                self.alive.setdefault(kind, now)
                continue
            else:
                period = fixed or self.quiet
            event = period if event is None else min(event, period)
        if not scheduled and event is None:
            event = fixed or self.quiet
        self.scheduled = scheduled
        self.event_period = event
        kinds = set(self.kinds.values())
        self.only_kind = next(iter(kinds)) if len(kinds) == 1 else None

    def data(self, batch: list[Any], now: float) -> None:
        """A chunk brought complete data messages (``batch``)."""
        self.any_alive = now
        alive = self.alive
        want = {kind for kind, period in self.scheduled.items() if now - alive[kind] > period / 10}
        if now >= self._arm_scan:
            unarmed = {k for k in self.kinds.values()
                       if k not in self.armed and k not in EVENT_DRIVEN_KINDS}
            if unarmed:
                want |= unarmed
                self._arm_scan = now + 1.0
        if not want:
            return
        if self.only_kind is not None:
            self._credit(self.only_kind, now)  # every data message is of that kind
            return
        kinds = self.kinds
        for item in batch:
            if isinstance(item, bytes):
                if not item.startswith(b'{"stream":"'):
                    continue
                name: str | None = item[11 : item.find(b'"', 11)].decode()
            else:
                name = getattr(item, "stream", None)
            kind = kinds.get(name) if name is not None else None
            if kind is not None and kind in want:
                self._credit(kind, now)
                want.discard(kind)
                if not want:
                    return

    def _credit(self, kind: str, now: float) -> None:
        if kind in EVENT_DRIVEN_KINDS:
            return
        self.alive[kind] = now
        if kind not in self.armed:
            self.armed.add(kind)
            self._planned = -1  # re-plan: the kind is watched on its own from now on

    def control(self, now: float) -> None:
        """A complete control frame or reply arrived, with no data message half-way."""
        self.any_alive = now

    def shift(self, seconds: float) -> None:
        if seconds > 0:
            self.any_alive += seconds
            for kind in self.alive:
                self.alive[kind] += seconds

    def deadline(self, streams: dict[str, Stream], now: float) -> tuple[float, str, float]:
        """``(when, what, period)``: the earliest time a kind counts as stale."""
        if len(streams) != self._planned:
            self.plan(streams, now)
        when, what, period = float("inf"), "", 0.0
        if self.event_period is not None:
            when, what, period = self.any_alive + self.event_period, "", self.event_period
        for kind, kind_period in self.scheduled.items():
            due = self.alive[kind] + kind_period
            if due < when:
                when, what, period = due, f"{kind} data ", kind_period
        return when, what, period


def _in_message(parser: Any) -> bool:
    """Whether a data message is half-way through: a frame still arriving, or fragments."""
    return bool(parser.buffered) or bool(getattr(parser, "_frag_opcode", 0))


def is_fatal(exc: BaseException) -> bool:
    """Errors that a reconnect cannot cure, so they go to the caller.

    Retryable (and nothing else is): transport failures (``OSError``, broken streams), timeouts,
    closes (1006 abnormal, 1011 server error, 1008 rate limit, 1001 going
    away, ...), protocol violations by the server, a refused handshake with a
    5xx or 429 status, a control request left unanswered
    (:class:`~trio_feed.RequestTimeout`), and the watchdog.  Fatal: an invalid URL or stream
    name, TLS certificate verification failing, a handshake refused with any
    other 4xx (400 is Binance's answer to a bad stream name), an error reply
    to a SUBSCRIBE, a payload that is not a Binance message, and a
    :class:`~trio_feed.BorrowError` (a bug in the caller's handler).  A
    normal closure by the server (1000) is final too: it says the stream is
    over (Binance closes with other codes; a replay server ends this way).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, HandshakeError):
        status = exc.status
        return status is not None and 400 <= status < 500 and status != 429
    if isinstance(exc, (InvalidStreamName, DecodeError, SubscriptionError, BorrowError)):
        return True
    if isinstance(exc, ConnectionClosed) and exc.code == 1000 and exc.initiated_by_peer:
        return True  # a normal closure: the server says the stream is over
    # Anything not known to be transient is a bug or a misconfiguration:
    # retrying would only hide it.
    return not isinstance(exc, _RETRYABLE)


def reconnect_cause(exc: BaseException) -> str:
    """A short label for why a connection ended, for ``statistics().reconnects``."""
    if isinstance(exc, Stale):
        return exc.cause
    if isinstance(exc, ConnectionClosed):
        return f"closed {exc.code}"
    if isinstance(exc, ProtocolError):
        return "protocol error"
    if isinstance(exc, HandshakeError):
        return f"handshake {exc.status}"
    if isinstance(exc, trio.TooSlowError):
        return "connect timeout"
    if isinstance(exc, RequestTimeout):
        return "request timeout"
    if isinstance(exc, (OSError, trio.BrokenResourceError)):
        return "transport error"
    return type(exc).__name__


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def stream_named_in(head: bytes) -> str | None:
    """The stream a combined-stream payload names (``{"stream":"<name>",...``), if it says."""
    start = head.find(b'"stream":"')
    if start < 0:
        return None
    start += 10
    end = head.find(b'"', start)
    if end < 0:
        return None
    return head[start:end].decode("utf-8", "replace")


#: How every combined-stream data payload starts, and the one notice that is not data.
_DATA_HEAD = b'{"stream":"'
_SHUTDOWN_HEAD = b'{"stream":"!serverShutdown'


def _is_data(payload: bytes) -> bool:
    """Fast check: a combined-stream data payload (``{"stream":"x...``, not ``!serverShutdown``)."""
    return (
        len(payload) > 26
        and payload[2] == 115
        and (payload[11] != 33 or payload[11:26] != b"!serverShutdown")
    )



class LinkOwner(Protocol):
    """What a link needs of the shard that owns it (:class:`~trio_feed.feed._shard.Shard`)."""

    context: FeedContext
    index: int
    streams: dict[str, Stream]
    #: Scheduled stream kinds that have delivered on the shard (see ``_Watchdog``).
    armed: set[str]
    backoff: Backoff
    rotating: bool

    def connect_plan(self) -> tuple[str, list[str]]: ...


class Link:
    """One connection of a shard; see the module docstring."""

    def __init__(self, shard: LinkOwner, number: int, *, hold: bool) -> None:
        self.shard = shard
        self.context = shard.context
        self.number = number
        self.conn: Connection | None = None
        self.requests = Requests()
        self._replies: dict[int, trio.Event] = {}
        self._results: dict[int, object] = {}
        self.bucket = TokenBucket(self.context.options.send_rate, self.context.options.send_burst)
        #: Batches read while holding (a rotation's new connection), in order.
        self.held: list[tuple[list[Any], int, float]] | None = [] if hold else None
        self.first_data = trio.Event()
        self.done = trio.Event()
        #: Set when the shard should look at this link: it ended, or the server is shutting down.
        self.attention = trio.Event()
        self.shutdown_notice = False
        self.error: BaseException | None = None
        self.retiring = False
        self.connected_at: float | None = None
        self.first_data_at: float | None = None
        self.healthy = False
        self._scope: trio.CancelScope | None = None
        #: During a rotation, per stream: the position this (old) link has handed
        #: over (``t``, ``a``, ``u``, or ``E`` for streams without ids) ...
        self.reached: dict[str | None, int] = {}
        #: ... and, on the new link that holds, the position an old link must have
        #: reached so that nothing lies between it and the first event held.
        self.needs: dict[str | None, int] = {}
        self._progress = trio.lowlevel.ParkingLot()
        self._pings: dict[bytes, float] = {}
        self._ping_count = 0
        self._in_hand = 0

    # -- the task ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, subscribe, report started, read until the end; see the module docstring.

        Before it has started, every error propagates to the shard's
        ``nursery.start``.  Afterwards the error is kept in :attr:`error` and
        the link just ends; the shard decides whether it is fatal.
        """
        feed = self.context
        options = feed.options
        started = False
        try:
            url, later = self.shard.connect_plan()
            conn = await connect(
                url,
                validate_utf8=False,  # orjson validates; the decoder maps it to close code 1007
                send_gate=self._gate,
                **options.connect_options,
            )
            self.conn = conn
            self.connected_at = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope
                    nursery.start_soon(self._read_loop)
                    # Pongs from a task of their own where the connection offers one, so
                    # that reading never waits for the send gate to let a pong out.
                    answer_pings = getattr(conn, "answer_pings", None)
                    if answer_pings is not None:
                        nursery.start_soon(answer_pings)
                    if options.ping_interval:
                        nursery.start_soon(self._ping_loop)
                    if later:
                        await self.request("SUBSCRIBE", later)
                    logger.info("connection %s up: %d streams, %d of them by SUBSCRIBE",
                                self.label, len(self.shard.streams), len(later))
                    started = True
                    task_status.started()
            except BaseExceptionGroup as group:
                leaf = lone_exception(group)
                raise leaf from leaf.__cause__  # keep the leaf's own cause
            finally:
                await self._close(conn)
        except Exception as exc:
            self.error = exc
            if not started:
                raise
            # After the start the shard decides (and logs) what to do about it.
        finally:
            self._progress.unpark_all()
            ended = self.error if self.error is not None else ConnectionClosed(1006, "link ended")
            for request_id, waiter in self._replies.items():
                self._results.setdefault(request_id, ended)
                waiter.set()
            self.done.set()
            self.attention.set()

    @property
    def label(self) -> str:
        return f"{self.shard.index}.{self.number}"

    async def _close(self, conn: Connection) -> None:
        feed = self.context
        if self.connected_at is not None:
            feed.counters.seconds_connected += trio.current_time() - self.connected_at
        if self.held:
            feed.counters.discarded += sum(len(batch) for batch, _, _ in self.held)
            self.held = []
        feed.counters.discarded += self._in_hand
        self._in_hand = 0
        with trio.CancelScope(shield=True):
            await conn.aclose()
        # Data that arrived during the closing handshake was read, then discarded.
        late = conn.statistics().discarded_at_close
        feed.counters.messages += late
        feed.counters.discarded += late

    def retire(self) -> None:
        """Stop reading at the next await and close (make-before-break's "break")."""
        self.retiring = True
        if self._scope is not None:
            self._scope.cancel()

    # -- sending -----------------------------------------------------------------

    async def _gate(self) -> None:
        delay = self.bucket.reserve(trio.current_time())
        if delay:
            await trio.sleep(delay)

    async def request(self, method: str, names: list[str]) -> None:
        """Send ``method`` for ``names`` (batched) and wait for every reply.

        Raises :class:`~trio_feed.SubscriptionError` for an error reply (flat
        or nested, naming the refused streams), after all replies arrived, and
        ``ConnectionClosed`` if the link ends first.  A request not answered
        within ``request_timeout`` seconds of being sent raises
        :class:`~trio_feed.RequestTimeout` and ends the link: a connection
        that ignores control requests is broken, and the shard replaces it.
        """
        conn = self.conn
        assert conn is not None
        timeout = self.context.options.request_timeout
        deadlines: dict[int, float] = {}
        for request_id, text in self.requests.batches(method, names):
            self._replies[request_id] = trio.Event()
            await conn.send(text.decode())
            deadlines[request_id] = trio.current_time() + timeout
        errors: list[BaseException] = []
        unanswered: list[str] = []
        for request_id, deadline in deadlines.items():
            with trio.move_on_at(deadline):
                await self._replies[request_id].wait()
            if not self._replies.pop(request_id).is_set():
                # No reply within request_timeout: the link is broken.
                unanswered += self.requests.pending.pop(request_id, ("", []))[1]
                continue
            result = self._results.pop(request_id, None)
            if isinstance(result, BaseException):
                errors.append(result)
        if unanswered:
            timed_out = RequestTimeout(method, unanswered, timeout)
            logger.warning("connection %s: %s", self.label, timed_out)
            self.fail(timed_out)
            raise timed_out
        if errors:
            first = errors[0]
            if isinstance(first, SubscriptionError) and len(errors) > 1:
                refused = [n for e in errors if isinstance(e, SubscriptionError) for n in e.streams]
                raise SubscriptionError(first.code, first.msg, first.request_id, refused)
            raise first
        logger.info("connection %s: %s %d streams", self.label, method, len(names))

    def fail(self, error: BaseException) -> None:
        """End the link because of ``error`` (kept in :attr:`error`): the shard replaces it."""
        if self.error is None:
            self.error = error
        if self._scope is not None:
            self._scope.cancel()

    def _on_control(self, event: ControlResponse | ControlError) -> None:
        request_id, result = self.requests.answer(event)
        if request_id is None:
            logger.warning("connection %s: reply to no pending request: %r", self.label, event)
            return
        self._results[request_id] = result
        waiter = self._replies.get(request_id)
        if waiter is not None:
            waiter.set()

    async def _ping_loop(self) -> None:
        options = self.context.options
        conn = self.conn
        assert conn is not None and options.ping_interval
        next_ping = trio.current_time() + options.ping_interval
        while True:
            # Wake for the next ping, or when the oldest unanswered one runs out of time:
            # a lost pong is noticed pong_timeout after its ping, not at the next ping.
            oldest = min(self._pings.values(), default=None)
            wake = next_ping if oldest is None else min(next_ping, oldest + options.pong_timeout)
            await trio.sleep_until(wake)
            now = trio.current_time()
            for sent in self._pings.values():
                # The same sum as the wake-up time: ``now - sent >= pong_timeout`` can be
                # False at that very instant (floating point), and the loop would spin.
                if now >= sent + options.pong_timeout:
                    raise Stale(
                        f"no pong for {options.pong_timeout} s (pong_timeout)", "ping timeout"
                    )
            if now < next_ping:
                continue
            next_ping = now + options.ping_interval
            self._ping_count += 1
            payload = b"%d" % self._ping_count
            self._pings[payload] = trio.current_time()
            await conn.ping(payload)

    def _on_pongs(self, pongs: list[bytes]) -> None:
        now = trio.current_time()
        for payload in pongs:
            sent = self._pings.pop(payload, None)
            if sent is not None:
                self.context.counters.ping_rtt.add(now - sent)
        pongs.clear()

    # -- reading -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        feed = self.context
        counters = feed.counters
        conn = self.conn
        assert conn is not None
        parser = conn.parser
        inline = feed.options.mode == "inline"
        decode = feed.decoder.decode
        undecodable = self._undecodable
        perf = time.perf_counter
        wall = feed.options.wall_clock
        watch = _Watchdog(self.shard.streams, self.shard.armed, feed.options.stale_after,
                          trio.current_time(), feed.options.quiet_after)
        pings_seen = parser.pings_received
        try:
            while True:
                # Messages first, then read: what arrived with the handshake reply,
                # before the connection broke, or before a protocol violation, is
                # delivered before the end is.
                batch = Batch(self)
                append = batch.append
                #: Inline mode: the chunk holds more messages than were decoded this turn.
                more = False
                nbytes = 0
                #: A payload that ends the connection (bad UTF-8) or the feed (DecodeError).
                failure: Exception | None = None
                #: Control replies and notices in this chunk (they keep the watchdog fed).
                specials = 0
                received = wall()
                started = perf()
                try:
                    if inline:
                        count_stream = counters.count_stream
                        for view in parser.messages():
                            try:
                                size = len(view)
                                try:
                                    event = decode(view)
                                except (DecodeError, ProtocolError) as exc:
                                    failure = undecodable(view, exc)
                                    if failure is not None:
                                        break
                                    continue
                            finally:
                                view.release()
                            if event.__class__ in _SPECIAL:
                                self._special(event)
                                specials += 1
                            else:
                                append(event)
                                nbytes += size
                                count_stream(event.stream, size)
                                if len(batch) >= EVENTS_AT_ONCE:
                                    more = True  # hand these over before decoding more
                                    break
                    else:
                        # Owned copies, no view lent (S2, S3).
                        payloads = parser.copy_messages()
                        if (all(map(bytes.isascii, payloads))
                                and all(map(bytes.startswith, payloads, repeat(_DATA_HEAD)))
                                and not any(map(bytes.startswith, payloads,
                                                repeat(_SHUTDOWN_HEAD)))):
                            # The usual chunk, checked in three C-level passes: every
                            # payload ASCII (so UTF-8) and a combined-stream data message.
                            batch.extend(payloads)
                            nbytes = sum(map(len, payloads))
                            payloads = []
                        for index, payload in enumerate(payloads):
                            if not payload.isascii() and not _is_utf8(payload):
                                # orjson would refuse it in the consumer's task, too late to
                                # close this connection with 1007: refuse it here.
                                failure = undecodable(payload, ProtocolError(
                                    "text message is not valid UTF-8", close_code=1007))
                            elif _is_data(payload):
                                append(payload)
                                nbytes += len(payload)
                                continue
                            else:
                                try:
                                    event = decode(payload)
                                except DecodeError:
                                    event = None  # the consumer decodes it again, in order
                                if event.__class__ in _SPECIAL:
                                    self._special(event)
                                    specials += 1
                                else:  # data in a shape the fast check did not recognise
                                    append(payload)
                                    nbytes += len(payload)
                                continue
                            if failure is not None:
                                # Read, never handed out: the rest of the chunk.
                                rest = len(payloads) - index - 1
                                counters.messages += rest
                                counters.discarded += rest
                                break
                except ProtocolError:
                    pass  # kept in parser.error: raised below, after the batch before it
                finally:
                    n = len(batch)
                    if n:
                        counters.messages += n
                        counters.bytes += nbytes
                        if inline:
                            counters.parse.add((perf() - started) * 1e6 / n)
                            feed.note_lag(batch, received)
                        else:
                            counters.copies += n
                # Control frames are queued by the walk above: a pong in this chunk
                # counts now, not when some later chunk arrives (on a quiet USD-M
                # connection the next one may be the server's ping, 3 minutes on).
                control = bool(parser.pongs) or parser.pings_received != pings_seen
                pings_seen = parser.pings_received
                if parser.pongs:
                    self._on_pongs(parser.pongs)
                now = trio.current_time()
                if batch:
                    watch.data(batch, now)
                elif specials or (control and not _in_message(parser)):
                    watch.control(now)
                if batch:
                    await self._hand_over(batch, nbytes, received)
                    # Time spent waiting for the consumer (block policy) is not silence.
                    watch.shift(trio.current_time() - now)
                if failure is not None:
                    raise failure
                if parser.error is not None:
                    raise parser.error
                if more:
                    # Let the consumer take these events before the next ones are made: a
                    # whole chunk of events alive at once costs the garbage collector more
                    # than decoding them (docs/performance.md).  No view is lent here.
                    await trio.lowlevel.checkpoint()
                    continue
                deadline, quiet, period = watch.deadline(self.shard.streams, trio.current_time())
                with trio.move_on_at(deadline) as waited:
                    await conn.receive_more()
                if waited.cancelled_caught:
                    raise Stale(f"no complete {quiet}message for {period} s (stale_after)",
                                "stale")
        except ProtocolError as exc:
            await conn.fail(exc)
            raise

    def _undecodable(self, payload: bytes | memoryview, exc: Exception) -> Exception | None:
        """Count a payload that did not decode; return what to raise, or ``None`` to go on.

        It was read and is never handed out: ``messages`` and ``discarded``
        both count it.  Invalid UTF-8 (a :class:`ProtocolError`, close code
        1007) always ends the connection.  A :class:`DecodeError` ends the
        feed under ``on_decode_error="raise"``; under ``"skip"`` it is counted
        per stream, its first bytes kept, and reading goes on.
        """
        counters = self.context.counters
        counters.messages += 1
        counters.discarded += 1
        if isinstance(exc, DecodeError) and self.context.options.on_decode_error == "skip":
            head = bytes(payload[:SKIPPED_PREFIX])
            counters.skip(stream_named_in(head), head)
            return None
        return exc

    def _special(self, event: Any) -> None:
        """A control reply or a ``serverShutdown`` notice."""
        counters = self.context.counters
        counters.control += 1
        if isinstance(event, _CONTROL):
            self._on_control(event)
        else:
            if not self.shutdown_notice:
                logger.warning("connection %s: serverShutdown received", self.label)
            self.shutdown_notice = True
            self.attention.set()

    async def _hand_over(self, batch: list[Any], nbytes: int, received: float) -> None:
        now = trio.current_time()
        if self.first_data_at is None:
            self.first_data_at = now
            self.first_data.set()
        elif (not self.healthy and not self.shutdown_notice
              and now - self.first_data_at >= self.context.options.healthy_after):
            # A connection the server announced it is shutting down proves nothing.
            self.healthy = True
            self.shard.backoff.healthy()
        if self.held is not None:
            _note_needs(self.needs, batch)
            self.held.append((batch, nbytes, received))
            return
        outbox = self.context.outbox
        self._in_hand = len(batch)
        while not outbox.put(batch, nbytes, received):
            await outbox.wait_space()  # block policy, backlog full: stop reading
        self._in_hand = 0
        if self.shard.rotating and _note_reached(self.reached, batch):
            self._progress.unpark_all()

    def covers(self, needs: dict[str | None, int]) -> bool:
        """Whether this link has handed over, on every stream, the position in ``needs``."""
        reached = self.reached
        return all(reached.get(stream, -1) >= need for stream, need in needs.items())

    async def wait_until_covered(self, new: Link) -> None:
        """Return once this link covers every stream ``new`` holds (see ``needs``), or ended."""
        while not self.covers(new.needs) and not self.done.is_set():
            await self._progress.park()

    def release(self) -> None:
        """Stop holding: hand everything held to the outbox (after the old link retired)."""
        held, self.held = self.held, None
        for batch, nbytes, received in held or ():
            # Under ``block`` with a full backlog this exceeds the bound once,
            # by one rotation's overlap, rather than lose what was held.
            self.context.outbox.put(batch, nbytes, received, force=True)


_SPECIAL = frozenset({ControlResponse, ControlError, ServerShutdown})


def _mark(item: Any) -> tuple[str | None, int, int] | None:
    """``(stream, position, need)`` of one data message (owned bytes or an event).

    ``position`` is how far the message takes its stream: the trade id ``t``,
    the aggregate id ``a``, the update id ``u`` (diff depth, bookTicker,
    partial depth's ``lastUpdateId``), or, for streams without ids, the event
    time ``E``.  ``need`` is the position an older connection must have
    handed over for nothing to lie between it and this message: the id just
    before it for consecutive ids (``t - 1``, ``a - 1``, ``U - 1``), the
    message itself for ids that only grow and for event times.
    """
    if isinstance(item, bytes):
        try:
            obj = orjson.loads(item)
        except orjson.JSONDecodeError:
            return None
        if obj.__class__ is not dict:
            return None
        stream = obj.get("stream")
        data = obj.get("data") if stream.__class__ is str else obj
        if data.__class__ is not dict:
            return None
        kind = data.get("e")
        if kind == "trade":
            key, first = "t", "t"
        elif kind == "aggTrade":
            key, first = "a", "a"
        elif kind == "depthUpdate":
            key, first = "u", "U"
        elif kind is None and "u" in data:  # spot bookTicker
            key = first = "u"
        elif kind is None and "lastUpdateId" in data:  # partial depth
            key = first = "lastUpdateId"
        else:
            key = first = "E"
        position, start = data.get(key), data.get(first)
        if position.__class__ is not int or start.__class__ is not int:
            return None
        return stream, position, start - 1 if kind in _CONSECUTIVE else start
    stream = getattr(item, "stream", None)
    if isinstance(item, Trade):
        return stream, item.trade_id, item.trade_id - 1
    if isinstance(item, AggTrade):
        return stream, item.agg_trade_id, item.agg_trade_id - 1
    if isinstance(item, DepthUpdate):
        return stream, item.final_update_id, item.first_update_id - 1
    if isinstance(item, BookTicker) and item.__class__ is not AllBookTicker:
        return stream, item.update_id, item.update_id  # (!bookTicker mixes symbols' ids)
    if isinstance(item, PartialDepth):
        return stream, item.last_update_id, item.last_update_id
    when = getattr(item, "event_time", None)
    if when.__class__ is int:
        return stream, when, when
    return None


#: ``e`` values whose ids are consecutive per stream.
_CONSECUTIVE = frozenset({"trade", "aggTrade", "depthUpdate"})


def _note_needs(needs: dict[str | None, int], batch: list[Any]) -> None:
    """Record, for streams met for the first time, what an older link must cover."""
    for item in batch:
        if isinstance(item, bytes) and item.startswith(b'{"stream":"'):
            end = item.find(b'"', 11)
            if item[11:end].decode() in needs:
                continue
        mark = _mark(item)
        if mark is not None and mark[0] not in needs:
            needs[mark[0]] = mark[2]


def _note_reached(reached: dict[str | None, int], batch: list[Any]) -> bool:
    """Record the newest position per stream of a batch handed over; ``True`` if any moved."""
    moved = False
    done: set[str | None] = set()
    for item in reversed(batch):
        mark = _mark(item)
        if mark is None or mark[0] in done:
            continue
        stream, position, _ = mark
        done.add(stream)
        if position > reached.get(stream, -1):
            reached[stream] = position
            moved = True
    return moved
