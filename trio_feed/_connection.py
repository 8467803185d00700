"""The WebSocket connection: with its TLS transport, the only code that awaits on a socket.

Everything protocol-shaped is delegated to the sans-I/O ``wire`` package;
this module moves bytes between it and a trio stream (TCP, or TLS over TCP)
and owns the few decisions that need a clock or a lock.  TLS is
``_tls_stream.TLSStream``, a trio stream of its own over ``ssl.SSLObject``
that returns every record a 256 KiB socket read brought in one call, where
``trio.SSLStream`` returns one 16 KiB record per call (see its docstring).

S5: one writer at a time.
    Pongs, Close frames and application messages all leave through
    :meth:`Connection._send_frame`, which holds a ``trio.StrictFIFOLock``
    around ``send_all``.  Two tasks can therefore send concurrently (say a
    subscription and an automatic pong) without interleaving their bytes,
    and in the order they asked.  The optional ``send_gate`` (an async
    callable, e.g. a token bucket's ``acquire``) is awaited under that lock
    before every data, ping and pong frame, so a budget of client messages
    per second (Binance allows 5, pongs included) covers all of them and
    keeps their order.  Close frames skip the gate: they end the connection.

S6: pongs never wait on a lent view, and reading never waits for a pong.
    The parser copies each ping's payload into owned ``bytes`` as it parses
    the frame (S6 in ``wire``), so no pong ever holds borrowed memory.

    Only the most recent ping is answered (RFC 6455 section 5.5.3 allows
    it): :meth:`Connection.receive_more` moves the parser's pings into one
    *pending* ping, and every older unanswered one is counted in
    ``pings_coalesced``.  ``pings_received == pongs_sent + pings_coalesced +
    pings_unanswered`` always holds.  A pong takes its payload only once the
    send gate has let it through, so a ping that arrived during the wait is
    the one answered.

    The pong is sent by :meth:`Connection.answer_pings`, a task of its own
    that ``run_inline`` and ``run_channel`` start beside their reader:
    ``receive_more`` only wakes it and reads at once.  If the gate has no
    token, the ping stays pending while the reads go on, and its pong leaves
    as soon as the gate grants one (the task waits in the gate, under the
    send lock, so rules 5 and 7 hold for pongs too).  Without that task (a
    caller that drives ``receive_more`` itself and starts none),
    ``receive_more`` sends the pending pong itself before reading, waiting
    for the gate: at most one pong per chunk, however many pings came.
    :meth:`Connection.receive` answers the pending ping after copying a
    message and releasing its view, before returning it, so a pong always
    leaves before the caller's reply to the message that followed its ping.

Closing
-------

The closing handshake runs both ways.  When the peer sends Close, we echo its
code, wait (at most ``close_timeout`` seconds) for the peer to end the TCP
connection, and raise :class:`~trio_feed.ConnectionClosed` with the peer's
code and reason.  :meth:`Connection.aclose` sends our Close, reads and
discards until the peer's Close arrives (again bounded by ``close_timeout``),
then closes the transport.  The transport is closed whatever happens: with a
view of the receive buffer still lent, ``aclose`` sends its Close, does not
wait for the answer (the buffer cannot take it), closes the transport and
then raises :class:`~trio_feed.BorrowError`.  ``async with
open_connection(...)`` attaches that error as a note to the exception that
ended its body, if any, so the caller sees the handler's own exception.
A protocol violation by the peer closes with the code carried by the
:class:`~trio_feed.ProtocolError` and re-raises it.  A transport that ends
without a Close frame raises ``ConnectionClosed(1006)``.

Timeouts are the caller's, except the two that bound the handshakes, which
are named parameters (``connect_timeout``, ``close_timeout``).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from urllib.parse import urlsplit

import attrs
import trio

from ._errors import BorrowError, ConnectionClosed, HandshakeError, ProtocolError
from ._tls_stream import TLSStream
from ._value import Value
from .wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    CloseCode,
    FrameParser,
    Opcode,
    build_request,
    encode_binary,
    encode_close,
    encode_ping,
    encode_pong,
    encode_text,
    make_key,
    parse_response,
)
from .wire._handshake import refusal_body_wanted

__all__ = ["Connection", "ConnectionContext", "ConnectionStatistics", "open_connection"]

#: Bytes asked of the transport per read.  Large reads amortise trio's
#: per-call cost over many messages (4 KiB reads cost about 0.5 µs more per
#: message than 256 KiB reads on this project's benchmark machine).
DEFAULT_RECEIVE_SIZE = 256 * 1024


@attrs.frozen(repr=False)
class ConnectionStatistics(Value):
    """A snapshot of one connection's counters (see :meth:`Connection.statistics`)."""

    url: str
    bytes_received: int
    chunks_received: int
    messages_received: int
    messages_sent: int
    pings_received: int
    pongs_sent: int
    #: Pings never answered because a later ping arrived before their pong could leave
    #: (RFC 6455 section 5.5.3 lets an endpoint answer only the most recent one).
    pings_coalesced: int
    #: Pings received and not answered (yet): 0 or 1 while open, plus any left at close.
    #: ``pings_received == pongs_sent + pings_coalesced + pings_unanswered`` always.
    pings_unanswered: int
    discarded_at_close: int
    close_code: int | None


class Connection:
    """An open client WebSocket connection.  Make one with :func:`open_connection`.

    Receiving comes in two shapes.  :meth:`receive` returns each message as
    owned ``str`` (text) or ``bytes`` (binary): simple, one copy per message.
    The pipelines in ``trio_feed._pipelines`` instead walk
    ``connection.parser`` to borrow each payload in place, call
    :meth:`receive_more` between chunks, and run :meth:`answer_pings` beside
    it so that pongs never hold up the reads.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        url: str,
        parser: FrameParser,
        *,
        receive_size: int,
        close_timeout: float,
        receive_timeout: float | None = None,
        send_gate: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._stream = stream
        self._send_gate = send_gate
        self.url = url
        #: The sans-I/O frame parser holding this connection's receive buffer.
        self.parser = parser
        self._receive_size = receive_size
        self._close_timeout = close_timeout
        self._receive_timeout = receive_timeout
        self._send_lock = trio.StrictFIFOLock()
        self._closed: ConnectionClosed | None = None
        self._close_sent = False
        self._bytes_received = 0
        self._chunks_received = 0
        self._messages_sent = 0
        self._pongs_sent = 0
        self._pings_coalesced = 0
        #: Without a send gate: every ping not yet answered, oldest first.
        self._pings_waiting: list[bytes] = []
        #: Payload of the latest ping not answered yet (older ones are coalesced into it).
        self._ping_pending: bytes | None = None
        #: Set by receive_more when a ping is pending, and on close: wakes answer_pings.
        self._ping_wakeup = trio.Event()
        self._answering = False  # an answer_pings() task is running
        self._discarded_at_close = 0
        #: A message :meth:`receive` parsed but could not return yet (see there).
        self._undelivered: str | bytes | None = None

    # -- state -------------------------------------------------------------

    @property
    def closed(self) -> ConnectionClosed | None:
        """``None`` while open; afterwards the :class:`ConnectionClosed` describing the end."""
        return self._closed

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            url=self.url,
            bytes_received=self._bytes_received,
            chunks_received=self._chunks_received,
            messages_received=self.parser.messages_lent,
            messages_sent=self._messages_sent,
            pings_received=self.parser.pings_received,
            pongs_sent=self._pongs_sent,
            pings_coalesced=self._pings_coalesced,
            pings_unanswered=int(self._ping_pending is not None) + len(self.parser.pings),
            discarded_at_close=self._discarded_at_close,
            close_code=None if self._closed is None else self._closed.code,
        )

    # -- receiving -----------------------------------------------------------

    @property
    def answering_pings(self) -> bool:
        """Whether an :meth:`answer_pings` task is running for this connection."""
        return self._answering

    async def answer_pings(self) -> None:
        """Send the pongs, from a task of their own, so that reading never waits for one.

        Run it in a nursery beside the task that calls :meth:`receive_more`
        (``run_inline`` and ``run_channel`` do).  Each time a ping is pending
        it sends one pong, through the send gate and the send lock, echoing
        the most recent ping at the moment the gate lets it through; older
        unanswered pings are coalesced into it.  Returns once the connection
        has closed (or our Close is sent).  Raises ``trio.BusyResourceError``
        if another ``answer_pings`` task is already running.
        """
        if self._answering:
            raise trio.BusyResourceError("another task already answers this connection's pings")
        self._answering = True
        try:
            while self._closed is None and not self._close_sent:
                self._take_pings()
                if self._ping_pending is None:
                    self._ping_wakeup = trio.Event()
                    await self._ping_wakeup.wait()
                    continue
                try:
                    await self._send_pong()
                except ConnectionClosed:
                    return  # the reader reports the end
        finally:
            self._answering = False

    async def receive_more(self) -> None:
        """Have the latest ping answered, handle a received Close, then read one chunk.

        Call it only when no view of the receive buffer is lent (S2 and
        6): it checks, and raises :class:`~trio_feed.BorrowError` before
        awaiting anything if one is.  Raises
        :class:`~trio_feed.ConnectionClosed` once the connection has ended,
        whichever side ended it.

        Pings are answered most recent first (S6): with an
        :meth:`answer_pings` task running, a pending ping only wakes it and
        the read goes ahead at once; without one, this call sends the pong
        itself before reading, waiting for the send gate if it has no token.
        """
        parser = self.parser
        # S2, checked: this is the one await on the data path, so no view
        # may be lent here.  One resize per chunk, not per message.
        parser.check_borrows()
        if parser.pings:
            self._take_pings()
        if self._ping_pending is not None:
            if self._answering:
                self._ping_wakeup.set()
            else:
                try:
                    await self._send_pong()
                except ConnectionClosed:
                    pass  # reported just below
        if parser.close is not None:
            await self._on_peer_close()
        if self._closed is not None:
            raise self._closed
        try:
            if self._receive_timeout is None:
                data = await self._stream.receive_some(self._receive_size)
            else:
                with trio.move_on_after(self._receive_timeout) as waited:
                    data = await self._stream.receive_some(self._receive_size)
                if waited.cancelled_caught:
                    await self._abort(
                        1006, f"no data for {self._receive_timeout} s (receive_timeout)"
                    )
                    raise self._closed  # type: ignore[misc]
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._abort(1006, f"transport failed: {exc!r}")
            raise self._closed from exc  # type: ignore[misc]
        if not data:
            await self._abort(1006, "the peer ended the connection without a Close frame")
            raise self._closed  # type: ignore[misc]
        self._bytes_received += len(data)
        self._chunks_received += 1
        parser.receive_data(data)

    async def receive(self) -> str | bytes:
        """The next data message as owned ``str`` (text) or ``bytes`` (binary).

        Raises :class:`~trio_feed.ConnectionClosed` when the connection ends,
        and :class:`~trio_feed.ProtocolError` (after sending the matching Close)
        if the peer breaks the protocol.
        """
        parser = self.parser
        if self._closed is not None and self._undelivered is None:
            raise self._closed  # nothing is delivered after the connection closed
        if self._undelivered is not None:
            # A previous call was cancelled while answering pings: see _answer_pings_before.
            message, self._undelivered = self._undelivered, None
            return message
        try:
            while True:
                view = parser.next_message()
                if view is not None:
                    with view:
                        if parser.opcode == Opcode.TEXT:
                            message = str(view, "utf-8")
                        else:
                            message = bytes(view)
                    if parser.pings:
                        await self._answer_pings_before(message)
                    return message
                await self.receive_more()
        except ProtocolError as exc:
            await self.fail(exc)
            raise

    async def _answer_pings_before(self, message: str | bytes) -> None:
        """Answer the pings that arrived before ``message``, before handing it over.

        A ping that precedes a message on the wire is answered before the
        caller sees that message, so the pong also precedes anything the
        caller sends in reply to it (Autobahn cases 5.6, 5.19 and 5.20).  The
        message is already an owned copy and its view released, so this await
        holds no borrowed memory (S6).  If the await is cancelled, the
        next :meth:`receive` returns ``message``, which the parser has already
        consumed; if the transport fails, the message is still returned and
        the next call reports the end.
        """
        try:
            await self._answer_pings()
        except ConnectionClosed:
            pass  # the next receive() reports it
        except BaseException:
            self._undelivered = message  # cancelled: the next receive() returns it
            raise

    async def _answer_pings(self) -> None:
        """Send the pong for the latest pending ping, if any (waiting for the gate)."""
        self._take_pings()
        if self._ping_pending is not None:
            await self._send_pong()

    def _take_pings(self) -> None:
        """Move the parser's pings into the one pending ping; count the ones passed over.

        With no send gate there is no frame budget to keep, so nothing is passed
        over: every ping gets its own pong, in order (Autobahn's cases 2.10 and
        2.11 expect that, though RFC 6455 section 5.5.3 does not ask it).
        """
        pings = self.parser.pings
        if pings and self._send_gate is None:
            self._pings_waiting += pings
            pings.clear()
            self._ping_pending = self._pings_waiting[-1]
        if pings:
            self._pings_coalesced += len(pings) - 1 + (self._ping_pending is not None)
            self._ping_pending = pings[-1]
            pings.clear()

    async def _send_pong(self) -> None:
        """Answer the most recent pending ping: one pong, through the gate (S7).

        The payload is taken after the gate let the pong through, so a ping
        that arrived during the wait is the one answered.  A pong that did not
        leave (cancelled, or the transport failed) leaves its ping pending,
        unless a newer one arrived meanwhile.
        """
        async with self._send_lock:
            self._take_pings()
            if self._ping_pending is None or self._close_sent:
                return  # answered by another task meanwhile, or no pong is allowed any more
            if self._send_gate is not None:
                await self._send_gate()
                self._take_pings()
                if self._close_sent:
                    return
            payload, self._ping_pending = self._ping_pending, None
            assert payload is not None
            waiting, self._pings_waiting = self._pings_waiting, []
            payloads = waiting or [payload]  # without a gate, every ping in order
            sent = False
            try:
                await self._stream.send_all(b"".join(encode_pong(p) for p in payloads))
                sent = True
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._transport_failed(exc) from exc
            finally:
                if sent:
                    self._pongs_sent += len(payloads)
                elif waiting:
                    self._pings_waiting = waiting + self._pings_waiting  # still to answer
                    self._ping_pending = self._pings_waiting[-1]
                elif self._ping_pending is None:
                    self._ping_pending = payload  # not sent: still to answer
                else:
                    self._pings_coalesced += 1  # not sent, and a newer ping is pending

    def _transport_failed(self, exc: BaseException) -> ConnectionClosed:
        if self._closed is None:
            self._set_closed(ConnectionClosed(1006, f"transport failed: {exc!r}"))
        assert self._closed is not None
        return self._closed

    def _set_closed(self, closed: ConnectionClosed) -> None:
        self._closed = closed
        self._ping_wakeup.set()  # answer_pings() returns once the connection has closed

    async def _on_peer_close(self) -> None:
        assert self.parser.close is not None
        code, reason = self.parser.close
        if self._closed is None:
            self._set_closed(ConnectionClosed(code, reason, initiated_by_peer=not self._close_sent))
        if not self._close_sent:
            echo = code if code != CloseCode.NO_STATUS else None
            await self._send_close(echo)
        await self._finish_transport()

    # -- sending -------------------------------------------------------------

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a text (``str``) or binary (bytes-like) message."""
        frame = encode_text(message) if isinstance(message, str) else encode_binary(bytes(message))
        await self._send_frame(frame)
        self._messages_sent += 1

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping.  Binance counts pings against its 5 messages/s budget: use sparingly."""
        await self._send_frame(encode_ping(payload))

    async def _send_frame(self, frame: bytes) -> None:
        if self._closed is not None and self._close_sent:
            raise self._closed
        async with self._send_lock:
            if self._send_gate is not None:
                await self._send_gate()
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._transport_failed(exc) from exc

    async def _send_close(self, code: int | None, reason: str = "") -> None:
        if self._close_sent:
            return
        self._close_sent = True
        self._ping_wakeup.set()  # no pong may follow our Close
        try:
            async with self._send_lock:
                await self._stream.send_all(encode_close(code, reason))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer is gone already; the transport is closed next anyway

    # -- closing -------------------------------------------------------------

    async def fail(self, error: ProtocolError) -> None:
        """Close with ``error.close_code`` because the peer broke the protocol.

        Does not raise ``error`` itself: the caller re-raises it, so that it
        reaches the user as the exception that describes the fault.
        """
        if self._closed is None:
            self._set_closed(
                ConnectionClosed(error.close_code, str(error), initiated_by_peer=False)
            )
        with trio.move_on_after(self._close_timeout) as scope:
            scope.shield = True
            await self._send_close(error.close_code, _short_reason(str(error)))
            await self._drain_until_eof()
        await trio.aclose_forcefully(self._stream)

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Run the closing handshake and close the transport.  Safe to call more than once.

        Waits at most ``close_timeout`` seconds for the peer's answering Close;
        after that, or on cancellation, the transport is closed forcefully.
        The transport is closed whatever happens: if a view lent from the
        receive buffer is still alive, the buffer cannot take the peer's
        answer, so the wait stops, the transport is closed, and *then*
        :class:`~trio_feed.BorrowError` is raised (``async with
        open_connection(...)`` attaches it as a note to the exception that
        ended the body instead, if there is one).
        """
        if self._closed is None:
            self._set_closed(ConnectionClosed(code, reason, initiated_by_peer=False))
        try:
            if self._close_sent and self.parser.close is not None:
                return
            try:
                self.parser.check_borrows()
            except BorrowError:
                pinned = True  # the buffer cannot take the peer's answer: do not wait for it
            else:
                pinned = False
            with trio.move_on_after(self._close_timeout) as scope:
                scope.shield = True
                await self._send_close(code, reason)
                if not pinned:
                    await self._await_peer_close()
        finally:
            await trio.aclose_forcefully(self._stream)
        if pinned:
            self.parser.check_borrows()  # raises BorrowError, now that the transport is closed

    async def _await_peer_close(self) -> None:
        parser = self.parser
        while parser.close is None:
            try:
                for view in parser.messages():
                    # Data after our Close is discarded (section 5.5.1), but counted.
                    view.release()
                    self._discarded_at_close += 1
            except ProtocolError:
                return
            if parser.close is not None:
                break
            try:
                data = await self._stream.receive_some(self._receive_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            parser.receive_data(data)
        await self._drain_until_eof()

    async def _finish_transport(self) -> None:
        with trio.move_on_after(self._close_timeout) as scope:
            scope.shield = True
            await self._drain_until_eof()
        await trio.aclose_forcefully(self._stream)

    async def _drain_until_eof(self) -> None:
        """Wait for the peer to end TCP: section 7.1.1 lets the server close first."""
        try:
            while await self._stream.receive_some(self._receive_size):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _abort(self, code: int, reason: str) -> None:
        if self._closed is None:
            self._set_closed(ConnectionClosed(code, reason))
        await trio.aclose_forcefully(self._stream)


def _short_reason(text: str) -> str:
    """A close reason must fit in 123 UTF-8 bytes."""
    data = text.encode("utf-8")[:120]
    return data.decode("utf-8", "ignore")


class ConnectionContext:
    """What :func:`open_connection` returns: awaitable once, or an async context manager."""

    def __init__(self, url: str, options: dict[str, object]) -> None:
        self._url = url
        self._options = options
        self._connection: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._connection = await connect(self._url, **self._options)  # type: ignore[arg-type]
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        code = CloseCode.NORMAL if exc is None else CloseCode.GOING_AWAY
        try:
            await self._connection.aclose(code)
        except BorrowError as borrow:
            if exc is None:
                raise
            # The body's own exception (often the handler's) reaches the caller; the
            # view it left pinned is attached to it, not put in its place.
            exc.add_note(f"while closing the connection: BorrowError: {borrow}")


#: Seconds a refused upgrade may take to send the rest of its (short) body.
REFUSAL_BODY_TIMEOUT = 1.0


async def _read_refusal_body(stream: trio.abc.Stream, refused: HandshakeError) -> None:
    """Read the rest of a refusal's announced body (bounded in size and time) onto ``refused``."""
    wanted = refusal_body_wanted(refused)
    if not wanted:
        return
    body = bytearray(refused.body)
    with trio.move_on_after(REFUSAL_BODY_TIMEOUT):
        while wanted > 0:
            chunk = await stream.receive_some(wanted)
            if not chunk:
                break
            body += chunk
            wanted -= len(chunk)
    refused.body = bytes(body)


def open_connection(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    dangerously_disable_tls_verification: bool = False,
    connect_timeout: float = 10.0,
    close_timeout: float = 5.0,
    receive_timeout: float | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_size: int = DEFAULT_RECEIVE_SIZE,
    validate_utf8: bool = True,
    poison: bool = False,
    extra_headers: Iterable[tuple[str, str]] = (),
    send_gate: Callable[[], Awaitable[object]] | None = None,
) -> ConnectionContext:
    """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``)::

        async with open_connection("wss://stream.binance.com:9443/ws/btcusdt@trade") as conn:
            print(await conn.receive())

    TLS verification is on, against the system's CAs, unless ``ssl_context``
    says otherwise.  ``dangerously_disable_tls_verification=True`` turns it
    off entirely; never use it outside tests.

    ``connect_timeout`` bounds TCP connect, TLS and the upgrade together;
    exceeding it raises ``trio.TooSlowError``.  ``close_timeout`` bounds each
    closing handshake.  ``receive_timeout`` (off by default; Binance pings
    every 20 s, so 60 s is a sound value there) is the longest wait for any
    bytes at all: past it the connection is dropped and
    :class:`~trio_feed.ConnectionClosed` (1006) is raised, so a peer that
    stalls cannot hang the reader.  It bounds silence only: a peer trickling
    a byte more often than that keeps the connection open.  ``max_message_size``,
    ``validate_utf8`` and ``poison`` configure the frame parser (see
    :class:`~trio_feed.wire.FrameParser`).  ``receive_size`` is the number of
    bytes asked of the transport per read.  ``send_gate``, if given, is
    awaited before every data, ping and pong frame (S7): pass a token
    bucket's ``acquire`` to respect a server's message budget.

    Errors: :class:`~trio_feed.HandshakeError` if the upgrade is refused or
    wrong; ``OSError`` if the TCP connection fails; ``ssl.SSLError`` (an
    ``OSError``) if TLS fails, including certificate verification.
    """
    options: dict[str, object] = dict(
        ssl_context=ssl_context,
        dangerously_disable_tls_verification=dangerously_disable_tls_verification,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        receive_timeout=receive_timeout,
        max_message_size=max_message_size,
        receive_size=receive_size,
        validate_utf8=validate_utf8,
        poison=poison,
        extra_headers=tuple(extra_headers),
        send_gate=send_gate,
    )
    return ConnectionContext(url, options)


async def connect(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    dangerously_disable_tls_verification: bool = False,
    connect_timeout: float = 10.0,
    close_timeout: float = 5.0,
    receive_timeout: float | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    receive_size: int = DEFAULT_RECEIVE_SIZE,
    validate_utf8: bool = True,
    poison: bool = False,
    extra_headers: Iterable[tuple[str, str]] = (),
    send_gate: Callable[[], Awaitable[object]] | None = None,
) -> Connection:
    """Connect and return an open :class:`Connection`; the caller must ``aclose()`` it.

    Prefer ``async with open_connection(...)``, which closes it for you.
    Arguments are those of :func:`open_connection`.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the URL {url!r} has no host")
    secure = parts.scheme == "wss"
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if secure:
        if dangerously_disable_tls_verification:
            ssl_context = ssl.create_default_context()
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        elif ssl_context is None:
            ssl_context = ssl.create_default_context()
    parser = FrameParser(
        max_message_size=max_message_size, validate_utf8=validate_utf8, poison=poison
    )
    with trio.fail_after(connect_timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        try:
            if secure:
                assert ssl_context is not None
                tls = TLSStream(stream, ssl_context, server_hostname=host)
                stream = tls
                try:
                    await tls.do_handshake()
                except ssl.SSLError as exc:  # the ssl module's own error says why
                    exc.add_note(f"TLS handshake with {host}:{port} for {url}")
                    raise
            key = make_key()
            await stream.send_all(
                build_request(host, port, resource, key, secure=secure, extra_headers=extra_headers)
            )
            received = bytearray()
            while True:
                chunk = await stream.receive_some(DEFAULT_RECEIVE_SIZE)
                if not chunk:
                    raise HandshakeError("the server closed the connection during the handshake")
                received += chunk
                try:
                    result = parse_response(received, key)
                except HandshakeError as refused:
                    await _read_refusal_body(stream, refused)
                    raise
                if result is not None:
                    break
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    _response, leftover = result
    if leftover:
        parser.receive_data(leftover)
    connection = Connection(
        stream,
        url,
        parser,
        receive_size=receive_size,
        close_timeout=close_timeout,
        receive_timeout=receive_timeout,
        send_gate=send_gate,
    )
    # Frame bytes that arrived with the handshake reply are traffic too.
    connection._bytes_received = len(leftover)
    connection._chunks_received = 1 if leftover else 0
    return connection
