"""trio-websocket's server connection, with the three hooks the exchange needs.

Binance counts *every* frame a client sends against its budget of 5 per
second: data messages, pings and pongs alike.  trio-websocket answers pings
and consumes pongs inside its reader task, before any public API sees them,
so the only place to observe them is that task's event dispatch.
``WebSocketConnection._reader_task`` builds a table of bound methods
(``self._handle_ping_event`` and so on) when it starts, so the overrides of a
subclass are what it calls.  :class:`HookedWebSocket` overrides:

- ``_handle_message_event``: count a text or binary message once, on its
  last fragment, then deliver it as usual;
- ``_handle_ping_event``: count the ping, then answer it only if the
  exchange says so (``ignore_client_pings``, ``pause_sending``, a
  connection already closing);
- ``_handle_pong_event``: count the pong, then let it wake the keeper's
  ``ping()`` as usual;
- ``_send``: note when a Close frame has been written, so
  ``close_connections`` can return once its Close frames are on the wire
  rather than after the client's reply.

These are private names (checked against trio-websocket 0.12.2), so they are
verified before a server starts: :func:`check_hooks` confirms that each
exists and that the reader's code still looks them up on ``self``, and
raises ``RuntimeError`` if a release has moved them, rather than letting the
exchange silently count nothing.  ``tests/exchange/test_faults.py`` checks
the counts end to end.

The connection is built as ``trio_websocket.wrap_server_stream`` builds one
(the exchange owns each TCP stream, so it can also half-close or reset it).
"""

from __future__ import annotations

from typing import Any, Protocol

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

__all__ = ["ClientListener", "HookedWebSocket", "check_hooks", "receive_request"]

_OVERRIDDEN = ("_handle_message_event", "_handle_ping_event", "_handle_pong_event", "_send")
_USED = ("_reader_task", "_get_request")


class ClientListener(Protocol):
    """What the hooks report to: one per connection (``_faults.ClientTraffic``)."""

    def arrived(self, kind: str) -> bool:
        """Count one client message (``"message"``, ``"ping"`` or ``"pong"``).

        ``False`` means the message is over the budget and must not be acted on.
        """

    def answer_ping(self) -> bool:
        """Whether a ping that was within the budget gets its pong."""


def check_hooks() -> None:
    """Raise ``RuntimeError`` unless trio-websocket still has the methods overridden here."""
    missing = [name for name in (*_OVERRIDDEN, *_USED)
               if not callable(getattr(WebSocketConnection, name, None))]
    if not missing:
        reader = WebSocketConnection._reader_task
        names = set(getattr(getattr(reader, "__code__", None), "co_names", ()))
        missing = [name for name in _OVERRIDDEN[:3] if name not in names]
    if missing:
        raise RuntimeError(
            "this trio-websocket no longer dispatches reader events through "
            f"{', '.join(missing)}; the local exchange cannot count client pings, "
            "pongs and messages (see trio_feed/exchange/_hooks.py)")


class HookedWebSocket(WebSocketConnection):
    """A server-side ``WebSocketConnection`` that reports client traffic to ``listener``."""

    def __init__(self, stream: trio.abc.Stream, listener: ClientListener) -> None:
        super().__init__(stream, WSConnection(ConnectionType.SERVER))
        self.listener = listener
        #: Set once a Close frame of ours is written (or the connection ends).
        self.close_written = trio.Event()

    async def _handle_message_event(self, event: TextMessage | BytesMessage) -> None:
        if event.message_finished:
            self.listener.arrived("message")
        await super()._handle_message_event(event)

    async def _handle_ping_event(self, event: Ping) -> None:
        if self.listener.arrived("ping") and self.listener.answer_ping():
            await super()._handle_ping_event(event)

    async def _handle_pong_event(self, event: Pong) -> None:
        self.listener.arrived("pong")
        await super()._handle_pong_event(event)

    async def _send(self, event: Any) -> None:
        await super()._send(event)
        if isinstance(event, CloseConnection):
            self.close_written.set()


async def receive_request(nursery: trio.Nursery, ws: HookedWebSocket) -> WebSocketRequest:
    """Start ``ws``'s reader in ``nursery`` and wait for the client's upgrade request."""
    nursery.start_soon(_read, ws)
    return await ws._get_request()


@trio.lowlevel.enable_ki_protection  # the reader task's root: Ctrl-C never lands in it (EXC3)
async def _read(ws: HookedWebSocket) -> None:
    await ws._reader_task()
