"""The two ways to handle a payload that sits in a reusable receive buffer.

``run_inline(conn, handler)`` **borrows**.  One task reads a chunk, then
has the parser call the synchronous ``handler(view)`` for each message in it
(``FrameParser.deliver``), with a ``memoryview`` straight into the receive
buffer, then reads the next chunk.  No copy is made, and parsing is tied to
reading: a slow handler slows the reads.

``run_channel(conn, handler)`` **copies**.  A reader task takes owned
``bytes`` copies of every message in a chunk (``FrameParser.copy_messages``,
one allocation per message and no view) and sends them, one *batch per
receive chunk*, over a bounded trio memory channel to a parser task, which
calls ``handler(payload)``.  A slow handler no longer stalls the read loop
until the channel is full.

Why a batch per chunk, not a message per send: on this project's benchmark
machine a memory-channel send plus receive between two tasks costs about
8.5 µs, and ``bytes(view)`` of a 200-byte message about 0.1 µs.  In Python
the copy is not the cost; the hop is.  A 256 KiB chunk holds about a
thousand Binance messages, so one hop per chunk makes the hop's cost per
message negligible (``docs/performance.md`` has the measurements).

The invariants, each enforced here (``docs/SAFETY.md`` maps them to tests):

S1: a lent view never outlives its frame.
    ``parser.deliver(handler)`` releases every view it lends in a
    ``finally`` clause, whatever way the handler exits.  The parser itself
    catches any view that escaped anyway (S1).

S2: no await while a view is lent.
    Handlers of lent views must be synchronous (``_require_sync`` refuses an
    async one), and the only ``await`` in each loop (``conn.receive_more()``,
    ``send_channel.send()``) comes after ``deliver`` has returned, when every
    view is released.  ``receive_more`` checks that no view is lent before it
    awaits.

S3: only owned bytes cross a channel.
    The reader sends the ``list[bytes]`` that ``parser.copy_messages()``
    returns: owned copies, made without lending any view.

S4: no task outlives its pipeline.
    Both tasks of ``run_channel`` live in one nursery that ``run_channel``
    opens and closes.  If either task fails, the nursery cancels the other.
    The reader hands batches over with ``send_nowait``; only when the channel
    is full does it wait, in a nested nursery whose helper task keeps reading
    meanwhile (S6), so that task too ends before the reader does.
    When the connection ends, the reader closes the send side
    (``async with send_channel``) so the parser first delivers every batch
    already read, then sees the end of the channel; the reader's exception is
    raised after that.  Nothing copied is dropped silently: batches still
    queued when the pipeline is cancelled or the handler fails, the batch in
    hand while the reader waits for space (and the backlog read meanwhile),
    and a batch whose ``send_nowait`` finds the channel already closed by a
    failed handler are all counted in ``discarded``, so
    ``delivered + discarded == copies`` whatever way the pipeline ended.
    A single failure reaches the caller as itself, not as an ExceptionGroup,
    even when it coincides with a cancellation of the caller's scope (the
    ``Cancelled`` is dropped: trio raises it again at the caller's next
    checkpoint).

S6: neither pongs nor a slow consumer can stop the reads.
    Both pipelines run ``conn.answer_pings()`` in their nursery (unless such a
    task already runs): pongs leave from that task, through the connection's
    send gate, answering only the most recent ping, and ``receive_more``
    never waits for one.  When the channel is full, the reader keeps reading
    while its batch waits (``_send_while_reading``), so pings keep arriving
    and being answered.  The backlog this builds is bounded by
    ``max_backlog_bytes``; past it, the reader stops and TCP flow control
    slows the server instead.  Each wait is counted in ``stalls`` and
    ``stall_seconds``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NoReturn

import attrs
import orjson
import trio

from ._connection import Connection
from ._errors import ProtocolError, lone_exception
from .wire import FrameParser

__all__ = ["PipelineCounters", "PipelineStatistics", "run_channel", "run_inline"]

#: Default capacity of the copy pipeline's channel, in batches (receive chunks).
DEFAULT_MAX_BATCHES = 16

#: While the channel is full, the reader goes on reading (to answer pings) into a
#: backlog of at most this many payload bytes, then lets TCP flow control take over.
DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024


@attrs.frozen
class PipelineStatistics:
    """A snapshot of a pipeline's counters.

    ``delivered`` counts messages handed to the handler; ``copies`` payloads
    copied into owned bytes (0 for the inline pipeline); ``batches`` channel
    sends; ``peak_queued`` the largest number of batches waiting in the
    channel; ``discarded`` messages read but never handed to the handler
    because the pipeline stopped first; ``stalls`` the times the reader found
    the channel full, and ``stall_seconds`` how long it waited in all.
    """

    delivered: int
    copies: int
    batches: int
    peak_queued: int
    discarded: int
    stalls: int
    stall_seconds: float


@attrs.define
class PipelineCounters:
    """Mutable counters a pipeline updates in place; pass one in to watch it run."""

    delivered: int = 0
    copies: int = 0
    batches: int = 0
    peak_queued: int = 0
    discarded: int = 0
    stalls: int = 0
    stall_seconds: float = 0.0

    def statistics(self) -> PipelineStatistics:
        return PipelineStatistics(
            self.delivered,
            self.copies,
            self.batches,
            self.peak_queued,
            self.discarded,
            self.stalls,
            self.stall_seconds,
        )


def handler_checks_utf8(handler: Callable[..., object]) -> bool:
    """Whether ``handler`` is known to raise on every payload that is not UTF-8.

    Only ``orjson.loads`` is: it validates its whole input before parsing
    (``tests/test_pipelines.py`` holds it to that, for overlong forms,
    surrogates, truncated sequences and stray bytes).
    """
    return handler is orjson.loads


async def run_inline(
    conn: Connection,
    handler: Callable[[memoryview], object],
    *,
    counters: PipelineCounters | None = None,
    trust_handler_utf8: bool | None = None,
) -> NoReturn:
    """Call ``handler(view)`` for each message, with the view lent from the receive buffer.

    ``handler`` must be synchronous and must not keep ``view`` (or a slice of
    it) after it returns: copy with ``bytes(view)`` whatever must outlive the
    call.  The view is released as soon as the handler returns or raises; a
    view kept anyway makes the next read raise :class:`~trio_feed.BorrowError`.
    The message opcode is in ``conn.parser.opcode``.

    Runs until the connection ends, raising
    :class:`~trio_feed.ConnectionClosed`; until the caller cancels it; or until
    ``handler`` raises, which propagates unchanged.  Pongs are sent by an
    ``answer_pings`` task beside the reads (S6).

    UTF-8: a text message that is not UTF-8 fails the connection with
    close code 1007 and raises :class:`~trio_feed.ProtocolError`.  By default
    the frame parser checks each text message before the handler sees it,
    unless the handler is ``orjson.loads``, which validates its input
    itself: then a message is checked only if the handler raised on it
    (:meth:`~trio_feed.wire.FrameParser.trust_handler_utf8`), so valid
    traffic is validated once, not twice.  ``trust_handler_utf8=True``
    claims the same of another handler (it must raise on invalid UTF-8);
    ``False`` keeps the frame parser's check whatever the handler.
    """
    _require_sync(handler)
    if counters is None:
        counters = PipelineCounters()
    if trust_handler_utf8 is None:
        trust_handler_utf8 = handler_checks_utf8(handler)
    if trust_handler_utf8:
        conn.parser.trust_handler_utf8()
    try:
        async with trio.open_nursery() as nursery:
            if not conn.answering_pings:
                nursery.start_soon(conn.answer_pings)  # S6: reads never wait for a pong
            await _deliver_inline(conn, handler, counters)
    except BaseExceptionGroup as group:
        raise _single_failure(group) from None
    raise AssertionError("unreachable: _deliver_inline only ends by raising")


async def _deliver_inline(
    conn: Connection, handler: Callable[[memoryview], object], counters: PipelineCounters
) -> NoReturn:
    parser = conn.parser
    deliver = parser.deliver
    try:
        while True:
            # deliver() counts in messages_lent every message it hands over,
            # the one whose handler raised included; nothing is counted per message here.
            lent = parser.messages_lent
            try:
                deliver(handler)
            finally:
                counters.delivered += parser.messages_lent - lent
            await conn.receive_more()
    except ProtocolError as exc:
        await conn.fail(exc)
        raise


async def run_channel(
    conn: Connection,
    handler: Callable[[bytes], object],
    *,
    max_batches: int = DEFAULT_MAX_BATCHES,
    counters: PipelineCounters | None = None,
    trust_handler_utf8: bool | None = None,
) -> NoReturn:
    """Copy messages into owned ``bytes`` in a reader task; handle them in a parser task.

    The two tasks share a memory channel holding at most ``max_batches``
    batches (one batch per receive chunk).  ``handler`` is synchronous and may
    keep ``payload``: it is owned.

    Runs until the connection ends (every message read before the end is
    delivered first, then :class:`~trio_feed.ConnectionClosed` or the
    :class:`~trio_feed.ProtocolError` is raised), until the caller cancels it,
    or until ``handler`` raises.  A single failure is raised as itself.

    UTF-8, as in :func:`run_inline`: with ``orjson.loads`` as the handler (or
    ``trust_handler_utf8=True``) the reader copies text messages unchecked,
    and a payload the handler raised on is checked in the parser task; if it
    is not UTF-8 the connection is failed with close code 1007 and
    :class:`~trio_feed.ProtocolError` raised.  (A binary message the handler
    raised on is judged the same way: Binance sends only text.)
    """
    _require_sync(handler)
    if counters is None:
        counters = PipelineCounters()
    if trust_handler_utf8 is None:
        trust_handler_utf8 = handler_checks_utf8(handler)
    if trust_handler_utf8:
        conn.parser.trust_handler_utf8()
    send_channel, receive_channel = trio.open_memory_channel[list[bytes]](max_batches)
    ended: list[Exception] = []
    try:
        async with trio.open_nursery() as nursery:
            if not conn.answering_pings:
                nursery.start_soon(conn.answer_pings)  # S6: reads never wait for a pong
            async with trio.open_nursery() as pair:
                pair.start_soon(read_batches, conn, send_channel, counters, ended)
                pair.start_soon(_parse_batches, receive_channel, handler, counters,
                                trust_handler_utf8)
            # answer_pings returns once the connection has closed, but the reader may
            # also end with it open (a BorrowError): the pong task ends with the pair.
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        failure = _single_failure(group)
        if isinstance(failure, ProtocolError) and conn.closed is None:
            await conn.fail(failure)  # found by the parser task: bad UTF-8 (see above)
        raise failure from None
    assert ended, "the reader task only returns once the connection has ended"
    raise ended[0]


async def read_batches(
    conn: Connection,
    send_channel: trio.MemorySendChannel[list[bytes]],
    counters: PipelineCounters,
    ended: list[Exception],
    *,
    max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
) -> None:
    """The reader task of the copy pipeline: one batch of owned payloads per receive chunk.

    A batch goes out with ``send_nowait``: no scheduling round trip while the
    consumer keeps up.  When the channel is full, the batch waits in
    ``send()`` while a helper task keeps reading (S6) into a backlog of
    at most ``max_backlog_bytes``; the wait is counted as a stall.

    When the connection ends, the exception is appended to ``ended`` instead
    of being raised, and the send side is closed, so the consumer delivers
    every batch already read before it learns of the end.  Cancellation is
    not caught.
    """
    parser = conn.parser
    copy_messages = parser.copy_messages
    async with send_channel:
        try:
            while True:
                # The messages before a violation come back first; the violation
                # is then in parser.error (raised below, after they are sent).
                batch = copy_messages()
                if batch:
                    counters.copies += len(batch)
                    try:
                        send_channel.send_nowait(batch)
                        counters.batches += 1
                    except trio.BrokenResourceError:
                        # The parser task has ended (its handler raised) and the nursery
                        # is about to cancel this task: the batch will never be handled.
                        counters.discarded += len(batch)
                        return
                    except trio.WouldBlock:
                        failure = await _send_while_reading(
                            conn, send_channel, batch, counters, max_backlog_bytes
                        )
                        if failure is not None:
                            raise failure from None
                    queued = send_channel.statistics().current_buffer_used
                    if queued > counters.peak_queued:
                        counters.peak_queued = queued
                if parser.error is not None:
                    raise parser.error
                await conn.receive_more()
        except ProtocolError as exc:
            await conn.fail(exc)
            ended.append(exc)
        except Exception as exc:
            ended.append(exc)


async def _send_while_reading(
    conn: Connection,
    send_channel: trio.MemorySendChannel[list[bytes]],
    batch: list[bytes],
    counters: PipelineCounters,
    max_backlog_bytes: int,
) -> Exception | None:
    """Wait for channel space without going deaf: S6 with a slow consumer.

    A helper task goes on reading, so pings are answered, copying data
    messages into a backlog.  Once the backlog holds ``max_backlog_bytes`` it
    stops reading (TCP flow control then slows the server) until the send
    completes.  Returns the exception that ended the connection meanwhile,
    if any, after every message read before it has been sent.
    """
    backlog: list[bytes] = []
    failures: list[Exception] = []
    counters.stalls += 1
    started = trio.current_time()
    batch_sent = backlog_sent = False
    try:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _keep_reading, conn, backlog, max_backlog_bytes, failures, counters
                )
                await send_channel.send(batch)
                batch_sent = True
                counters.batches += 1
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _single_failure(group) from None
        finally:
            counters.stall_seconds += trio.current_time() - started
        if backlog:
            await send_channel.send(backlog)
            counters.batches += 1
        backlog_sent = True
    finally:
        # Counted only here, once the helper task has ended: it may still have
        # added to the backlog after the send failed, until it was cancelled.
        if not batch_sent:
            counters.discarded += len(batch)
        if not backlog_sent:
            counters.discarded += len(backlog)
    return failures[0] if failures else None


async def _keep_reading(
    conn: Connection,
    backlog: list[bytes],
    limit: int,
    failures: list[Exception],
    counters: PipelineCounters,
) -> None:
    size = sum(map(len, backlog))
    parser = conn.parser
    try:
        while size < limit:
            await conn.receive_more()  # answers queued pings before it reads
            payloads = parser.copy_messages()
            backlog += payloads
            counters.copies += len(payloads)
            size += sum(map(len, payloads))
            if parser.error is not None:
                raise parser.error  # after the messages that preceded it
    except ProtocolError as exc:
        await conn.fail(exc)
        failures.append(exc)
        return
    except Exception as exc:
        failures.append(exc)
        return
    await trio.sleep_forever()  # the backlog is full: stop reading until the send completes


async def _parse_batches(
    receive_channel: trio.MemoryReceiveChannel[list[bytes]],
    handler: Callable[[bytes], object],
    counters: PipelineCounters,
    recheck_utf8: bool = False,
) -> None:
    batch: list[bytes] = []
    handed = 0
    async with receive_channel:
        try:
            async for batch in receive_channel:
                handed = 0
                for payload in batch:
                    handed += 1
                    try:
                        handler(payload)
                    except Exception:
                        if recheck_utf8:
                            not_utf8 = FrameParser.utf8_error(payload)
                            if not_utf8 is not None:
                                raise not_utf8 from None
                        raise
                counters.delivered += handed
                batch, handed = [], 0
        finally:
            counters.delivered += handed
            counters.discarded += len(batch) - handed + drain(receive_channel)


def _single_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one failure in ``group``, as itself, even if a cancellation came with it.

    When the handler (or the connection) fails at the moment an outer scope
    is cancelled, the nursery raises both.  The ``Cancelled`` can be
    dropped: trio cancellation is level-triggered, so the caller's next
    checkpoint raises it again, while the failure would otherwise reach the
    caller inside an ``ExceptionGroup``.  Otherwise as ``lone_exception``.
    """
    failures = [leaf for leaf in _leaves(group) if not isinstance(leaf, trio.Cancelled)]
    return failures[0] if len(failures) == 1 else lone_exception(group)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _require_sync(handler: Callable[..., object]) -> None:
    """S2: a handler is called while a view is lent, so it must not be able to await."""
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004
    ):
        raise TypeError(
            f"{handler!r} is an async function; pipeline handlers must be synchronous, "
            "because no await may happen while a view is lent"
        )


def drain(receive_channel: trio.MemoryReceiveChannel[list[bytes]]) -> int:
    """Empty the channel without waiting; return how many messages it held."""
    lost = 0
    while True:
        try:
            lost += len(receive_channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return lost
