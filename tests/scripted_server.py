"""A raw trio TCP (or TLS) server that completes the WebSocket upgrade and then runs a script.

The script gets the server side of the connection as a trio stream and may
send any bytes at all, which is what tests of hostile or unusual peers need.
Client frames it reads are unmasked with :func:`read_client_frame`.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable

import trio

from trio_feed.wire import accept_token, mask_payload

Script = Callable[[trio.abc.Stream], Awaitable[None]]


class ServerSide:
    """Buffered reading of the client's bytes, for scripts."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            return False
        self.buffer += data
        return True

    async def read_request(self) -> dict[str, str]:
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise EOFError("client went away during the handshake")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        headers = {"request-line": lines[0]}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return headers

    async def accept(self, *, status: bytes = b"101 Switching Protocols",
                     accept: str | None = None) -> dict[str, str]:
        headers = await self.read_request()
        token = accept if accept is not None else accept_token(headers["sec-websocket-key"])
        await self.stream.send_all(
            b"HTTP/1.1 " + status + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + token.encode() + b"\r\n\r\n"
        )
        return headers

    async def read_frame(self) -> tuple[int, bytes] | None:
        """One client frame as (opcode, unmasked payload), or None at EOF."""
        while True:
            frame = _split_client_frame(self.buffer)
            if frame is not None:
                return frame
            if not await self._fill():
                return None


def _split_client_frame(buf: bytearray) -> tuple[int, bytes] | None:
    if len(buf) < 2:
        return None
    n, pos = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = int.from_bytes(buf[2:10], "big"), 10
    assert buf[1] & 0x80, "client frame not masked"
    if len(buf) < pos + 4 + n:
        return None
    key = bytes(buf[pos : pos + 4])
    payload = mask_payload(bytes(buf[pos + 4 : pos + 4 + n]), key)
    opcode = buf[0] & 0x0F
    del buf[: pos + 4 + n]
    return opcode, payload


async def start_scripted_server(
    nursery: trio.Nursery,
    script: Callable[[ServerSide], Awaitable[None]],
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Serve ``script`` for every connection on 127.0.0.1; return the port."""

    async def handle(stream: trio.abc.Stream) -> None:
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_side=True)
        try:
            await script(ServerSide(stream))
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port
