"""S1: a lent view never outlives its frame, whichever way its use ends."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing

from trio_feed import BorrowError, run_inline
from trio_feed.wire import FrameParser, Opcode

from ..wire.server_frames import server_frame
from .helpers import memory_connection


def test_a_kept_reassembled_message_is_caught_within_the_chunk() -> None:
    """The reassembly buffer is reused by the next fragmented message of the same chunk.

    No ``receive_data`` comes in between, so the check must be the one that
    empties the reassembly buffer when a new fragmented message starts.
    """
    parser = FrameParser()
    parser.receive_data(
        server_frame(Opcode.TEXT, b"frag", fin=False)
        + server_frame(Opcode.CONTINUATION, b"ment")
        + server_frame(Opcode.TEXT, b"sec", fin=False)
        + server_frame(Opcode.CONTINUATION, b"ond")
    )
    escaped: list[memoryview] = []
    with pytest.raises(BorrowError, match="reassembled fragmented message"):
        for view in parser.messages():
            escaped.append(view[:])  # a slice survives its parent's release
            view.release()
    assert bytes(escaped[0]) == b"fragment"  # not overwritten by "second"
    escaped.clear()
    gc.collect()
    assert [bytes(view) for view in parser.messages()] == [b"second"]  # nothing lost


async def test_a_slice_kept_by_an_inline_handler_ends_the_pipeline_before_the_next_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The pipeline stops at once, not at the next chunk, which may never come.

    The server sends one message and then nothing: a check made only when
    the next chunk is stored would leave the pipeline waiting on the socket
    with the slice still pointing into the receive buffer.
    """
    conn, server = memory_connection()
    kept: list[memoryview] = []
    with trio.fail_after(30):
        await server.send_all(server_frame(Opcode.TEXT, b"kept past its handler"))
        with pytest.raises(BorrowError, match=r"message #1 \(text, 21 bytes"):
            await run_inline(conn, lambda view: kept.append(view[5:]))
    assert bytes(kept[0]) == b"past its handler"
    assert conn.statistics().chunks_received == 1  # no second read was attempted


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)
