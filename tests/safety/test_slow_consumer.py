"""S6: a consumer that falls behind does not make the copy pipeline's reader deaf.

These drive the reader task (``read_batches``) with a channel that nobody
empties, the slowest consumer there is, and watch the server's side.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_feed import PipelineCounters
from trio_feed._pipelines import read_batches
from trio_feed.wire import Opcode

from ..scripted_server import ServerSide
from ..wire.server_frames import server_frame
from .helpers import memory_connection


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_full_channel_does_not_stop_the_pongs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    conn, server_stream = memory_connection()
    server = ServerSide(server_stream)
    send_channel, receive_channel = trio.open_memory_channel[list[bytes]](0)
    counters = PipelineCounters()
    ended: list[Exception] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_batches, conn, send_channel, counters, ended)
            await server_stream.send_all(server_frame(Opcode.TEXT, b"first"))
            await trio.sleep(1)  # the reader's batch now waits: nobody receives
            await server_stream.send_all(server_frame(Opcode.PING, b"are you there"))
            assert await server.read_frame() == (Opcode.PONG, b"are you there")
            await server_stream.send_all(server_frame(Opcode.TEXT, b"second"))
            await trio.sleep(1)
            assert counters.stalls == 1 and counters.batches == 0
            # The consumer wakes up: nothing was lost, nothing reordered.
            assert await receive_channel.receive() == [b"first"]
            assert await receive_channel.receive() == [b"second"]
            assert conn.statistics().pongs_sent == 1
            nursery.cancel_scope.cancel()
    assert counters.stall_seconds >= 2


async def test_the_backlog_stops_reading_at_max_backlog_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    conn, server = memory_connection()
    send_channel, receive_channel = trio.open_memory_channel[list[bytes]](0)
    counters = PipelineCounters()
    ended: list[Exception] = []
    payloads = [b"%02d" % i + b"x" * 58 for i in range(10)]  # 60 bytes each
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: read_batches(conn, send_channel, counters, ended, max_backlog_bytes=100)
            )
            for payload in payloads:
                await server.send_all(server_frame(Opcode.TEXT, payload))
                await trio.sleep(1)  # one receive chunk each
            # The first batch waits for the consumer; the helper read two more
            # (120 bytes >= 100) and then stopped, leaving the rest unread.
            assert counters.copies == 3
            assert conn.statistics().chunks_received == 3
            got: list[bytes] = []
            while len(got) < len(payloads):
                got += await receive_channel.receive()
            assert got == payloads  # in order, nothing lost, once the consumer caught up
            nursery.cancel_scope.cancel()
    assert ended == []
