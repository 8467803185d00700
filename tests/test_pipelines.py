"""The two pipelines: same messages, clean cancellation, unwrapped errors, counted losses."""

from __future__ import annotations

import itertools

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
