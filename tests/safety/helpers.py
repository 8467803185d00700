"""A connection over an in-memory stream pair, for the tests of docs/SAFETY.md's rows."""

from __future__ import annotations

import trio
import trio.testing

from trio_feed import Connection
from trio_feed.wire import FrameParser


def memory_connection() -> tuple[Connection, trio.abc.Stream]:
    """A client :class:`Connection` and the raw server side of its stream."""
    client, server = trio.testing.memory_stream_pair()
    conn = Connection(client, "memory://", FrameParser(), receive_size=65536, close_timeout=1.0)
    return conn, server
