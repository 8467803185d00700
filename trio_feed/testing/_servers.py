"""Servers for tests: the local exchange, a recording replayed, a scripted scenario."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from ..binance import parse_stream
from ..exchange import (
    CloseWith,
    DropConnection,
    Ending,
    KeepOpen,
    LocalExchange,
    ReplayServer,
    open_exchange,
    open_replay_server,
)
from ..recording import Record

__all__ = ["Scenario", "open_local_exchange", "open_scenario_server", "replay_recording"]

Payload = Mapping[str, Any] | list[Any] | str | bytes


def open_local_exchange(**kwargs: Any) -> AbstractAsyncContextManager[LocalExchange]:
    """The embedded local exchange, for tests: ``async with open_local_exchange() as exchange``.

    The same as :func:`trio_feed.exchange.open_exchange` (every keyword is
    passed on: ``seed``, ``rate``, ``symbols``, ``max_messages``, ...);
    connect with ``open_feed(streams, base_url=exchange.base_url)``.
    """
    return open_exchange(**kwargs)


def replay_recording(
    recording: str | os.PathLike[str] | Iterable[Record],
    *,
    speed: float | None = None,
    **kwargs: Any,
) -> AbstractAsyncContextManager[ReplayServer]:
    """Serve a recording (made by ``trio-feed record``) to a feed under test.

    ``async with replay_recording("btc.jsonl") as server:`` then
    ``open_feed(streams, base_url=server.base_url)``.  Tests want speed, so
    ``speed`` defaults to ``None`` (as fast as possible); pass ``1.0`` for
    the recorded pacing.  Other keywords go to
    :func:`trio_feed.exchange.open_replay_server`.  Each connection gets the
    whole recording and is then closed with code 1000.
    """
    return open_replay_server(recording, speed=speed, **kwargs)


class Scenario:
    """A scripted server: these payloads on these streams, with pauses, then one fault.

    ::

        scenario = (
            Scenario()
            .send("btcusdt@trade", trade("BTCUSDT", 1))
            .send("btcusdt@trade", trade("BTCUSDT", 3))   # a gap
            .pause(0.05)
            .close(1011, "internal error")                 # or .drop(); default: stay open
        )
        async with scenario.serve() as server:
            async with open_feed(["btcusdt@trade"], base_url=server.base_url,
                                 reconnect=False) as feed:
                ...

    Every connection plays the whole script from the start, so a test of a
    scripted fault usually wants ``reconnect=False``: the feed then ends
    with the fault instead of reconnecting to hear the script again.  On a combined
    connection (``/stream?streams=...``) each :meth:`send` arrives in a
    ``{"stream":...,"data":...}`` envelope, on a raw one (``/ws/...``)
    bare; a connection that names streams only gets the sends on those
    streams.  :meth:`send_raw` frames go to every connection exactly as
    given, for malformed or unusual input.  A payload given as a dict or list
    is serialised with ``orjson``; a ``str`` is sent as that exact text; a
    ``bytes`` payload is sent as a binary frame, without an envelope.

    The script ends with at most one fault: :meth:`close` (a Close frame with
    a code) or :meth:`drop` (a TCP reset without a Close frame, which the
    client sees as 1006).  Without one the connection stays open until the
    client leaves.  Methods return the scenario, so calls chain.
    """

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.end: Ending = KeepOpen()
        self._t = 0
        self._ended = False

    def _add(self, stream: str | None, raw: str | bytes) -> Scenario:
        if self._ended:
            raise RuntimeError(f"the scenario already ends with {self.end!r}")
        self.records.append(Record(self._t, stream, raw))
        return self

    def send(self, stream: str, payload: Payload) -> Scenario:
        """Send ``payload`` on ``stream`` (a valid Binance stream name)."""
        name = parse_stream(stream).name
        if isinstance(payload, bytes):
            return self._add(name, payload)
        text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
        return self._add(name, '{"stream":' + orjson.dumps(name).decode() + ',"data":'
                         + text + "}")

    def send_many(self, stream: str, payloads: Iterable[Payload]) -> Scenario:
        """:meth:`send` each of ``payloads`` on ``stream``, in order."""
        for payload in payloads:
            self.send(stream, payload)
        return self

    def send_raw(self, message: str | bytes) -> Scenario:
        """Send ``message`` as one frame, as is, to every connection (``bytes``: binary)."""
        return self._add(None, message)

    def pause(self, seconds: float) -> Scenario:
        """Wait ``seconds`` before the next step."""
        if seconds < 0:
            raise ValueError(f"a pause cannot be negative, got {seconds!r}")
        self._t += round(seconds * 1e9)
        return self

    def close(self, code: int = 1000, reason: str = "") -> Scenario:
        """End every connection with a Close frame carrying ``code`` and ``reason``."""
        self._add_end(CloseWith(code, reason))
        return self

    def drop(self) -> Scenario:
        """End every connection abruptly: TCP reset, no Close frame."""
        self._add_end(DropConnection())
        return self

    def _add_end(self, end: Ending) -> None:
        if self._ended:
            raise RuntimeError(f"the scenario already ends with {self.end!r}")
        self.end = end
        self._ended = True

    def serve(
        self, *, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> AbstractAsyncContextManager[ReplayServer]:
        """Start a server that plays this scenario; see the class docstring."""
        return open_scenario_server(self, host=host, port=port, ssl_context=ssl_context)


def open_scenario_server(
    scenario: Scenario,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> AbstractAsyncContextManager[ReplayServer]:
    """Serve ``scenario`` (see :class:`Scenario`); the server's ``base_url`` is where to connect."""
    return open_replay_server(list(scenario.records), speed=1.0, host=host, port=port,
                              ssl_context=ssl_context, end=scenario.end)
