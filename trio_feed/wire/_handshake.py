"""The HTTP/1.1 upgrade (RFC 6455 section 4), as bytes in and bytes out.

A client handshake is one request and one response, so a full HTTP state
machine would be more machinery than the job needs.  What matters is to be
strict about the few things that make the connection trustworthy:

- the response must be ``101`` with ``Upgrade: websocket`` and
  ``Connection: upgrade``;
- ``Sec-WebSocket-Accept`` must be the hash of *our* key, which proves the
  peer is a WebSocket server and not a cache replaying an old answer;
- the header block is bounded (:data:`MAX_HEADER_BYTES`), so a hostile
  server cannot make us buffer without limit;
- bytes that arrive after the blank line belong to the first frames and are
  handed back, not dropped.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable

import attrs

from .._errors import HandshakeError
from .._value import Value

__all__ = [
    "MAX_HEADER_BYTES",
    "HandshakeResponse",
    "accept_token",
    "build_request",
    "make_key",
    "parse_response",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: The largest response header block accepted before the blank line.
MAX_HEADER_BYTES = 16384


def make_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_token(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value a correct server answers to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def build_request(
    host: str,
    port: int,
    resource: str,
    key: str,
    *,
    secure: bool,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The upgrade request for ``resource`` (path and query) on ``host:port``."""
    default_port = 443 if secure else 80
    host_header = host if ":" not in host else f"[{host}]"
    if port != default_port:
        host_header += f":{port}"
    lines = [
        f"GET {resource} HTTP/1.1",
        f"Host: {host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "User-Agent: trio_feed",
    ]
    for name, value in extra_headers:
        if any(c in name + value for c in "\r\n"):
            raise ValueError("header names and values may not contain CR or LF")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@attrs.frozen(repr=False)
class HandshakeResponse(Value):
    """A parsed upgrade response.  ``headers`` keys are lowercased."""

    status: int
    reason: str
    headers: dict[str, str]


#: At most this much of a refusing server's body is kept on the HandshakeError.
MAX_REFUSAL_BODY = 4096


def refusal_body_wanted(error: HandshakeError) -> int:
    """How many more body bytes a refusal announced (``Content-Length``), capped; else 0."""
    try:
        length = int(error.headers.get("content-length", "0"))
    except ValueError:
        return 0
    return max(0, min(length, MAX_REFUSAL_BODY) - len(error.body))


def parse_response(data: bytes | bytearray, key: str) -> tuple[HandshakeResponse, bytes] | None:
    """Parse and check the server's answer to the request made with ``key``.

    Returns ``None`` while the header block is incomplete, or the response and
    the bytes that followed it (the start of the frame stream).  Raises
    :class:`~trio_feed.HandshakeError` if the block exceeds
    :data:`MAX_HEADER_BYTES`, is malformed, is not a ``101``, or carries the
    wrong ``Sec-WebSocket-Accept``.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEADER_BYTES:
            raise HandshakeError(
                f"the handshake response header block exceeds {MAX_HEADER_BYTES} bytes"
            )
        return None
    if end > MAX_HEADER_BYTES:
        raise HandshakeError(
            f"the handshake response header block exceeds {MAX_HEADER_BYTES} bytes"
        )
    block = bytes(data[:end]).decode("latin-1")
    rest = bytes(data[end + 4 :])
    status_line, *header_lines = block.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HandshakeError(f"malformed HTTP status line: {status_line[:100]!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(f"malformed HTTP header line: {line[:100]!r}", status)
        lname = name.lower()
        value = value.strip()
        headers[lname] = f"{headers[lname]}, {value}" if lname in headers else value
    response = HandshakeResponse(status, reason, headers)
    if status != 101:
        raise HandshakeError(
            f"the server refused the WebSocket upgrade: HTTP {status} {reason}".rstrip(),
            status,
            headers,
            rest[:MAX_REFUSAL_BODY],
        )
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("the 101 response lacks 'Upgrade: websocket'", status)
    if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
        raise HandshakeError("the 101 response lacks 'Connection: Upgrade'", status)
    if headers.get("sec-websocket-accept") != accept_token(key):
        raise HandshakeError(
            "the 101 response has a wrong Sec-WebSocket-Accept; the peer is not answering "
            "this handshake",
            status,
        )
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("the server selected an extension this client did not offer", status)
    return response, rest
