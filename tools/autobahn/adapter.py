"""trio_feed as a client for the shared Autobahn|Testsuite driver (``client_driver.py``).

The driver expects::

    async with connect(url) as ws:
        msg = await ws.receive()   # str for text, bytes for binary
        await ws.send(msg)

and that is exactly :class:`trio_feed.Connection`, so ``connect`` is the
library's own :func:`trio_feed._connection.open_connection`, with nothing in
between: the same frame parser, writer and closing handshake users get.  The
only argument changed is ``max_message_size``: cases 9.* send 16 MiB messages.

How the end of a case is reported to the driver:

- :class:`trio_feed.ConnectionClosed`: the connection ended (either side).
- :class:`trio_feed.ProtocolError` (and its subclass ``MessageTooBig``): the
  *server* broke RFC 6455; before raising it, the connection already sent
  Close with the error's code (1002, 1007 or 1009) and waited for the
  server's answer.  That is the behaviour the fuzzing cases expect, so for the
  driver it is a normal end of the case, not a client error.  Whether the
  close was right is graded by the server, not by the driver.

Run with the shared driver (``tools/autobahn/run.sh`` does this)::

    PYTHONPATH=tools/autobahn python ../shared/autobahn/client_driver.py \\
        --agent trio_feed --lib adapter:connect
"""

from __future__ import annotations

from typing import Any

from trio_feed import ConnectionClosed, ConnectionContext, ProtocolError, open_connection

__all__ = ["CLOSED_EXCEPTIONS", "LOOP", "MAX_MESSAGE_SIZE", "connect"]

#: The event loop client_driver.py must run ``connect`` on.
LOOP = "trio"

#: Exceptions that mean "the case ended normally" (ProtocolError: see the docstring).
CLOSED_EXCEPTIONS = (ConnectionClosed, ProtocolError)

#: Cases 9.* send messages of up to 16 MiB; the README asks for at least 2**25.
MAX_MESSAGE_SIZE = 2**25


def connect(url: str, **kwargs: Any) -> ConnectionContext:
    """``open_connection(url)`` with room for the 16 MiB messages of cases 9.*.

    Extra keyword arguments (the driver's ``--connect-kwargs``) are passed on
    to :func:`~trio_feed.open_connection` and override the default size.
    """
    kwargs.setdefault("max_message_size", MAX_MESSAGE_SIZE)
    return open_connection(url, **kwargs)
