"""The sans-I/O frame parser: same frames whatever the splits, every rejection, borrow safety."""

from __future__ import annotations

import gc
import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_feed import BorrowError, MessageTooBig, ProtocolError
from trio_feed.wire import POISON, FrameParser, Opcode

from .server_frames import server_frame

MESSAGES = [
    (Opcode.TEXT, b'{"e":"trade","t":1,"p":"0.001"}'),
    (Opcode.BINARY, bytes(range(256))),
    (Opcode.TEXT, "caf\u00e9 \u2603 \U0001f600".encode()),
    (Opcode.TEXT, b"x" * 300),  # 16-bit length
    (Opcode.TEXT, b"y" * 70000),  # 64-bit length
    (Opcode.TEXT, b""),
]


def stream_with_everything() -> tuple[bytes, list[tuple[int, bytes]]]:
    """Messages, fragmented messages and interleaved control frames, and what they should yield."""
    parts = [server_frame(op, data) for op, data in MESSAGES]
    parts.append(server_frame(Opcode.PING, b"ping-1"))
    parts.append(server_frame(Opcode.TEXT, b"frag-", fin=False))
    parts.append(server_frame(Opcode.PONG, b"pong-1"))
    parts.append(server_frame(Opcode.CONTINUATION, b"ment", fin=False))
    parts.append(server_frame(Opcode.PING, b"ping-2"))
    parts.append(server_frame(Opcode.CONTINUATION, b"ed", fin=True))
    parts.append(server_frame(Opcode.BINARY, b"\x00\x01", fin=False))
    parts.append(server_frame(Opcode.CONTINUATION, b"\x02", fin=True))
    parts.append(server_frame(Opcode.TEXT, b"last"))
    expected = [*MESSAGES, (Opcode.TEXT, b"frag-mented"), (Opcode.BINARY, b"\x00\x01\x02"),
                (Opcode.TEXT, b"last")]
    return b"".join(parts), expected


def parse_in_chunks(data: bytes, cuts: list[int], **options: object) -> tuple[list, FrameParser]:
    parser = FrameParser(**options)  # type: ignore[arg-type]
    out: list[tuple[int, bytes]] = []
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    for a, b in itertools.pairwise(bounds):
        parser.receive_data(data[a:b])
        for view in parser.messages():
            try:
                out.append((parser.opcode, bytes(view)))
            finally:
                view.release()
    return out, parser


def test_whole_stream() -> None:
    data, expected = stream_with_everything()
    out, parser = parse_in_chunks(data, [])
    assert out == expected
    assert parser.pings == [b"ping-1", b"ping-2"]
    assert parser.pongs == [b"pong-1"]
    assert parser.messages_lent == len(expected)
    parser.check_borrows()


def test_byte_by_byte() -> None:
    data, expected = stream_with_everything()
    out, parser = parse_in_chunks(data, list(range(len(data))))
    assert out == expected
    assert parser.pings == [b"ping-1", b"ping-2"]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_splits_give_identical_frames(data: st.DataObject) -> None:
    stream, expected = stream_with_everything()
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    out, parser = parse_in_chunks(stream, cuts)
    assert out == expected
    assert parser.pings == [b"ping-1", b"ping-2"]
    assert parser.buffered == 0


def test_close_frame_stops_iteration_and_ignores_later_data() -> None:
    parser = FrameParser()
    parser.receive_data(
        server_frame(Opcode.TEXT, b"a")
        + server_frame(Opcode.CLOSE, b"\x03\xe8bye")
        + server_frame(Opcode.TEXT, b"after")
    )
    got = []
    for view in parser.messages():
        got.append(bytes(view))
        view.release()
    assert got == [b"a"]
    assert parser.close == (1000, "bye")
    parser.receive_data(server_frame(Opcode.TEXT, b"later"))
    assert parser.next_message() is None


def test_empty_close_reports_1005() -> None:
    parser = FrameParser()
    parser.receive_data(server_frame(Opcode.CLOSE, b""))
    assert parser.next_message() is None
    assert parser.close == (1005, "")


REJECTIONS = [
    ("masked frame", server_frame(Opcode.TEXT, b"hi", mask=b"abcd"), 1002),
    ("rsv1", server_frame(Opcode.TEXT, b"hi", rsv=4), 1002),
    ("rsv2", server_frame(Opcode.BINARY, b"hi", rsv=2), 1002),
    ("rsv3", server_frame(Opcode.TEXT, b"hi", rsv=1), 1002),
    ("reserved data opcode 3", server_frame(3, b""), 1002),
    ("reserved data opcode 7", server_frame(7, b""), 1002),
    ("reserved control opcode 0xB", server_frame(0xB, b""), 1002),
    ("reserved control opcode 0xF", server_frame(0xF, b""), 1002),
    ("fragmented ping", server_frame(Opcode.PING, b"x", fin=False), 1002),
    ("control frame over 125 bytes", server_frame(Opcode.PING, b"x" * 126), 1002),
    ("continuation without start", server_frame(Opcode.CONTINUATION, b"x"), 1002),
    (
        "new message inside a fragmented one",
        server_frame(Opcode.TEXT, b"a", fin=False) + server_frame(Opcode.TEXT, b"b"),
        1002,
    ),
    ("close with 1-byte payload", server_frame(Opcode.CLOSE, b"\x03"), 1002),
    ("close with code 999", server_frame(Opcode.CLOSE, (999).to_bytes(2, "big")), 1002),
    ("close with code 1005", server_frame(Opcode.CLOSE, (1005).to_bytes(2, "big")), 1002),
    ("close with code 1006", server_frame(Opcode.CLOSE, (1006).to_bytes(2, "big")), 1002),
    ("close with code 5000", server_frame(Opcode.CLOSE, (5000).to_bytes(2, "big")), 1002),
    ("close with invalid UTF-8 reason", server_frame(Opcode.CLOSE, b"\x03\xe8\xff"), 1007),
    ("non-minimal 16-bit length", b"\x81\x7e\x00\x05hello", 1002),
    ("non-minimal 64-bit length", server_frame(Opcode.TEXT, b"hi" * 50, force_64bit=True), 1002),
    ("64-bit length with top bit", b"\x81\x7f" + (2**63 + 5).to_bytes(8, "big"), 1002),
    ("invalid UTF-8 text", server_frame(Opcode.TEXT, b"\xce\xba\xe1\xbd\xb9\xed\xa0\x80"), 1007),
    (
        "invalid UTF-8 across fragments",
        server_frame(Opcode.TEXT, b"\xce\xba", fin=False)
        + server_frame(Opcode.CONTINUATION, b"\xf4\x90\x80\x80", fin=True),
        1007,
    ),
    ("truncated UTF-8 at message end", server_frame(Opcode.TEXT, b"ok\xe2\x82"), 1007),
    ("frame over max size", server_frame(Opcode.BINARY, b"z" * 2000), 1009),
    ("2^63-1 length", b"\x82\x7f" + (2**63 - 1).to_bytes(8, "big"), 1009),
    (
        "fragmented message over max size",
        server_frame(Opcode.TEXT, b"a" * 600, fin=False)
        + server_frame(Opcode.CONTINUATION, b"b" * 600),
        1009,
    ),
]


@pytest.mark.parametrize(("name", "data", "code"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejections_carry_their_close_code(name: str, data: bytes, code: int) -> None:
    parser = FrameParser(max_message_size=1024)
    parser.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        for view in parser.messages():
            view.release()
    assert info.value.close_code == code
    if code == 1009:
        assert isinstance(info.value, MessageTooBig)
    parser.check_borrows()


def test_huge_length_rejected_from_the_header_alone() -> None:
    """2^63 - 1 is refused as soon as the 10 header bytes are in: nothing waits for the payload."""
    parser = FrameParser()
    parser.receive_data(b"\x82\x7f" + (2**63 - 1).to_bytes(8, "big"))
    with pytest.raises(MessageTooBig):
        parser.next_message()
    assert parser.buffered == 10


def test_validate_utf8_off_lends_invalid_text_unchecked() -> None:
    parser = FrameParser(validate_utf8=False)
    parser.receive_data(server_frame(Opcode.TEXT, b"\xff"))
    view = parser.next_message()
    assert view is not None and bytes(view) == b"\xff"
    view.release()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b"\xff")


# -- borrow safety ----------------------------------------------------------------


def feed_two_chunks(stash: list) -> FrameParser:
    parser = FrameParser()
    parser.receive_data(
        server_frame(Opcode.TEXT, b"first message") + server_frame(Opcode.TEXT, b"2")
    )
    for view in parser.messages():
        try:
            stash.append(view)
        finally:
            view.release()
    return parser


def test_stashed_view_raises_value_error_after_release() -> None:
    stash: list[memoryview] = []
    parser = feed_two_chunks(stash)
    with pytest.raises(ValueError, match="released"):
        bytes(stash[0])
    parser.receive_data(server_frame(Opcode.TEXT, b"next chunk"))  # no escape: reuse is fine


def test_stashed_slice_is_caught_before_the_buffer_is_reused() -> None:
    parser = FrameParser()
    parser.receive_data(
        server_frame(Opcode.TEXT, b"first message") + server_frame(Opcode.TEXT, b"2")
    )
    escaped = []
    for view in parser.messages():
        try:
            escaped.append(view[6:])  # a slice survives its parent's release
        finally:
            view.release()
    with pytest.raises(BorrowError, match=r"message #1 \(text, 13 bytes") as info:
        parser.receive_data(server_frame(Opcode.TEXT, b"overwrite"))
    assert "message" in str(info.value)
    # The buffer was not touched: the escaped slice still reads its own bytes.
    assert bytes(escaped[0]) == b"message"
    # Once the slice is gone the parser can go on, with nothing lost.
    escaped.clear()
    gc.collect()
    parser.receive_data(server_frame(Opcode.TEXT, b"overwrite"))
    assert [bytes(v) for v in parser.messages()] == [b"overwrite"]


def test_stashed_view_of_reassembled_message_is_caught() -> None:
    parser = FrameParser()
    parser.receive_data(
        server_frame(Opcode.TEXT, b"frag", fin=False) + server_frame(Opcode.CONTINUATION, b"ment")
    )
    escaped = []
    for view in parser.messages():
        escaped.append(view[:])
        view.release()
    with pytest.raises(BorrowError, match="reassembled fragmented message"):
        parser.receive_data(server_frame(Opcode.TEXT, b"again", fin=False))
    assert bytes(escaped[0]) == b"fragment"


def test_check_borrows_detects_a_live_view() -> None:
    parser = FrameParser()
    parser.receive_data(server_frame(Opcode.BINARY, b"abc"))
    view = parser.next_message()
    assert view is not None
    with pytest.raises(BorrowError):
        parser.check_borrows()
    view.release()
    parser.check_borrows()


def test_poison_makes_a_stale_slice_read_poison_not_the_next_frame() -> None:
    parser = FrameParser(poison=True)
    parser.receive_data(server_frame(Opcode.TEXT, b"AAAA") + server_frame(Opcode.TEXT, b"BBBB"))
    seen = []
    stale = None
    for view in parser.messages():
        if stale is None:
            stale = view[:]
        else:
            seen.append(bytes(stale))  # read during the next message's scope
        view.release()
    assert seen == [bytes([POISON]) * 4]
    assert stale is not None
    stale.release()


def test_receive_buffer_shrinks_after_a_large_message() -> None:
    import sys

    parser = FrameParser()
    parser.receive_data(server_frame(Opcode.TEXT, b"x" * 400_000))
    for view in parser.messages():
        view.release()
    parser.receive_data(server_frame(Opcode.TEXT, b"small"))
    assert sys.getsizeof(parser._buf) < 1000


def test_ping_payloads_are_owned_and_survive_buffer_reuse() -> None:
    """Rule 6: a queued ping payload pins nothing, so the buffer can be refilled before the pong."""
    parser = FrameParser()
    parser.receive_data(server_frame(Opcode.PING, b"keepalive") + server_frame(Opcode.TEXT, b"a"))
    for view in parser.messages():
        view.release()
    parser.receive_data(server_frame(Opcode.TEXT, b"b" * 20))  # must not raise BorrowError
    assert parser.pings == [b"keepalive"]
    assert all(type(p) is bytes for p in parser.pings)


def test_parser_never_parses_past_a_violation() -> None:
    parser = FrameParser()
    parser.receive_data(
        server_frame(Opcode.TEXT, b"\xff") + server_frame(Opcode.TEXT, b"after the fault")
    )
    with pytest.raises(ProtocolError) as first:
        parser.next_message()
    with pytest.raises(ProtocolError) as again:
        parser.next_message()
    assert again.value is first.value and first.value.close_code == 1007
