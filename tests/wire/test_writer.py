"""Client frames: masked, correctly sized, control-frame rules enforced."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_feed.wire import (
    Opcode,
    encode_close,
    encode_frame,
    encode_pong,
    encode_text,
    mask_payload,
)


def unmask(frame: bytes) -> tuple[int, bool, bytes]:
    b0, b1 = frame[0], frame[1]
    assert b1 & 0x80, "client frames must be masked"
    n, pos = b1 & 0x7F, 2
    if n == 126:
        n, pos = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, pos = int.from_bytes(frame[2:10], "big"), 10
    key = frame[pos : pos + 4]
    payload = frame[pos + 4 :]
    assert len(payload) == n
    return b0 & 0x0F, bool(b0 & 0x80), mask_payload(payload, key)


@given(st.binary(max_size=70000))
def test_mask_round_trip(data: bytes) -> None:
    frame = encode_frame(Opcode.BINARY, data)
    assert unmask(frame) == (Opcode.BINARY, True, data)


def test_fixed_mask_key_gives_known_bytes() -> None:
    # RFC 6455 section 5.7: a masked "Hello".
    assert encode_frame(Opcode.TEXT, b"Hello", mask_key=bytes.fromhex("37fa213d")) == bytes.fromhex(
        "818537fa213d7f9f4d5158"
    )


def test_text_pong_close() -> None:
    assert unmask(encode_text("h\u00e9")) == (Opcode.TEXT, True, "h\u00e9".encode())
    assert unmask(encode_pong(b"p")) == (Opcode.PONG, True, b"p")
    assert unmask(encode_close(1000, "bye")) == (Opcode.CLOSE, True, b"\x03\xe8bye")
    assert unmask(encode_close(None)) == (Opcode.CLOSE, True, b"")


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_close_refuses_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(ValueError):
        encode_close(code)


def test_control_frame_limits() -> None:
    with pytest.raises(ValueError):
        encode_pong(b"x" * 126)
    with pytest.raises(ValueError):
        encode_frame(Opcode.PING, b"", fin=False)
