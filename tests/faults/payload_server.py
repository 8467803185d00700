"""A WebSocket server that sends exactly the payloads a test chooses, one script per connection.

Connection ``i`` plays ``scripts[i]`` (the last script again for any later
one): it answers each SUBSCRIBE the client sends (``reply``), sends its
``payloads`` as text frames in a single write (so that they reach the
client as one receive chunk; a pause between them starts another), then
ends as told.  The server records, per connection, the Close code the
client sent, so a test can check what the client said about a payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import trio

from ..scripted_server import ServerSide, start_scripted_server
from ..wire.server_frames import server_frame

TEXT, CLOSE = 0x1, 0x8


def envelope(stream: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def trade(stream: str, tid: int, time: int | None = None) -> bytes:
    when = 1_700_000_000_000 + tid if time is None else time
    symbol = stream.split("@")[0].upper()
    return envelope(stream, {"e": "trade", "E": when, "s": symbol, "t": tid, "p": "1.0",
                             "q": "1.0", "T": when, "m": False, "M": True})


def book(stream: str, uid: int, bid: str = "1.0", *, data_first: bool = False) -> bytes:
    symbol = stream.split("@")[0].upper()
    data = {"u": uid, "s": symbol, "b": bid, "B": "1", "a": "2.0", "A": "1"}
    if data_first:
        return orjson.dumps({"data": data, "stream": stream})
    return envelope(stream, data)


@attrs.define
class Script:
    """What one connection does (see the module docstring)."""

    #: Text payloads; a number between them is a pause (seconds) that starts a new write.
    payloads: Sequence[bytes | float] = ()
    #: Sent before ``payloads`` answer the first SUBSCRIBE (only with ``reply``).
    before_reply: Sequence[bytes] = ()
    #: ``None``: expect no SUBSCRIBE; ``"ok"``: answer each with success; ``"error"``: refuse.
    reply: str | None = None
    #: ``("close", code)``, ``("drop",)`` or ``("open",)`` (wait for the client to leave).
    end: tuple[Any, ...] = ("open",)


@attrs.define
class PayloadServer:
    port: int
    scripts: Sequence[Script]
    #: Per connection, in order: the Close code the client sent (None: none).
    client_close_codes: list[int | None] = attrs.Factory(list)
    connections: int = 0

    def url(self, streams: Sequence[str]) -> str:
        return f"ws://127.0.0.1:{self.port}/stream?streams={'/'.join(streams)}"

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


async def _client_frames(peer: ServerSide, frames: list[tuple[int, bytes]]) -> None:
    while True:
        frame = await peer.read_frame()
        if frame is None:
            return
        frames.append(frame)
        if frame[0] == CLOSE:
            return


async def start_payload_server(nursery: trio.Nursery, scripts: Sequence[Script]) -> PayloadServer:
    server = PayloadServer(0, scripts)

    async def script(peer: ServerSide) -> None:
        number = server.connections
        server.connections += 1
        plan = scripts[min(number, len(scripts) - 1)]
        server.client_close_codes.append(None)
        await peer.accept()
        frames: list[tuple[int, bytes]] = []
        try:
            if plan.reply is not None:
                frame = await peer.read_frame()
                if frame is None or frame[0] != TEXT:  # the client left before subscribing
                    frames.extend([frame] if frame is not None else [])
                    return
                request = orjson.loads(frame[1])
                data = b"".join(server_frame(TEXT, p) for p in plan.before_reply)
                if plan.reply == "ok":
                    answer = {"result": None, "id": request["id"]}
                else:
                    answer = {"code": 2, "msg": "Invalid request", "id": request["id"]}
                await peer.stream.send_all(data + server_frame(TEXT, orjson.dumps(answer)))
            chunk = b""
            for item in plan.payloads:
                if isinstance(item, bytes):
                    chunk += server_frame(TEXT, item)
                    continue
                if chunk:
                    await peer.stream.send_all(chunk)
                chunk = b""
                await trio.sleep(item)
            if chunk:
                await peer.stream.send_all(chunk)
            if plan.end[0] == "close":
                await peer.stream.send_all(server_frame(CLOSE, plan.end[1].to_bytes(2, "big")))
                await _client_frames(peer, frames)
            elif plan.end[0] == "drop":
                return
            else:
                await _client_frames(peer, frames)
        finally:
            codes = [int.from_bytes(p[:2], "big") for op, p in frames if op == CLOSE]
            server.client_close_codes[number] = codes[0] if codes else None

    server.port = await start_scripted_server(nursery, script)
    return server
