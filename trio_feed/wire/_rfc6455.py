"""The RFC 6455 vocabulary: opcodes and close codes.

Kept apart from the parser and the writer so both read the same numbers, and
so the rules about which close codes may appear on the wire live in exactly
one function.
"""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "Opcode", "is_valid_close_code"]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 section 5.2).  3–7 and 11–15 are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        return self >= 0x8


class CloseCode(enum.IntEnum):
    """Close status codes (RFC 6455 section 7.4.1, plus IANA's 1012–1014)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    #: Never sent on the wire: "the Close frame had no status code".
    NO_STATUS = 1005
    #: Never sent on the wire: "the connection dropped without a Close frame".
    ABNORMAL = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    #: Never sent on the wire: "the TLS handshake failed".
    TLS_HANDSHAKE = 1015


def is_valid_close_code(code: int) -> bool:
    """True if ``code`` may appear in a Close frame on the wire (section 7.4).

    1000–1003 and 1007–1014 are defined; 1004 is reserved; 1005, 1006 and 1015
    are for reporting only and must never be sent; 3000–4999 belong to
    libraries and applications.  Everything else is a protocol error.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
