"""Rows outside the default run: a proposed change, and the code paths issue 4 replaced.

``python bench/run.py --prototypes`` adds :func:`proto_copies`;
``python bench/run.py --before`` adds the three ``before_*`` rows.  Each one
reaches into trio_feed's internals, because the point is to measure code that
is not (or no longer) the package's.  If the package changes shape, delete
the row that broke rather than fixing it.

* ``proto_copies`` (P2, a design question, not applied): the handler is
  given each payload as an owned ``bytearray`` slice of the receive buffer
  instead of a lent view.  It handles only the frames the benchmark sends on
  its fast path (final, unfragmented text frames with 7- or 16-bit lengths)
  and falls back to ``FrameParser.messages()`` for anything else, so counts
  stay exact; it skips UTF-8 validation, as the benchmark's clients do.
* ``before_inline``: the real ``run_inline``, with ``FrameParser.deliver``
  swapped back for the loop it replaced (``for view in parser.messages():``
  ``handler(view)`` with a ``try``/``finally`` release).
* ``before_channel``: the real ``run_channel``, with
  ``FrameParser.copy_messages`` swapped back for the loop it replaced
  (``bytes(view)`` of each view ``messages()`` lends).
* ``before_tls``: the real ``run_inline`` over TLS, with the connection's
  ``TLSStream`` swapped back for ``trio.SSLStream(...,
  https_compatible=True)``, which returns one TLS record per receive.
"""

from __future__ import annotations

import contextlib
import ssl
import struct
from collections.abc import Callable, Iterator
from typing import Any

import clients
import trio

_header = struct.Struct("!BBH").unpack_from


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


def _fallback(parser: Any, handler: Callable[[Any], object]) -> None:
    for view in parser.messages():
        try:
            handler(view)
        finally:
            view.release()


def proto_copies(
    url: str, n: int, ctx: ssl.SSLContext | None, sink: clients.Sink
) -> clients.Outcome:
    from trio_feed import ConnectionClosed

    count = 0

    def handler(payload: Any) -> None:
        nonlocal count
        sink(payload)
        count += 1

    async def main() -> clients.Outcome:
        async with clients._tf_open(url, ctx, False) as conn:
            parser = conn.parser
            clock = clients.Stopwatch()
            await conn.send(clients.GO)
            try:
                while True:
                    if not _deliver_copies(parser, handler):
                        _fallback(parser, handler)
                    await conn.receive_more()
            except ConnectionClosed:
                pass
            return clock.outcome(count)

    return trio.run(main)


# -- the code paths issue 4 replaced ------------------------------------------------------


def messages_loop(parser: Any) -> Callable[[Callable[[memoryview], object]], int]:
    """What ``run_inline`` did per chunk before ``FrameParser.deliver``."""

    def deliver(handler: Callable[[memoryview], object]) -> int:
        delivered = 0
        for view in parser.messages():
            delivered += 1
            try:
                handler(view)
            finally:
                view.release()
        return delivered

    return deliver


def bytes_view_loop(parser: Any) -> Callable[[], list[bytes]]:
    """What ``run_channel``'s reader did per chunk before ``FrameParser.copy_messages``."""

    def copy_messages() -> list[bytes]:
        batch: list[bytes] = []
        append = batch.append
        for view in parser.messages():
            try:
                append(bytes(view))
            finally:
                view.release()
        return batch

    return copy_messages


@contextlib.contextmanager
def trio_ssl_stream() -> Iterator[None]:
    """Connections opened inside use ``trio.SSLStream``, as before ``TLSStream``."""
    import trio_feed._connection as connection

    def make(stream: trio.abc.Stream, context: ssl.SSLContext, server_hostname: str) -> Any:
        return trio.SSLStream(stream, context, server_hostname=server_hostname,
                              https_compatible=True)

    module: Any = connection  # the swap is the point: no type checking of it
    saved = module.TLSStream
    module.TLSStream = make
    try:
        yield
    finally:
        module.TLSStream = saved


def _before(pipeline: str, swap: Callable[[Any], None]) -> Callable[..., clients.Outcome]:
    def run(url: str, n: int, ctx: ssl.SSLContext | None, sink: clients.Sink) -> clients.Outcome:
        from trio_feed import ConnectionClosed, run_channel, run_inline

        count = 0

        def handler(payload: Any) -> None:
            nonlocal count
            sink(payload)
            count += 1

        async def main() -> clients.Outcome:
            async with clients._tf_open(url, ctx, False) as conn:
                swap(conn.parser)
                clock = clients.Stopwatch()
                await conn.send(clients.GO)
                try:
                    if pipeline == "inline":
                        await run_inline(conn, handler)
                    else:
                        await run_channel(conn, handler)
                except ConnectionClosed:
                    pass
                return clock.outcome(count)

        return trio.run(main)

    return run


def _swap_deliver(parser: Any) -> None:
    parser.deliver = messages_loop(parser)


def _swap_copy(parser: Any) -> None:
    parser.copy_messages = bytes_view_loop(parser)


before_inline = _before("inline", _swap_deliver)
before_channel = _before("channel", _swap_copy)


def before_tls(url: str, n: int, ctx: ssl.SSLContext | None, sink: clients.Sink) -> clients.Outcome:
    with trio_ssl_stream():
        return clients.tf_inline(url, n, ctx, sink)
