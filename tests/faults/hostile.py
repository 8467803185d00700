"""A hostile Binance-like server for the fault matrix: raw bytes, and it knows what it sent.

``async with open_hostile(...) as server`` listens on 127.0.0.1 and speaks
just enough of Binance's combined-stream endpoint (``/stream?streams=a/b``,
SUBSCRIBE/UNSUBSCRIBE, ``serverShutdown``, pings) to be a feed's peer, while
letting a test break every rule on command: resets, close codes, silence,
byte trickles, endless continuation frames, ping floods, huge and fragmented
messages, error replies in both shapes or none, refused handshakes with
``Retry-After``, a 5-frames-per-second limit, replays and skipped ids.

One shared *market* publishes every stream's ids in order (``next id``, one
tick every ``tick`` seconds, ``burst`` events per tick sharing one event
time), whether or not a connection carries them: ``server.sent[stream]`` is
that published sequence, the one a feed's ``delivered + missing`` must cover
exactly (:func:`tests.faults.identity.assert_accounted`).  What each
connection was actually written is in ``peer.written``; the client frames
each connection read, with their times, in ``peer.frames``.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import orjson
import trio

from ..scripted_server import ServerSide

EPOCH_MS = 1_770_000_000_000

TEXT, CONT, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One unmasked server frame."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, n])
    elif n < 65536:
        head = bytes([b0, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 127]) + n.to_bytes(8, "big")
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(CLOSE, code.to_bytes(2, "big") + reason.encode())


def fragmented(payload: bytes, parts: int, *, pings: bool = True) -> bytes:
    """``payload`` as a text message in ``parts`` fragments, with a ping between each two
    (if ``pings``)."""
    size = -(-len(payload) // parts)
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    out = []
    for n, piece in enumerate(pieces):
        out.append(frame(TEXT if n == 0 else CONT, piece, fin=n == len(pieces) - 1))
        if pings and n < len(pieces) - 1:
            out.append(frame(PING, b"between fragments"))
    return b"".join(out)


def event_payload(stream: str, ident: int, when: int, padding: int = 0) -> bytes:
    """A combined-stream data message for ``stream`` with id ``ident`` at time ``when``
    (``padding`` bytes longer, in a field the decoder ignores)."""
    symbol, _, kind = stream.partition("@")
    sym = symbol.upper()
    data: dict[str, Any]
    if kind == "trade":
        data = {"e": "trade", "E": when, "s": sym, "t": ident, "p": "1.0", "q": "2.0",
                "T": when, "m": False, "M": True}
    elif kind == "aggTrade":
        data = {"e": "aggTrade", "E": when, "s": sym, "a": ident, "p": "1.0", "q": "2.0",
                "f": ident, "l": ident, "T": when, "m": False, "M": True}
    elif kind.startswith("depth"):
        data = {"e": "depthUpdate", "E": when, "s": sym, "U": ident, "u": ident,
                "b": [["1.0", "2.0"]], "a": []}
    elif kind == "bookTicker":
        data = {"u": ident, "s": sym, "b": "1.0", "B": "2.0", "a": "1.1", "A": "3.0"}
    elif kind == "miniTicker":
        data = {"e": "24hrMiniTicker", "E": when, "s": sym, "c": f"{ident}.0", "o": "1.0",
                "h": "2.0", "l": "0.5", "v": "10", "q": "10"}
    else:
        raise ValueError(f"the hostile server does not publish {kind!r}")
    if padding:
        data["x"] = "x" * padding
    return orjson.dumps({"stream": stream, "data": data})


def shutdown_payload(when: int) -> bytes:
    return orjson.dumps({"stream": "!serverShutdown",
                         "data": {"e": "serverShutdown", "E": when}})


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most ``times`` in any closed interval of length ``window``."""
    ordered = sorted(times)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j + 1 < len(ordered) and ordered[j + 1] <= start + window + 1e-9:
            j += 1
        best = max(best, j - i + 1)
    return best


@attrs.define(eq=False)
class Peer:
    """One client connection, as the server sees it."""

    server: Hostile
    number: int
    side: ServerSide
    streams: list[str]
    opened_at: float
    #: Client frames read: (time, opcode, payload).
    frames: list[tuple[float, int, bytes]] = attrs.Factory(list)
    #: Ids written to this connection, per stream.
    written: dict[str, list[int]] = attrs.Factory(lambda: defaultdict(list))
    outgoing: list[bytes] = attrs.Factory(list)
    wakeup: trio.Event = attrs.Factory(trio.Event)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    lock: trio.Lock = attrs.Factory(trio.Lock)
    #: Data is generated but not written (a half-open or silent server).
    paused: bool = False
    #: Stop reading the client's frames too (half-open: TCP stays open).
    deaf: bool = False
    #: Seconds between frames: each data frame gets its own write.
    spacing: float = 0.0
    #: Send each data message in this many fragments (pings between them, every 50th id).
    fragments: int = 1
    #: Skip this many events of each stream in the first tick this peer sees.
    skip_first: int = 0
    seen_tick: bool = False
    closed: bool = False

    @property
    def client_times(self) -> list[float]:
        """When each client frame arrived, but the Close (it ends the connection anyway)."""
        return [t for t, opcode, _ in self.frames if opcode != CLOSE]

    def push(self, data: bytes) -> None:
        self.outgoing.append(data)
        self.wakeup.set()

    async def send_raw(self, data: bytes) -> None:
        async with self.lock:
            await self.side.stream.send_all(data)

    async def close(self, code: int, reason: str = "") -> None:
        """A clean close: our Close frame, then the end of TCP."""
        self.closed = True
        with trio.move_on_after(1):
            try:
                await self.send_raw(close_frame(code, reason))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        self.scope.cancel()

    def drop(self) -> None:
        """The end of TCP (FIN) without a Close frame: the client sees 1006."""
        self.closed = True
        self.scope.cancel()

    def reset(self) -> None:
        """An abrupt end: RST (SO_LINGER 0), no Close frame."""
        self.closed = True
        stream = self.side.stream
        sock = getattr(stream, "socket", None)
        if sock is not None:
            import socket
            import struct

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.scope.cancel()


#: ``reply(peer, request) -> bytes | None``: the text of the reply to a control request.
Reply = Callable[[Peer, dict[str, Any]], bytes | None]
#: ``script(peer)``: runs beside the normal traffic of each connection (a fault).
Script = Callable[[Peer], Awaitable[None]]


def reply_ok(peer: Peer, request: dict[str, Any]) -> bytes | None:
    params = request.get("params") or []
    if request.get("method") == "SUBSCRIBE":
        peer.streams.extend(p for p in params if p not in peer.streams)
        for p in params:
            peer.server.wanted.setdefault(p, None)
    elif request.get("method") == "UNSUBSCRIBE":
        peer.streams[:] = [s for s in peer.streams if s not in params]
    return orjson.dumps({"result": None, "id": request.get("id")})


def refusing(refused: set[str], shape: str) -> Reply:
    """Refuse a request that names any of ``refused``: ``shape`` is "flat", "nested" or "none"."""

    def reply(peer: Peer, request: dict[str, Any]) -> bytes | None:
        params = set(request.get("params") or [])
        if not params & refused:
            return reply_ok(peer, request)
        msg = f"Invalid request: unknown stream {sorted(params & refused)[0]}"
        if shape == "flat":
            return orjson.dumps({"code": 2, "msg": msg, "id": request.get("id")})
        if shape == "nested":
            return orjson.dumps({"error": {"code": 2, "msg": msg}, "id": request.get("id")})
        return None  # no reply at all

    return reply


class Hostile:
    """The server; see the module docstring.  Attributes are the knobs a test turns."""

    def __init__(
        self,
        *,
        tick: float = 0.01,
        burst: int = 1,
        ping_interval: float | None = None,
        max_client_rate: int | None = 5,
        first_id: int = 1000,
    ) -> None:
        self.tick = tick
        self.burst = burst
        self.ping_interval = ping_interval
        self.max_client_rate = max_client_rate
        self.port = 0
        #: Every id the market published, per stream, in order (repeats for replays).
        self.sent: dict[str, list[int]] = defaultdict(list)
        #: Streams the market publishes: every stream any connection ever asked for.
        self.wanted: dict[str, None] = {}
        self._next: dict[str, int] = defaultdict(lambda: first_id)
        self.peers: list[Peer] = []
        self.attempts: list[float] = []
        self.reply: Reply = reply_ok
        #: Seconds before each control reply leaves.
        self.reply_delay = 0.0
        #: ``handshake(number) -> bytes | None``: a raw HTTP answer instead of the upgrade.
        self.handshake: Callable[[int], bytes | None] = lambda number: None
        #: Per-connection fault, run beside the traffic once the connection is up.
        self.script: Script | None = None
        #: Applied to each new peer before traffic starts.
        self.setup: Callable[[Peer], None] = lambda peer: None
        #: Published ids that no connection gets (a skip), per stream.
        self.skipped: dict[str, list[int]] = defaultdict(list)
        self._drop = 0
        #: Events re-sent to each new connection (n >= 2) before live data: a replay.
        self.replay = 0
        self.rate_limit_closes = 0
        self._recent: dict[str, list[bytes]] = defaultdict(list)
        #: id -> bytes of padding to add to that event (a huge message).
        self.padding: dict[int, int] = {}
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def live(self) -> list[Peer]:
        return [p for p in self.peers if not p.closed]

    def now_ms(self) -> int:
        return EPOCH_MS + int(trio.current_time() * 1000)

    # -- faults from the test -----------------------------------------------------------

    def drop_next(self, count: int) -> None:
        """Publish the next ``count`` ticks' events to nobody (ids skipped on the wire)."""
        self._drop = count

    async def close_all(self, code: int, reason: str = "") -> None:
        for peer in self.live():
            await peer.close(code, reason)

    def reset_all(self) -> None:
        for peer in self.live():
            peer.reset()

    def announce_shutdown(self, peer: Peer | None = None) -> None:
        for p in [peer] if peer is not None else self.live():
            p.push(frame(TEXT, shutdown_payload(self.now_ms())))

    # -- the market --------------------------------------------------------------------

    async def _market(self) -> None:
        while True:
            await trio.sleep(self.tick)
            when = self.now_ms()
            drop = self._drop > 0
            if drop:
                self._drop -= 1
            peers = self.live()
            for stream in list(self.wanted):
                frames = []
                for _ in range(self.burst):
                    ident = self._next[stream]
                    self._next[stream] += 1
                    self.sent[stream].append(ident)
                    if drop:
                        self.skipped[stream].append(ident)
                        continue
                    payload = event_payload(stream, ident, when, self.padding.pop(ident, 0))
                    data = frame(TEXT, payload)
                    frames.append((ident, data, payload))
                    recent = self._recent[stream]
                    recent.append(data)
                    del recent[: -max(self.replay, 1)]
                for peer in peers:
                    if stream not in peer.streams or peer.paused:
                        continue
                    chosen = frames[peer.skip_first:] if not peer.seen_tick else frames
                    for ident, data, payload in chosen:
                        peer.written[stream].append(ident)
                        peer.push(data if peer.fragments < 2 else fragmented(
                            payload, peer.fragments, pings=ident % 50 == 0))
            for peer in peers:
                if any(s in self.wanted for s in peer.streams):
                    peer.seen_tick = True

    # -- one connection ----------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        side = ServerSide(stream)
        number = next(self._ids)
        self.attempts.append(trio.current_time())
        try:
            request = await side.read_request()
            refusal = self.handshake(number)
            if refusal is not None:
                await stream.send_all(refusal)
                return
            from trio_feed.wire import accept_token

            token = accept_token(request["sec-websocket-key"])
            await stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + token.encode() + b"\r\n\r\n"
            )
            target = request["request-line"].split(" ")[1]
            query = parse_qs(urlsplit(target).query)
            names = [unquote(n) for n in query.get("streams", [""])[0].split("/") if n]
            peer = Peer(self, number, side, names, trio.current_time())
            for name in names:
                self.wanted.setdefault(name, None)
            self.peers.append(peer)
            self.setup(peer)
            if self.replay and number > 1:
                for name in names:
                    for data in self._recent[name][-self.replay:]:
                        head = 2 if data[1] < 126 else 4 if data[1] == 126 else 10
                        body = orjson.loads(data[head:])["data"]
                        ident = body.get("t", body.get("u"))
                        peer.written[name].append(ident)
                        self.sent[name].append(ident)
                        peer.push(data)
            with peer.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_guard, self._read, peer)
                    nursery.start_soon(_guard, self._write, peer)
                    if self.ping_interval:
                        nursery.start_soon(_guard, self._ping, peer)
                    if self.script is not None:
                        nursery.start_soon(_guard, self.script, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, OSError):
            pass
        finally:
            for peer in self.peers:
                if peer.side is side:
                    peer.closed = True
            await trio.aclose_forcefully(stream)

    async def _read(self, peer: Peer) -> None:
        while True:
            if peer.deaf:
                await trio.sleep_forever()
            got = await peer.side.read_frame()
            if peer.deaf:
                await trio.sleep_forever()  # went deaf while this frame was on its way
            if got is None:
                peer.closed = True
                peer.scope.cancel()
                return
            opcode, payload = got
            peer.frames.append((trio.current_time(), opcode, payload))
            limit = self.max_client_rate
            if limit is not None and opcode != CLOSE:
                now = trio.current_time()
                recent = [t for t in peer.client_times if t >= now - 1.0 - 1e-9]
                if len(recent) > limit:
                    self.rate_limit_closes += 1
                    await peer.close(1008, "Too many requests")
                    return
            if opcode == PING:
                peer.push(frame(PONG, payload))
            elif opcode == CLOSE:
                with trio.move_on_after(1):
                    await peer.send_raw(frame(CLOSE, payload[:2]))
                peer.closed = True
                peer.scope.cancel()
                return
            elif opcode == TEXT:
                request = orjson.loads(payload)
                answer = self.reply(peer, request)
                if answer is not None:
                    if self.reply_delay:
                        await trio.sleep(self.reply_delay)
                    peer.push(frame(TEXT, answer))

    async def _write(self, peer: Peer) -> None:
        while True:
            await peer.wakeup.wait()
            peer.wakeup = trio.Event()
            while peer.outgoing:
                if peer.spacing:
                    data = peer.outgoing.pop(0)
                    await peer.send_raw(data)
                    await trio.sleep(peer.spacing)
                else:
                    data = b"".join(peer.outgoing)
                    peer.outgoing.clear()
                    await peer.send_raw(data)

    async def _ping(self, peer: Peer) -> None:
        assert self.ping_interval
        for n in itertools.count():
            await trio.sleep(self.ping_interval)
            peer.push(frame(PING, b"%d" % n))


async def _guard(task: Callable[[Peer], Awaitable[None]], peer: Peer) -> None:
    """Run one of a connection's tasks; the client going away ends the connection."""
    try:
        await task(peer)
    except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, OSError):
        peer.closed = True
        peer.scope.cancel()


@asynccontextmanager
async def open_hostile(**options: Any) -> AsyncIterator[Hostile]:
    server = Hostile(**options)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server._handle, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(server._market)
        yield server
        nursery.cancel_scope.cancel()


# -- the consumer side -------------------------------------------------------------------


class Seen:
    """What a consumer saw: ids per stream (t, a, u), and every event."""

    def __init__(self) -> None:
        self.ids: dict[str, list[int]] = defaultdict(list)
        self.events: list[Any] = []
        self._waiters: list[tuple[int, trio.Event]] = []

    def add(self, event: Any) -> None:
        from trio_feed.binance import AggTrade, BookTicker, DepthUpdate, Trade

        self.events.append(event)
        if isinstance(event, Trade):
            self.ids[event.stream].append(event.trade_id)
        elif isinstance(event, AggTrade):
            self.ids[event.stream].append(event.agg_trade_id)
        elif isinstance(event, DepthUpdate):
            self.ids[event.stream].append(event.final_update_id)
        elif isinstance(event, BookTicker):
            self.ids[event.stream].append(event.update_id)
        for count, waiter in self._waiters:
            if len(self.events) >= count:
                waiter.set()

    async def wait_for(self, more: int) -> None:
        waiter = trio.Event()
        self._waiters.append((len(self.events) + more, waiter))
        if more <= 0:
            return
        await waiter.wait()


async def consume(feed: Any, seen: Seen, *, pause: float = 0.0) -> None:
    async for event in feed:
        seen.add(event)
        if pause:
            await trio.sleep(pause)


def http_refusal(status: int, reason: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
