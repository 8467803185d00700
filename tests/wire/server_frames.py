"""Server-side frame encoding for tests: unmasked frames, with every knob a hostile server has."""

from __future__ import annotations

import struct


def server_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    length: int | None = None,
    force_64bit: bool = False,
) -> bytes:
    """Encode a server-to-client frame.  ``length`` lies about the payload length."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if force_64bit or n >= 65536:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    elif n >= 126:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BB", first, mask_bit | n)
    if mask is not None:
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return header + mask + masked
    return header + payload
