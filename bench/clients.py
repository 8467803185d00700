"""The clients under test: each receives every message, parses it, and counts.

Every client function has the signature ``(url, n, ssl_context, sink) ->
Outcome``: it connects to the blaster, starts its clock once the WebSocket
upgrade is done and sends ``"go"`` (the blaster sends nothing before), hands every text
message to ``sink``, stops the clock when the library reports the server's
Close, and returns the count and the elapsed time.  ``bench/run.py``
compares the count with ``n``.

Each client is written the way its library's documentation writes a
consumer, choosing the cheapest documented option that still ends in a
full parse: trio_feed gets ``validate_utf8=False``, websockets
``recv(decode=False)``, aiohttp ``decode_text=False``, picows its lent
``memoryview``, because ``orjson`` validates UTF-8 itself.
trio-websocket has no such option (wsproto always decodes to ``str``).
Keepalive pings are off where they exist, and compression is not offered.

A *sink* is what is done with each payload: ``orjson.loads`` (the "dicts"
rows), ``Decoder.decode`` (the "typed" rows), or a latency recorder.  It is
called once per message, so callback-style clients (trio_feed, picows) pay
one Python call per message, as their users do; loop-style clients
(``async for message in ws``) call it from their loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import trio
import workloads

Sink = Callable[[Any], object]

#: The message that tells the blaster to start; each client sends it right after
#: starting its clock.
GO = "go"


@dataclass
class Outcome:
    count: int
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time (user + system), over the same interval


class Stopwatch:
    """Wall-clock and process CPU time, started and read together.

    CPU time is what ``run.py`` ranks clients by: on a shared 2-core machine
    it leaves out the time the client spent preempted by other processes
    (and the server's own CPU time, which belongs to another process).  The
    server stays far ahead of every client, so a client's wall time is its
    CPU time unless something else took the core.
    """

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def outcome(self, count: int) -> Outcome:
        return Outcome(count, time.perf_counter() - self._wall, time.process_time() - self._cpu)


# -- trio_feed -------------------------------------------------------------------


def _tf_open(url: str, ctx: ssl.SSLContext | None, validate_utf8: bool | None) -> Any:
    """``open_connection``; ``validate_utf8=None`` leaves that option at its default."""
    from trio_feed import open_connection

    if validate_utf8 is None:
        return open_connection(url, ssl_context=ctx)
    return open_connection(url, ssl_context=ctx, validate_utf8=validate_utf8)


def tf_inline(
    url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink, *,
    validate_utf8: bool | None = False,
) -> Outcome:
    """``run_inline``: the handler borrows each payload as a view of the receive buffer.

    With ``validate_utf8=None`` (the defaults row) the sink itself is the
    handler, as in ``run_inline(conn, orjson.loads)``, and the pipeline's
    own counters count the messages.
    """
    from trio_feed import ConnectionClosed, PipelineCounters, run_inline

    count = 0
    counters = PipelineCounters()

    def handler(view: memoryview) -> None:
        nonlocal count
        sink(view)
        count += 1

    async def main() -> Outcome:
        async with _tf_open(url, ctx, validate_utf8) as conn:
            clock = Stopwatch()
            await conn.send(GO)
            try:
                if validate_utf8 is None:
                    await run_inline(conn, sink, counters=counters)
                else:
                    await run_inline(conn, handler)
            except ConnectionClosed:
                pass
            return clock.outcome(counters.delivered if validate_utf8 is None else count)

    return trio.run(main)


def tf_channel(
    url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink, *,
    validate_utf8: bool | None = False,
) -> Outcome:
    """``run_channel``: owned copies, one batch per receive chunk, parsed in a second task.

    With ``validate_utf8=None`` the sink is the handler, as in ``tf_inline``.
    """
    from trio_feed import ConnectionClosed, PipelineCounters, run_channel

    count = 0
    counters = PipelineCounters()

    def handler(payload: bytes) -> None:
        nonlocal count
        sink(payload)
        count += 1

    async def main() -> Outcome:
        async with _tf_open(url, ctx, validate_utf8) as conn:
            clock = Stopwatch()
            await conn.send(GO)
            try:
                if validate_utf8 is None:
                    await run_channel(conn, sink, counters=counters)
                else:
                    await run_channel(conn, handler)
            except ConnectionClosed:
                pass
            return clock.outcome(counters.delivered if validate_utf8 is None else count)

    return trio.run(main)


def tf_feed(
    url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink, *, mode: str = "channel"
) -> Outcome:
    """``async for event in open_feed(...)``: the supervised feed, typed events, default options.

    Everything a user gets by default stays on: continuity (duplicates and
    gaps), per-stream statistics, lag samples, the outbox, the watchdog.  The
    only options given are where to connect and ``reconnect=False``, so that
    the server's Close ends the run.  ``sink`` is unused: the feed decodes.
    """
    from trio_feed import ConnectionClosed, open_feed

    count = 0

    async def main() -> Outcome:
        nonlocal count
        clock = Stopwatch()  # the feed cannot send "go": the server starts at once
        try:
            async with open_feed(
                workloads.FEED_STREAMS, url=url + "&start=now", mode=mode,  # type: ignore[arg-type]
                reconnect=False, ssl_context=ctx,
            ) as feed:
                async for _event in feed:
                    count += 1
        except ConnectionClosed:
            pass
        return clock.outcome(count)

    return trio.run(main)


#: Buffer of the teaching row's channel, in messages.
TEACHING_BUFFER = 128


def teaching(url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink) -> Outcome:
    """The teaching row: trio_feed's reader, but one ``await send()`` per message.

    The reader copies a chunk's messages (``copy_messages()``, as
    ``run_channel``'s reader does), then sends them one at a time over a
    ``trio.open_memory_channel(TEACHING_BUFFER)`` to a parser task: the design
    ``run_channel`` avoids by sending one batch per chunk.
    """
    from trio_feed import ConnectionClosed

    count = 0

    async def main() -> Outcome:
        nonlocal count
        async with _tf_open(url, ctx, False) as conn:
            parser = conn.parser
            send, receive = trio.open_memory_channel[bytes](TEACHING_BUFFER)

            async def reader() -> None:
                async with send:
                    try:
                        while True:
                            for payload in parser.copy_messages():
                                await send.send(payload)
                            await conn.receive_more()
                    except ConnectionClosed:
                        pass

            async def consumer() -> None:
                nonlocal count
                async for payload in receive:
                    sink(payload)
                    count += 1

            clock = Stopwatch()
            await conn.send(GO)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(consumer)
            return clock.outcome(count)

    return trio.run(main)


# -- peers on trio -----------------------------------------------------------------


def trio_websocket(url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink) -> Outcome:
    """trio-websocket ``get_message()`` (wsproto underneath), default options."""
    from trio_websocket import ConnectionClosed, open_websocket_url

    async def main() -> Outcome:
        count = 0
        async with open_websocket_url(url, ssl_context=ctx) as ws:
            clock = Stopwatch()
            await ws.send_message(GO)
            try:
                while True:
                    sink(await ws.get_message())
                    count += 1
            except ConnectionClosed:
                pass
            return clock.outcome(count)

    return trio.run(main)


def websockets_trio(url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink) -> Outcome:
    """websockets' trio implementation (``websockets.trio.client``), ``recv(decode=False)``."""
    from websockets.exceptions import ConnectionClosedOK
    from websockets.trio.client import connect

    async def main() -> Outcome:
        count = 0
        async with connect(url, ssl=ctx, compression=None, ping_interval=None, max_size=None) as ws:
            clock = Stopwatch()
            await ws.send(GO)
            try:
                while True:
                    sink(await ws.recv(decode=False))
                    count += 1
            except ConnectionClosedOK:
                pass
            return clock.outcome(count)

    return trio.run(main)


# -- peers on asyncio ----------------------------------------------------------------


def websockets_asyncio(url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink) -> Outcome:
    """websockets' asyncio implementation, ``recv(decode=False)``."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosedOK

    async def main() -> Outcome:
        count = 0
        async with connect(url, ssl=ctx, compression=None, ping_interval=None, max_size=None) as ws:
            clock = Stopwatch()
            await ws.send(GO)
            try:
                while True:
                    sink(await ws.recv(decode=False))
                    count += 1
            except ConnectionClosedOK:
                pass
            return clock.outcome(count)

    return asyncio.run(main())


def aiohttp_client(url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink) -> Outcome:
    """aiohttp ``ws_connect``, ``async for msg in ws`` with ``decode_text=False``."""
    import aiohttp

    async def main() -> Outcome:
        count = 0
        text = aiohttp.WSMsgType.TEXT
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                url, ssl=ctx if ctx is not None else True, max_msg_size=0, decode_text=False
            ) as ws:
                clock = Stopwatch()
                await ws.send_str(GO)
                async for msg in ws:
                    if msg.type is text:
                        sink(msg.data)
                        count += 1
                return clock.outcome(count)

    return asyncio.run(main())


def picows_client(url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink) -> Outcome:
    """picows: a synchronous ``on_ws_frame`` callback given a lent ``memoryview``."""
    from picows import WSListener, WSMsgType, ws_connect

    count = 0
    text, close = WSMsgType.TEXT, WSMsgType.CLOSE

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            nonlocal count
            if frame.msg_type is text:
                sink(frame.get_payload_as_memoryview())
                count += 1
            elif frame.msg_type is close:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    async def main() -> Outcome:
        transport, _ = await ws_connect(
            Listener, url, ssl_context=ctx, max_frame_size=16 * 1024 * 1024
        )
        clock = Stopwatch()
        transport.send(text, GO.encode())
        await transport.wait_disconnected()
        return clock.outcome(count)

    return asyncio.run(main())


# -- no framework: blocking sockets -------------------------------------------------


def _raw_connect(url: str, ctx: ssl.SSLContext | None) -> tuple[socket.socket, bytes]:
    """Connect and upgrade with a blocking socket; return it and the bytes after the 101."""
    rest = url.split("//", 1)[1]
    host_port, path = rest.split("/", 1)
    host, port = host_port.rsplit(":", 1)
    sock: socket.socket = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname=host)
    sock.sendall(
        f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    return sock, head.split(b"\r\n\r\n", 1)[1]


_MASKED_GO = b"\x81\x82\x00\x00\x00\x00go"  # masked text "go", zero mask
_MASKED_CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # masked Close 1000, zero mask


def null_client(
    url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink, *, workload: str = "a"
) -> Outcome:
    """Read and discard with a blocking socket: how fast the blaster can send.

    The count is inferred from the byte count (``workloads.stream_bytes``),
    so no frame is parsed and ``sink`` is not called.
    """
    sock, early = _raw_connect(url, ctx)
    expected = workloads.stream_bytes(workload, n)
    clock = Stopwatch()
    sock.sendall(_MASKED_GO)
    got = len(early)
    buf = bytearray(1 << 20)
    while got < expected:
        k = sock.recv_into(buf)
        if not k:
            break
        got += k
    outcome = clock.outcome(n if got == expected else -1)
    sock.sendall(_MASKED_CLOSE)
    sock.close()
    return outcome


def raw_client(url: str, n: int, ctx: ssl.SSLContext | None, sink: Sink) -> Outcome:
    """No framework: a blocking socket, 256 KiB reads, a minimal frame loop in plain Python.

    Each payload is handed over as a ``bytearray`` slice (an owned copy).  No
    validation beyond what counting needs: a reference for what the machine
    gives a simple synchronous reader, not a usable client.
    """
    sock, early = _raw_connect(url, ctx)
    count = 0
    buf = bytearray(early)
    clock = Stopwatch()
    sock.sendall(_MASKED_GO)
    closed = False
    while not closed:
        data = sock.recv(256 * 1024)
        if not data:
            break
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, size, at = buf[pos], buf[pos + 1] & 0x7F, pos + 2
            if size == 126:
                if end - pos < 4:
                    break
                size, at = (buf[pos + 2] << 8) | buf[pos + 3], pos + 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, at = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if end < at + size:
                break
            if b0 & 0x0F == 0x8:
                closed = True
                break
            sink(buf[at : at + size])
            count += 1
            pos = at + size
        del buf[:pos]
    outcome = clock.outcome(count)
    sock.sendall(_MASKED_CLOSE)
    sock.close()
    return outcome


# -- sinks ---------------------------------------------------------------------------


def dicts_sink() -> Sink:
    return orjson.loads


def typed_sink() -> Sink:
    from trio_feed.binance import Decoder

    return Decoder().decode


class LatencySink:
    """Parse, then record ``now - server stamp`` in µs (the stamp is the ``ts`` field)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        append = self.samples.append
        loads = orjson.loads
        clock = time.monotonic_ns
        offset = workloads.TS_OFFSET

        def sink(payload: Any) -> None:
            append((clock() + offset - loads(payload)["ts"]) / 1000)

        self.sink = sink
