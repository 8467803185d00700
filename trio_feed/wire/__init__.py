"""Sans-I/O RFC 6455, client side: frames in (lent as views), frames out, handshake bytes.

Nothing in this package imports trio or touches a socket; it is fed bytes and
returns bytes, in the style of h11 and wsproto, so it can be tested byte by
byte and reused on any transport.
"""

from ._handshake import (
    MAX_HEADER_BYTES,
    HandshakeResponse,
    accept_token,
    build_request,
    make_key,
    parse_response,
)
from ._parser import DEFAULT_MAX_MESSAGE_SIZE, POISON, FrameParser
from ._rfc6455 import CloseCode, Opcode, is_valid_close_code
from ._writer import (
    encode_binary,
    encode_close,
    encode_frame,
    encode_ping,
    encode_pong,
    encode_text,
    mask_payload,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_HEADER_BYTES",
    "POISON",
    "CloseCode",
    "FrameParser",
    "HandshakeResponse",
    "Opcode",
    "accept_token",
    "build_request",
    "encode_binary",
    "encode_close",
    "encode_frame",
    "encode_ping",
    "encode_pong",
    "encode_text",
    "is_valid_close_code",
    "make_key",
    "mask_payload",
    "parse_response",
]
