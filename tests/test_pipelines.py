"""The two pipelines: same messages, clean cancellation, unwrapped errors, counted losses."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, NoReturn

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_feed import (
    BorrowError,
    Connection,
    ConnectionClosed,
    PipelineCounters,
    ProtocolError,
    run_channel,
    run_inline,
)
from trio_feed._pipelines import read_batches
from trio_feed.wire import FrameParser, Opcode

from .scripted_server import ServerSide
from .wire.server_frames import server_frame

CLOSE_1000 = server_frame(Opcode.CLOSE, b"\x03\xe8")


def memory_connection(**parser_options: object) -> tuple[Connection, trio.abc.Stream]:
    client, server = trio.testing.memory_stream_pair()
    conn = Connection(
        client, "memory://", FrameParser(**parser_options),  # type: ignore[arg-type]
        receive_size=65536, close_timeout=1.0,
    )
    return conn, server


async def play(server: trio.abc.Stream, data: bytes, cuts: list[int], pause: float = 0,
               close: bool = False) -> None:
    """Send ``data`` cut at ``cuts``, pausing between pieces; end the stream if ``close``."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    for a, b in itertools.pairwise(bounds):
        await server.send_all(data[a:b])
        await trio.sleep(pause)
    if close:
        await server.aclose()  # so the client's closing handshake ends at once


async def collect(mode: str, data: bytes, cuts: list[int]) -> tuple[list[bytes], PipelineCounters]:
    conn, server = memory_connection()
    got: list[bytes] = []
    counters = PipelineCounters()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(play, server, data, cuts, 0, True)
        with pytest.raises(ConnectionClosed) as info:
            if mode == "inline":
                await run_inline(conn, lambda view: got.append(bytes(view)), counters=counters)
            else:
                await run_channel(conn, got.append, max_batches=2, counters=counters)
        assert info.value.code == 1000
        nursery.cancel_scope.cancel()
    conn.parser.check_borrows()
    return got, counters


@settings(max_examples=30, deadline=None)
@given(
    messages=st.lists(st.binary(max_size=300).map(lambda b: b.hex().encode()), max_size=30),
    cuts=st.lists(st.integers(0, 20000), max_size=15),
)
async def test_both_pipelines_deliver_identical_sequences(messages: list[bytes],
                                                          cuts: list[int]) -> None:
    data = b"".join(server_frame(Opcode.TEXT, m) for m in messages) + CLOSE_1000
    with trio.fail_after(10):
        inline, inline_counters = await collect("inline", data, cuts)
        channel, channel_counters = await collect("channel", data, cuts)
    assert inline == messages
    assert channel == messages
    assert inline_counters.delivered == channel_counters.delivered == len(messages)
    assert inline_counters.copies == 0
    assert channel_counters.copies == len(messages)
    assert channel_counters.discarded == 0


async def test_channel_pipeline_sends_one_batch_per_chunk() -> None:
    data = b"".join(server_frame(Opcode.TEXT, b"m%d" % i) for i in range(500)) + CLOSE_1000
    with trio.fail_after(5):
        got, counters = await collect("channel", data, [])
    assert len(got) == 500
    assert counters.batches <= 2, "one chunk must travel as one batch, not message by message"


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_handler_failure_arrives_as_itself(mode: str) -> None:
    conn, server = memory_connection()
    data = b"".join(server_frame(Opcode.TEXT, b"m%d" % i) for i in range(10))
    counters = PipelineCounters()

    def handler(payload: object) -> None:
        if bytes(payload) == b"m3":  # type: ignore[call-overload]
            raise KeyError("boom")

    with trio.fail_after(5):
        await server.send_all(data)
        with pytest.raises(KeyError, match="boom"):  # not an ExceptionGroup
            if mode == "inline":
                await run_inline(conn, handler, counters=counters)
            else:
                await run_channel(conn, handler, counters=counters)
    conn.parser.check_borrows()
    assert counters.delivered == 4  # m0..m3 reached the handler
    if mode == "channel":
        assert counters.delivered + counters.discarded == counters.copies == 10


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_protocol_error_arrives_as_itself_after_earlier_messages(mode: str) -> None:
    conn, server = memory_connection()
    got: list[bytes] = []
    counters = PipelineCounters()
    data = (server_frame(Opcode.TEXT, b"ok") + server_frame(Opcode.TEXT, b"ok too")
            + server_frame(Opcode.TEXT, b"a", rsv=4) + server_frame(Opcode.TEXT, b"never"))
    with trio.fail_after(5):
        await server.send_all(data)
        await server.aclose()  # so that the client's closing handshake ends at once
        with pytest.raises(ProtocolError) as info:
            if mode == "inline":
                await run_inline(conn, lambda view: got.append(bytes(view)), counters=counters)
            else:
                await run_channel(conn, got.append, counters=counters)
    assert info.value.close_code == 1002
    assert got == [b"ok", b"ok too"]
    assert counters.delivered == 2 and counters.discarded == 0
    assert conn.statistics().messages_received == 2
    assert conn.closed is not None and conn.closed.code == 1002
    conn.parser.check_borrows()


async def test_reader_that_keeps_reading_while_the_channel_is_full_loses_nothing() -> None:
    """Rule 6's helper task copies with copy_messages(); a violation it meets ends it exactly."""
    conn, server = memory_connection()
    send_channel, receive_channel = trio.open_memory_channel[list[bytes]](1)
    send_channel.send_nowait([b"queued"])  # the channel is full before the reader starts
    counters = PipelineCounters()
    ended: list[Exception] = []
    first = b"".join(server_frame(Opcode.TEXT, b"m%d" % i) for i in range(3))
    second = (server_frame(Opcode.TEXT, b"m3") + server_frame(Opcode.PING, b"ping")
              + server_frame(Opcode.TEXT, b"m4") + server_frame(Opcode.TEXT, b"a", rsv=4)
              + server_frame(Opcode.TEXT, b"never"))
    batches: list[list[bytes]] = []
    with trio.fail_after(5):
        await server.send_all(first)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_batches, conn, send_channel, counters, ended)
            await trio.testing.wait_all_tasks_blocked()
            assert counters.stalls == 1  # m0..m2 wait for space...
            await server.send_all(second)  # ...while the helper task reads on
            await trio.testing.wait_all_tasks_blocked()
            # The helper stopped at the violation at once: Close 1002, no further read
            # (so not even the pong; the ping came after m3, in the chunk with the fault).
            frame = await ServerSide(server).read_frame()
            assert frame is not None and frame[0] == Opcode.CLOSE and frame[1][:2] == b"\x03\xea"
            await server.aclose()
            async for batch in receive_channel:
                batches.append(batch)
    assert batches == [[b"queued"], [b"m0", b"m1", b"m2"], [b"m3", b"m4"]]
    assert len(ended) == 1 and isinstance(ended[0], ProtocolError)
    assert ended[0].close_code == 1002
    assert counters.copies == 5 and counters.batches == 2
    assert conn.statistics().messages_received == 5
    assert conn.statistics().pings_received == 1


async def test_inline_handler_that_stashes_a_slice_gets_borrow_error() -> None:
    conn, server = memory_connection()
    stash: list[memoryview] = []
    with trio.fail_after(5):
        await server.send_all(server_frame(Opcode.TEXT, b"first"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(play, server, server_frame(Opcode.TEXT, b"second"), [], 0)
            with pytest.raises(BorrowError, match="message #1"):
                await run_inline(conn, lambda view: stash.append(view[1:]))
    assert bytes(stash[0]) == b"irst"  # never overwritten by "second"


async def test_inline_handler_that_stashes_the_view_reads_nothing_later() -> None:
    conn, server = memory_connection()
    stash: list[memoryview] = []
    with trio.fail_after(5):
        await server.send_all(server_frame(Opcode.TEXT, b"first") + CLOSE_1000)
        with pytest.raises(ConnectionClosed):
            await run_inline(conn, stash.append)
    with pytest.raises(ValueError, match="released"):
        bytes(stash[0])


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_cancellation_at_every_point_leaves_no_view_and_no_task(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancel at successive moments while chunks arrive one simulated second apart."""
    messages = [b"message-%d" % i for i in range(12)]
    data = b"".join(server_frame(Opcode.TEXT, m) for m in messages)
    cuts = list(range(7, len(data), 23))  # chunk boundaries fall inside frames
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    for step in range(0, 2 * len(cuts) + 4):
        conn, server = memory_connection()
        got: list[bytes] = []
        counters = PipelineCounters()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(play, server, data, cuts, 1.0)
            with trio.move_on_after(step * 0.5 + 0.25):
                if mode == "inline":
                    await run_inline(conn, lambda v, got=got: got.append(bytes(v)),
                                     counters=counters)
                else:
                    await run_channel(conn, got.append, max_batches=1, counters=counters)
            nursery.cancel_scope.cancel()
        conn.parser.check_borrows()  # raises if any view is still lent
        assert got == messages[: len(got)]  # an in-order prefix, nothing duplicated
        assert counters.delivered == len(got)
        if mode == "channel":
            assert counters.delivered + counters.discarded == counters.copies
        assert trio.lowlevel.current_statistics().tasks_living == tasks_before


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_async_handlers_are_refused() -> None:
    conn, _server = memory_connection()

    async def handler(view: memoryview) -> None:
        pass

    with trio.fail_after(5):
        with pytest.raises(TypeError, match="must be synchronous"):
            await run_inline(conn, handler)
        with pytest.raises(TypeError, match="must be synchronous"):
            await run_channel(conn, handler)  # type: ignore[arg-type]


async def test_receive_more_refuses_to_await_while_a_view_is_lent() -> None:
    conn, server = memory_connection()
    with trio.fail_after(5):
        await server.send_all(server_frame(Opcode.TEXT, b"lent"))
        await conn.receive_more()
        view = conn.parser.next_message()
        assert view is not None
        with pytest.raises(BorrowError, match="message #1"):
            await conn.receive_more()
        view.release()
        await server.send_all(server_frame(Opcode.TEXT, b"next"))
        await conn.receive_more()
        assert bytes(conn.parser.next_message() or b"") == b"next"


# -- every message delivered or counted, over a real socket pair ---------------------------

MODES = ["inline", "channel"]
MANY = [b"message-%02d" % i for i in range(30)]
MANY_DATA = b"".join(server_frame(Opcode.TEXT, m) for m in MANY) + CLOSE_1000


def socket_connection(receive_size: int, **parser_options: object
                      ) -> tuple[Connection, trio.SocketStream]:
    """A Connection over one end of a real socket pair; the other end plays the server."""
    client, server = trio.socket.socketpair()
    conn = Connection(
        trio.SocketStream(client), "socketpair://",
        FrameParser(**parser_options),  # type: ignore[arg-type]
        receive_size=receive_size, close_timeout=1.0,
    )
    return conn, trio.SocketStream(server)


async def run_pipeline(mode: str, conn: Connection, handler: Callable[[Any], object],
                       counters: PipelineCounters, max_batches: int = 1) -> NoReturn:
    if mode == "inline":
        await run_inline(conn, handler, counters=counters)
    await run_channel(conn, handler, max_batches=max_batches, counters=counters)


def assert_every_message_accounted_for(mode: str, counters: PipelineCounters) -> None:
    """delivered + discarded == copies: nothing the reader copied is lost uncounted."""
    if mode == "channel":
        assert counters.delivered + counters.discarded == counters.copies, counters
    else:
        assert counters.copies == counters.discarded == 0


@pytest.mark.parametrize("max_batches", [0, 1, 4])
@pytest.mark.parametrize("mode", MODES)
async def test_a_handler_failure_at_every_message_reaches_the_caller_and_loses_nothing(
    mode: str, max_batches: int
) -> None:
    """The handler raises at message k, for every k; chunks of ~3 messages keep arriving."""
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    stalls = 0
    for index in range(len(MANY)):
        conn, server = socket_connection(receive_size=40)
        got: list[bytes] = []
        failure = LookupError(f"the handler's own, at {index}")

        def handler(payload: bytes | memoryview, got: list[bytes] = got,
                    index: int = index, failure: Exception = failure) -> None:
            got.append(bytes(payload))
            if len(got) == index + 1:
                raise failure

        counters = PipelineCounters()
        with trio.fail_after(5):
            await server.send_all(MANY_DATA)  # all of it is waiting: the reader never blocks
            with pytest.raises(LookupError) as info:
                await run_pipeline(mode, conn, handler, counters, max_batches)
            assert info.value is failure  # itself, not an ExceptionGroup, not BrokenResourceError
            assert got == MANY[: index + 1]
            assert counters.delivered == index + 1
            assert_every_message_accounted_for(mode, counters)
            conn.parser.check_borrows()
            await server.aclose()  # so that the closing handshake ends at once
            await conn.aclose()
        assert trio.lowlevel.current_statistics().tasks_living == tasks_before
        stalls += counters.stalls
    if mode == "channel" and max_batches == 0:
        assert stalls > 0  # the batch in hand during a stall was among those counted


class CancelAtStep(trio.abc.Instrument):
    """Cancel ``scope`` just before the ``step``-th task step of the run from now on."""

    def __init__(self, step: int, scope: trio.CancelScope) -> None:
        self.step = step
        self.scope = scope
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.steps == self.step:
            self.scope.cancel()


# Payloads of the copy pipeline are owned bytes: there is no view to keep, so no "stashing".
@pytest.mark.parametrize(("mode", "stash"), [("inline", False), ("channel", False),
                                             ("inline", True)],
                         ids=["inline-clean", "channel-clean", "inline-stashing"])
async def test_cancellation_at_every_task_step_leaves_no_view_no_task_and_counts_all(
    mode: str, stash: bool
) -> None:
    """Cancel before each successive task step until the pipeline runs to its end.

    Every time: nothing is lost uncounted, nothing delivered twice, no task is
    left, and ``check_borrows()`` tells the truth both ways: it passes when the
    handler kept nothing, and raises ``BorrowError`` when it kept a slice,
    whatever moment the pipeline ended at.
    """
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    for step in itertools.count(1):
        conn, server = socket_connection(receive_size=40)
        got: list[bytes] = []
        kept: list[memoryview] = []

        def handler(payload: Any, got: list[bytes] = got, kept: list[memoryview] = kept
                    ) -> None:
            got.append(bytes(payload))
            if stash:
                kept.append(payload[1:])

        counters = PipelineCounters()
        scope = trio.CancelScope()
        instrument = CancelAtStep(step, scope)
        with trio.fail_after(5):
            await server.send_all(MANY_DATA)
            await server.aclose()  # the client reads everything, then EOF
            trio.lowlevel.add_instrument(instrument)
            try:
                with scope:
                    try:
                        await run_pipeline(mode, conn, handler, counters)
                    except (ConnectionClosed, BorrowError):
                        pass
            finally:
                trio.lowlevel.remove_instrument(instrument)
            assert got == MANY[: len(got)]  # an in-order prefix, nothing twice
            assert counters.delivered == len(got)
            assert_every_message_accounted_for(mode, counters)
            if kept:
                with pytest.raises(BorrowError, match="message #"):
                    conn.parser.check_borrows()
                kept.clear()
            conn.parser.check_borrows()
            await conn.aclose()
        assert trio.lowlevel.current_statistics().tasks_living == tasks_before
        if instrument.steps < step:  # it ran to its end before the cancellation came
            assert stash or got == MANY
            break
    assert stash or step > 10  # the run had many task steps to cancel at


# -- invalid UTF-8: close 1007 after the messages before it ---------------------------------

async def send_then_read_until_close(
    server: trio.SocketStream, data: bytes, frames: list[tuple[int, bytes]]
) -> None:
    """Play the server: send ``data``, then collect the client's frames up to its Close."""
    await server.send_all(data)
    peer = ServerSide(server)
    while (frame := await peer.read_frame()) is not None:
        frames.append(frame)
        if frame[0] == Opcode.CLOSE:
            break
    await server.aclose()


UTF8_FAULTS = {
    "one frame": server_frame(Opcode.TEXT, b"ok \xff"),
    "across fragments": server_frame(Opcode.TEXT, b"ok \xf4", fin=False)
    + server_frame(Opcode.CONTINUATION, b"\x90\x80\x80"),
    "64-bit length": server_frame(Opcode.TEXT, b"a" * 70000 + b"\xc3("),
}


@pytest.mark.parametrize("fault", UTF8_FAULTS)
@pytest.mark.parametrize("mode", MODES)
async def test_invalid_utf8_closes_1007_after_delivering_and_counting_what_preceded_it(
    mode: str, fault: str
) -> None:
    conn, server = socket_connection(receive_size=256 * 1024)
    before = [b"m%d" % i for i in range(5)]
    data = (b"".join(server_frame(Opcode.TEXT, m) for m in before) + UTF8_FAULTS[fault]
            + server_frame(Opcode.TEXT, b"never"))
    got: list[bytes] = []
    counters = PipelineCounters()
    frames: list[tuple[int, bytes]] = []

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_read_until_close, server, data, frames)
            with pytest.raises(ProtocolError) as info:
                await run_pipeline(mode, conn, lambda p: got.append(bytes(p)), counters)
    assert type(info.value) is ProtocolError and info.value.close_code == 1007
    assert got == before
    assert counters.delivered == len(before) and counters.discarded == 0
    assert_every_message_accounted_for(mode, counters)
    assert conn.statistics().messages_received == len(before)
    assert frames[-1][0] == Opcode.CLOSE and frames[-1][1][:2] == (1007).to_bytes(2, "big")
    assert conn.closed is not None and conn.closed.code == 1007


# -- orjson validates UTF-8 itself: run_inline trusts it, and still closes with 1007 ---------

NOT_UTF8 = {
    "stray byte": b'{"a":"ok \xff"}',
    "truncated sequence": b'[1,"\xe2\x82"]',
    "overlong form": b'"\xc0\xaf"',
    "surrogate": b'"\xed\xa0\x80"',
    "above U+10FFFF": b'"\xf4\x90\x80\x80"',
}


@pytest.mark.parametrize("payload", NOT_UTF8.values(), ids=list(NOT_UTF8))
def test_orjson_refuses_every_form_of_invalid_utf8(payload: bytes) -> None:
    """What lets run_inline skip the frame parser's check for orjson.loads."""
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(payload)


JSON_UTF8_FAULTS = {
    "one frame": server_frame(Opcode.TEXT, b'"ok \xff"'),
    "across fragments": server_frame(Opcode.TEXT, b'"ok \xf4', fin=False)
    + server_frame(Opcode.CONTINUATION, b'\x90\x80\x80"'),
    "64-bit length": server_frame(Opcode.TEXT, b'"' + b"a" * 70000 + b'\xc3("'),
}


@pytest.mark.parametrize("fault", JSON_UTF8_FAULTS)
@pytest.mark.parametrize("mode", MODES)
async def test_orjson_validates_once_and_still_closes_1007(mode: str, fault: str) -> None:
    """A pipeline trusting orjson: no check before the handler, the same 1007 after."""
    conn, server = socket_connection(receive_size=256 * 1024)
    before = [b'{"m":%d}' % i for i in range(5)]
    data = (b"".join(server_frame(Opcode.TEXT, m) for m in before) + JSON_UTF8_FAULTS[fault]
            + server_frame(Opcode.TEXT, b'"never"'))
    got: list[object] = []
    counters = PipelineCounters()
    frames: list[tuple[int, bytes]] = []
    lent: list[memoryview] = []

    def handler(view: memoryview) -> None:
        lent.append(view)  # inline: kept only to count, released by the parser meanwhile
        got.append(orjson.loads(view))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_read_until_close, server, data, frames)
            with pytest.raises(ProtocolError) as info:
                if mode == "inline":
                    await run_inline(conn, handler, counters=counters, trust_handler_utf8=True)
                await run_channel(conn, handler, counters=counters, trust_handler_utf8=True)
    assert type(info.value) is ProtocolError and info.value.close_code == 1007
    assert got == [{"m": i} for i in range(5)]
    # The bad message was handed to the handler (that is the point: one check, orjson's),
    # and it is counted as delivered; nothing after it was.
    assert counters.delivered == len(before) + 1
    assert len(lent) == len(before) + 1
    assert_every_message_accounted_for(mode, counters)
    assert frames[-1][0] == Opcode.CLOSE and frames[-1][1][:2] == (1007).to_bytes(2, "big")
    assert conn.closed is not None and conn.closed.code == 1007


@pytest.mark.parametrize("mode", MODES)
async def test_pipelines_trust_only_orjson_loads_by_default(mode: str) -> None:
    """The frame parser's check stays on for any other handler; orjson.loads skips it."""
    for handler, trusted in ((orjson.loads, True), (lambda view: None, False)):
        conn, server = socket_connection(receive_size=4096)
        await server.send_all(server_frame(Opcode.TEXT, b"[1]") + CLOSE_1000)
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await run_pipeline(mode, conn, handler, PipelineCounters())
        assert conn.parser._recheck_utf8 is trusted
        await server.aclose()


# -- a slow consumer: the reader keeps reading, within bounds, and says so -----------------


def full_channel() -> tuple[trio.MemorySendChannel[list[bytes]],
                            trio.MemoryReceiveChannel[list[bytes]]]:
    send_channel, receive_channel = trio.open_memory_channel[list[bytes]](1)
    send_channel.send_nowait([b"queued"])  # full before the reader starts
    return send_channel, receive_channel


async def test_a_full_channel_does_not_stop_the_reader_answering_pings() -> None:
    conn, server = socket_connection(receive_size=65536)
    peer = ServerSide(server)
    send_channel, receive_channel = full_channel()
    counters = PipelineCounters()
    ended: list[Exception] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_batches, conn, send_channel, counters, ended)
            await server.send_all(server_frame(Opcode.TEXT, b"m0"))
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert counters.stalls == 1  # m0 waits for space in the channel
            for i in range(5):
                await server.send_all(server_frame(Opcode.PING, b"ping-%d" % i)
                                      + server_frame(Opcode.TEXT, b"more-%d" % i))
                assert await peer.read_frame() == (Opcode.PONG, b"ping-%d" % i)
            # Every pong came while the consumer had not taken a single batch.
            assert receive_channel.statistics().current_buffer_used == 1
            assert counters.stalls == 1
            await trio.sleep(0.1)
            batches = [receive_channel.receive_nowait()]
            await server.send_all(CLOSE_1000)
            await server.aclose()
            async for batch in receive_channel:
                batches.append(batch)
    assert batches[:2] == [[b"queued"], [b"m0"]]  # m0 was the batch that waited
    assert [m for batch in batches[2:] for m in batch] == [b"more-%d" % i for i in range(5)]
    assert counters.stalls == 1 and counters.stall_seconds >= 0.1
    assert counters.copies == 6 and counters.discarded == 0
    assert len(ended) == 1 and isinstance(ended[0], ConnectionClosed)
    assert conn.statistics().pongs_sent == 5


async def test_the_backlog_during_a_stall_is_bounded_by_max_backlog_bytes() -> None:
    receive_size = 512
    conn, server = socket_connection(receive_size=receive_size)
    send_channel, receive_channel = full_channel()
    counters = PipelineCounters()
    ended: list[Exception] = []
    first = server_frame(Opcode.TEXT, b"first")
    messages = [b"%03d" % i + b"x" * 97 for i in range(200)]  # 20 KB of payload
    rest = b"".join(server_frame(Opcode.TEXT, m) for m in messages)
    limit = 2000
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(read_batches, conn, send_channel, counters,
                                                 ended, max_backlog_bytes=limit))
            await server.send_all(first)
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert counters.stalls == 1
            await server.send_all(rest)
            await trio.testing.wait_all_tasks_blocked(0.2)
            read = conn.statistics().bytes_received
            # The helper stopped once the backlog held `limit` payload bytes: at most
            # one more read's worth came in, and the rest stays with TCP.
            assert read <= len(first) + limit + receive_size
            assert read < len(first) + len(rest)
            got: list[bytes] = []
            await server.send_all(CLOSE_1000)
            await server.aclose()
            async for batch in receive_channel:
                got += batch
    assert got == [b"queued", b"first", *messages]  # nothing lost once the consumer caught up
    assert counters.copies == 1 + len(messages) and counters.discarded == 0
    assert counters.stalls >= 1 and counters.stall_seconds > 0
    assert len(ended) == 1 and isinstance(ended[0], ConnectionClosed)


async def test_a_callable_with_an_async_call_method_is_refused() -> None:
    class Handler:
        async def __call__(self, view: memoryview) -> None:
            pass

    conn, _server = memory_connection()
    with trio.fail_after(5):
        with pytest.raises(TypeError, match="must be synchronous"):
            await run_inline(conn, Handler())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="must be synchronous"):
            await run_channel(conn, Handler())  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
async def test_a_reader_that_ends_without_closing_the_connection_ends_the_pipeline(
    mode: str,
) -> None:
    """The pong task never outlives the pipeline, even when the connection stays open."""
    conn, server = socket_connection(receive_size=65536)
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    with trio.fail_after(5):
        await server.send_all(server_frame(Opcode.TEXT, b"lent") + server_frame(Opcode.PING))
        await conn.receive_more()
        view = conn.parser.next_message()  # the caller itself keeps a view lent
        assert view is not None
        with pytest.raises(BorrowError, match="message #1"):
            await run_pipeline(mode, conn, lambda payload: None, PipelineCounters())
        assert conn.closed is None and not conn.answering_pings
        view.release()
        await server.aclose()
        await conn.aclose()
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before
