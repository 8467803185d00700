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


def test_deliver_releases_the_views_of_binary_long_and_reassembled_messages() -> None:
    """The views ``deliver`` lends off its hot path (not short text) are released too."""
    parser = FrameParser()
    parser.receive_data(
        server_frame(Opcode.BINARY, b"\x00binary")
        + server_frame(Opcode.TEXT, b"long " * 40)  # 200 bytes: a 16-bit length
        + server_frame(Opcode.TEXT, b"frag", fin=False)
        + server_frame(Opcode.CONTINUATION, b"ment")
    )
    kept: list[memoryview] = []
    assert parser.deliver(kept.append) == 3
    assert len(kept) == 3
    for view in kept:
        with pytest.raises(ValueError, match="released"):
            bytes(view)
    parser.check_borrows()


def test_a_handler_exception_kept_by_the_caller_pins_no_buffer() -> None:
    """A caller that keeps the exception keeps its traceback, and with it ``deliver``'s frame.

    The chunk's view must be released explicitly on the way out, not left to
    the frame's death, or the buffer stays exported for as long as the
    exception is kept.
    """
    parser = FrameParser()
    parser.receive_data(server_frame(Opcode.TEXT, b"m0") + server_frame(Opcode.TEXT, b"m1"))

    def handler(view: memoryview) -> None:
        raise KeyError(bytes(view))

    with pytest.raises(KeyError) as info:
        parser.deliver(handler)
    assert info.value.__traceback__ is not None  # the frames are still referenced
    parser.check_borrows()  # nothing lent while the exception is kept
    parser.receive_data(server_frame(Opcode.TEXT, b"m2"))  # and the buffer can be reused
    got: list[bytes] = []
    parser.deliver(lambda view: got.append(bytes(view)))
    assert got == [b"m1", b"m2"]


def test_a_slice_is_caught_before_compaction_moves_a_partial_frame() -> None:
    """Compaction moves the unconsumed tail to the front: only a resize may do that.

    With a partial frame left after the message, an in-place move would
    write the tail over the message's bytes before any check could fail.
    """
    parser = FrameParser()
    tail = server_frame(Opcode.TEXT, b"the next message, not yet complete")
    parser.receive_data(server_frame(Opcode.TEXT, b"first message") + tail[:20])
    escaped: list[memoryview] = []
    for view in parser.messages():
        escaped.append(view[6:])  # a slice survives its parent's release
        view.release()
    with pytest.raises(BorrowError, match=r"message #1 \(text, 13 bytes"):
        parser.receive_data(tail[20:])
    assert bytes(escaped[0]) == b"message"  # not a byte was overwritten
    escaped.clear()
    gc.collect()
    parser.receive_data(tail[20:])
    assert [bytes(view) for view in parser.messages()] == [b"the next message, not yet complete"]
