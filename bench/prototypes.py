"""Prototypes of proposed hot-path changes, measured against the real thing.

Not part of the default run: ``python bench/run.py --prototypes`` adds
these rows.  Each one reaches into private attributes of trio_feed
(``FrameParser._buf``, ``._pos``, ``._frag_opcode``; ``trio.SSLStream``'s
``_ssl_object`` and ``_incoming``), because the point is to measure a change
before making it in the package.  If the package changes shape, delete the
prototype that broke rather than fixing it.

They only handle what the benchmark sends on their fast path (final,
unfragmented text frames with 7- or 16-bit lengths) and fall back to
``FrameParser.messages()`` for anything else, so counts stay exact.  They
skip UTF-8 validation (the benchmark's clients use ``validate_utf8=False``
with orjson, which validates).

* ``proto_callback`` (P1): the parser walks the chunk and calls the handler
  itself, instead of a generator resumed by ``run_inline``; the frame
  header is read with one ``struct.unpack_from``.  Still lends a view per
  message and releases it in ``finally``.
* ``proto_copies`` (P2): as P1, but each payload is handed over as an owned
  ``bytearray`` slice of the receive buffer, with no view at all.
* ``proto_channel``: ``run_channel``'s reader with a parser method that
  copies every complete message of the chunk in one loop (owned ``bytes``
  sliced from one ``bytes`` snapshot of the buffer), instead of lending a
  view per message and calling ``bytes(view)`` on it.
* ``proto_tls``: ``run_inline`` over TLS with a receive path that reads
  ciphertext in 256 KiB reads and decrypts every record available before
  returning, instead of ``trio.SSLStream.receive_some``, which returns one
  16 KiB TLS record per call (one trio checkpoint each).
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Callable
from typing import Any

import clients
import trio

_header = struct.Struct("!BBH").unpack_from


def _deliver_views(parser: Any, handler: Callable[[memoryview], object]) -> bool:
    """P1: lend each complete common frame to ``handler``; False at an uncommon frame."""
    buf = parser._buf
    pos = parser._pos
    end = len(buf)
    last = end - 4
    whole = memoryview(buf).toreadonly()
    lent = 0
    try:
        while pos <= last:
            b0, n, n16 = _header(buf, pos)
            if n < 126:
                start = pos + 2
            elif n == 126:
                n, start = n16, pos + 4
            else:
                return False
            if b0 != 0x81 or parser._frag_opcode:
                return False
            stop = start + n
            if stop > end:
                return True
            parser._pos = pos = stop
            view = whole[start:stop]
            lent += 1
            try:
                handler(view)
            finally:
                view.release()
        return True
    finally:
        whole.release()
        parser.messages_lent += lent


def _deliver_copies(parser: Any, handler: Callable[[bytearray], object]) -> bool:
    """P2: hand each complete common frame to ``handler`` as an owned ``bytearray``."""
    buf = parser._buf
    pos = parser._pos
    end = len(buf)
    last = end - 4
    lent = 0
    try:
        while pos <= last:
            b0, n, n16 = _header(buf, pos)
            if n < 126:
                start = pos + 2
            elif n == 126:
                n, start = n16, pos + 4
            else:
                return False
            if b0 != 0x81 or parser._frag_opcode:
                return False
            stop = start + n
            if stop > end:
                return True
            parser._pos = pos = stop
            lent += 1
            handler(buf[start:stop])
        return True
    finally:
        parser.messages_lent += lent


def _copy_all(parser: Any) -> tuple[list[bytes], bool]:
    """Owned copies of every complete common frame; False at an uncommon frame."""
    buf = parser._buf
    pos = parser._pos
    end = len(buf)
    last = end - 4
    snapshot = bytes(buf)  # one copy per chunk, then slicing bytes needs no view
    out: list[bytes] = []
    append = out.append
    common = True
    while pos <= last:
        b0, n, n16 = _header(buf, pos)
        if n < 126:
            start = pos + 2
        elif n == 126:
            n, start = n16, pos + 4
        else:
            common = False
            break
        if b0 != 0x81 or parser._frag_opcode:
            common = False
            break
        stop = start + n
        if stop > end:
            break
        append(snapshot[start:stop])
        pos = stop
    parser._pos = pos
    parser.messages_lent += len(out)
    return out, common


def _fallback(parser: Any, handler: Callable[[Any], object]) -> None:
    for view in parser.messages():
        try:
            handler(view)
        finally:
            view.release()


class _DrainingTLS:
    """Stands in for the connection's ``trio.SSLStream`` on the receive side only."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._transport = stream.transport_stream
        self._read = stream._ssl_object.read
        self._incoming = stream._incoming

    async def receive_some(self, max_bytes: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while True:
            while got < max_bytes:
                try:
                    more = self._read(max_bytes - got)
                except ssl.SSLWantReadError:
                    break
                if not more:
                    return b"".join(parts)
                parts.append(more)
                got += len(more)
            if parts:
                return b"".join(parts)
            data = await self._transport.receive_some(max_bytes)
            if not data:
                return b""
            self._incoming.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _inline_variant(
    deliver: Callable[[Any, Callable[[Any], object]], bool] | None, draining_tls: bool
) -> Callable[..., clients.Outcome]:
    def run(url: str, n: int, ctx: ssl.SSLContext | None, sink: clients.Sink) -> clients.Outcome:
        from trio_feed import ConnectionClosed, run_inline

        count = 0

        def handler(payload: Any) -> None:
            nonlocal count
            sink(payload)
            count += 1

        async def main() -> clients.Outcome:
            async with clients._tf_open(url, ctx, False) as conn:
                if draining_tls and ctx is not None:
                    conn._stream = _DrainingTLS(conn._stream)
                parser = conn.parser
                clock = clients.Stopwatch()
                await conn.send(clients.GO)
                try:
                    if deliver is None:
                        await run_inline(conn, handler)
                    else:
                        while True:
                            if not deliver(parser, handler):
                                _fallback(parser, handler)
                            await conn.receive_more()
                except ConnectionClosed:
                    pass
                return clock.outcome(count)

        return trio.run(main)

    return run


proto_callback = _inline_variant(_deliver_views, draining_tls=False)
proto_copies = _inline_variant(_deliver_copies, draining_tls=False)
proto_tls = _inline_variant(None, draining_tls=True)


def proto_channel(
    url: str, n: int, ctx: ssl.SSLContext | None, sink: clients.Sink
) -> clients.Outcome:
    from trio_feed import ConnectionClosed

    count = 0

    async def main() -> clients.Outcome:
        nonlocal count
        async with clients._tf_open(url, ctx, False) as conn:
            parser = conn.parser
            send, receive = trio.open_memory_channel[list[bytes]](16)

            async def reader() -> None:
                async with send:
                    try:
                        while True:
                            batch, common = _copy_all(parser)
                            if not common:
                                for view in parser.messages():
                                    try:
                                        batch.append(bytes(view))
                                    finally:
                                        view.release()
                            if batch:
                                await send.send(batch)
                            await conn.receive_more()
                    except ConnectionClosed:
                        pass

            async def consumer() -> None:
                nonlocal count
                async for batch in receive:
                    for payload in batch:
                        sink(payload)
                        count += 1

            clock = clients.Stopwatch()
            await conn.send(clients.GO)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(consumer)
            return clock.outcome(count)

    return trio.run(main)
