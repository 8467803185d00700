"""The local exchange's REST side: depth snapshots over real HTTP/1.1, weights, and faults.

A client keeps an order book from two sources, the ``@depth`` stream and a
REST snapshot, and they must describe the *same* book.  This module serves
``GET /api/v3/depth`` from the market whose diff events the client is
reading, on a plain HTTP/1.1 server (h11 over trio sockets, keep-alive, no
TLS) beside the WebSocket server, and lets a test break that consistency on
purpose.

Theory of operation
-------------------

Which market?  Each WebSocket connection replays its own ``Market(seed)``
(see ``_server``), so "the exchange's book" is ambiguous.  A connection is
therefore registered under a *session*, named by an optional path prefix
``/s/<name>`` on the WebSocket URL, and a REST request with the same prefix
reads the market of that session's most recent open connection.  The prefix
is part of the *base* URLs, so a client needs no knowledge of it:
``exchange.session_urls("a")`` gives ``ws://host:port/s/a`` and
``http://host:rest_port/s/a``, and every URL the client builds from them
carries it.  Without a prefix both sides use the default session ``""``,
which is what a single client needs.  This keeps the exchange's property that
two connections with one seed see the same history, at the cost of the
prefix for tests that run several clients at once.  (A single shared market
advancing on a clock, as on Binance, would give up that property.)

REST1: a snapshot is the true book of the session's market at the moment
    the request is handled.  The market only moves when its connection's
    sender steps it, between awaits, so the answer is always a whole tick;
    its ``lastUpdateId`` may be ahead of, or behind, the diff events already
    delivered, which is exactly what the client's sync procedure handles.

Request weight follows Binance: limit 1-100 costs 5, 101-500 25, 501-1000
50, 1001-5000 250 (larger limits are capped at 5000), counted per fixed
minute of trio's clock across all sessions (one IP).  Every answer carries
``X-MBX-USED-WEIGHT-1M``; a request that would exceed ``weight_limit`` gets
429 with ``Retry-After`` (seconds to the next minute) and code -1003, and is
not counted.

Faults (:class:`Faults`, ``exchange.faults``), each armed for one symbol in
one session and consumed by the next matching depth event or request:

- ``drop_depth``: the next diff event(s) of the symbol are not sent (a gap);
- ``reorder_depth``: the next diff event is held back and sent after the
  following one (out of order);
- ``stale_snapshot``: the book is captured *now* and the next depth request
  answers with that capture.  It is older than any event the client buffers
  after this moment, so combined with a later gap it forces a refetch.

REST2: faults never reach a connection that did not subscribe to the
    symbol's depth: they are applied on the send path, per session.

Trade history.  ``GET /api/v3/klines`` (``symbol``, ``interval``,
``startTime``, ``endTime``, ``limit``; weight 2) answers the market's closed
UTC candles, the ones its kline streams closed.
``GET /api/v3/aggTrades`` and ``GET /api/v3/historicalTrades``
(``symbol``, ``fromId`` inclusive, ``limit`` up to 1000, default 500) answer
from the trades the market has made, the very ones its streams carried
(the market keeps ``HISTORY_LIMIT`` per symbol; an older ``fromId`` starts at
the oldest kept), weighing 4 and 25 as on Binance.  In shared-market mode
they read the shared market even while no connection is open.  Faults for
them, each until its count or time runs out:

- ``refuse_history``: answer with an HTTP status (503 by default), or with
  ``status=None`` close the connection without an answer;
- ``rate_limit_history``: answer 429 (or 418) with ``Retry-After``;
- ``slow_history``: answer only after a delay (on trio's clock);
- ``short_history_pages``: at most ``size`` rows a page, whatever ``limit``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import orjson
import trio

from ..binance._limits import INVALID_SYMBOL_CODE, SPOT, Venue
from ..binance._streams import KLINE_INTERVALS, Stream
from ._market import MAX_DEPTH_LIMIT, Market

__all__ = ["Faults", "RestEndpoint", "RestStatistics", "depth_weight", "split_session"]

#: Binance's spot REQUEST_WEIGHT budget per minute per IP.
DEFAULT_WEIGHT_LIMIT = SPOT.weight_limit
_MAX_REQUEST_BYTES = 16 * 1024
#: The trade-history paths and their weights.
_HISTORY = {SPOT.agg_trades_path: SPOT.agg_trades_weight,
            SPOT.trades_path: SPOT.trades_weight}
_SESSION = re.compile(r"/s/([A-Za-z0-9_-]{1,64})(/.*)?$")


def depth_weight(limit: int) -> int:
    """Request weight of ``GET /api/v3/depth`` with ``limit`` (capped at 5000 first)."""
    return SPOT.depth_weight(limit)


def split_session(target: str) -> tuple[str, str]:
    """``(session, rest of the target)`` for ``/s/<name>/...``; ``("", target)`` otherwise."""
    path, sep, query = target.partition("?")
    match = _SESSION.match(path)
    if match is None:
        return "", target
    return match.group(1), (match.group(2) or "/") + sep + query


@attrs.frozen
class RestStatistics:
    """What the REST endpoint has done: requests answered, snapshots, 429s, faults fired."""

    requests: int
    snapshots: int
    rate_limited: int
    weight_used: int
    stale_served: int
    depth_dropped: int
    depth_reordered: int
    #: Trade-history requests answered with rows, the rows, and those a fault answered.
    history_requests: int = 0
    history_rows: int = 0
    history_faults: int = 0


@attrs.define
class _Counters:
    requests: int = 0
    snapshots: int = 0
    rate_limited: int = 0
    stale_served: int = 0
    depth_dropped: int = 0
    depth_reordered: int = 0
    history_requests: int = 0
    history_rows: int = 0
    history_faults: int = 0


@attrs.define
class _Armed:
    """One trade-history fault: how many more requests (``None``: any) until when."""

    count: int | None
    until: float
    value: Any = None

    def take(self) -> Any:
        """The fault's value if it applies to this request (and count it), else ``None``."""
        if trio.current_time() >= self.until or self.count == 0:
            return None
        if self.count is not None:
            self.count -= 1
        return self.value if self.value is not None else True


def _arm(count: int | None, seconds: float | None, value: Any = None) -> _Armed:
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0, got {count!r}")
    until = math.inf if seconds is None else trio.current_time() + seconds
    return _Armed(count, until, value)


#: What the history faults answer a refused request with when ``status=None``: no answer.
CLOSE = "close"


class Faults:
    """Faults to inject on command; see the module docstring.  ``exchange.faults``."""

    def __init__(self, market_for: Callable[[str], Market | None], counters: _Counters) -> None:
        self._market_for = market_for
        self._counters = counters
        self._drop: dict[tuple[str, str], int] = {}
        self._reorder: set[tuple[str, str]] = set()
        self._held: dict[tuple[str, str], bytes] = {}  # by (session, stream name)
        self._stale: dict[tuple[str, str], dict[str, Any]] = {}
        #: True while any send-path fault is armed or held: the server's fast check.
        self.armed = False
        self._refuse: _Armed | None = None
        self._limit: _Armed | None = None
        self._slow: _Armed | None = None
        self._short: _Armed | None = None

    # -- trade-history faults (REST) ---------------------------------------------

    def refuse_history(self, count: int | None = None, *, seconds: float | None = None,
                       status: int | None = 503) -> None:
        """Refuse the next ``count`` trade-history requests (or all, for ``seconds``).

        Neither bound: every request until ``refuse_history(0)``.  ``status``
        is the answer; ``None`` closes the connection without one.
        """
        self._refuse = _arm(count, seconds, CLOSE if status is None else status)

    def rate_limit_history(self, count: int | None = 1, *, retry_after: int = 5,
                           status: int = 429, seconds: float | None = None) -> None:
        """Answer the next ``count`` trade-history requests ``status`` with ``Retry-After``."""
        if status not in (418, 429):
            raise ValueError(f"status must be 418 or 429, got {status!r}")
        self._limit = _arm(count, seconds, (status, retry_after))

    def slow_history(self, delay: float, count: int | None = None, *,
                     seconds: float | None = None) -> None:
        """Answer the next ``count`` trade-history requests only after ``delay`` seconds."""
        self._slow = _arm(count, seconds, delay)

    def short_history_pages(self, size: int, count: int | None = None, *,
                            seconds: float | None = None) -> None:
        """Cut the next ``count`` trade-history pages to at most ``size`` rows (a partial page)."""
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size!r}")
        self._short = _arm(count, seconds, size)

    def take_history_fault(self, kind: str) -> Any:
        """The armed fault's value for this request (``kind``: refuse, limit, slow, short)."""
        armed = {"refuse": self._refuse, "limit": self._limit, "slow": self._slow,
                 "short": self._short}[kind]
        if armed is None:
            return None
        value = armed.take()
        if value is not None and kind != "slow":
            self._counters.history_faults += 1
        return value

    def drop_depth(self, symbol: str, count: int = 1, *, session: str = "") -> None:
        """Do not send the next ``count`` diff-depth events of ``symbol``: a gap."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        key = (session, symbol.lower())
        self._drop[key] = self._drop.get(key, 0) + count
        self.armed = True

    def reorder_depth(self, symbol: str, *, session: str = "") -> None:
        """Send the next diff-depth event of ``symbol`` after the one that follows it."""
        self._reorder.add((session, symbol.lower()))
        self.armed = True

    def stale_snapshot(self, symbol: str, *, session: str = "") -> None:
        """Capture ``symbol``'s book now; the next depth request for it gets this capture.

        Raises ``LookupError`` if no connection is open in ``session``.
        """
        market = self._market_for(session)
        if market is None:
            raise LookupError(f"no stream connection is open in session {session!r}")
        self._stale[(session, symbol.lower())] = market.depth_snapshot(symbol, MAX_DEPTH_LIMIT)

    def take_stale(self, session: str, symbol: str) -> dict[str, Any] | None:
        snapshot = self._stale.pop((session, symbol.lower()), None)
        if snapshot is not None:
            self._counters.stale_served += 1
        return snapshot

    def filter(self, session: str, stream: Stream, batch: list[bytes]) -> list[bytes]:
        """What to send instead of ``batch`` for ``stream`` on this tick (the send-path hook)."""
        if stream.kind != "depth" or stream.symbol is None:
            return batch
        key = (session, stream.symbol)
        held_key = (session, stream.name)
        out = list(batch)
        to_drop = self._drop.get(key, 0)
        while to_drop and out:
            out.pop(0)
            to_drop -= 1
            self._counters.depth_dropped += 1
        if key in self._drop:
            if to_drop:
                self._drop[key] = to_drop
            else:
                del self._drop[key]
        if held_key in self._held:
            if out:  # a tick without an event of this stream does not release it
                out.append(self._held.pop(held_key))  # after the event that followed it
        elif key in self._reorder and out:
            self._reorder.discard(key)
            self._held[(session, stream.name)] = out.pop(0)
            self._counters.depth_reordered += 1
        self.armed = bool(self._drop or self._reorder or self._held)
        return out


class RestEndpoint:
    """The HTTP side of a :class:`~trio_feed.exchange.LocalExchange`.

    ``register``/``unregister`` track the open WebSocket connections' markets
    by session; :meth:`serve` runs the server (``nursery.start`` it).
    ``weight_limit`` may be changed at any time.  ``venue`` is the market
    whose snapshot endpoint, depth limit and weights are served
    (``/fapi/v1/depth`` for USD-M); its weight budget is the default limit.
    """

    def __init__(self, host: str, *, weight_limit: int | None = None,
                 symbols: Iterable[str] | None = None, venue: Venue = SPOT) -> None:
        self.host = host
        self.venue = venue
        if weight_limit is None:
            weight_limit = venue.weight_limit
        #: The symbols the exchange lists (``None``: whatever the market trades).
        self.symbols = None if symbols is None else frozenset(s.lower() for s in symbols)
        self.port = 0
        self.weight_limit = weight_limit
        self._sessions: dict[str, list[Market]] = {}
        #: The exchange's shared market, if it has one: trade history reads it always.
        self.shared: Market | None = None
        self._counters = _Counters()
        self.faults = Faults(self.market_for, self._counters)
        self._minute = -1
        self._used = 0

    @property
    def url(self) -> str:
        """``http://host:port`` without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def statistics(self) -> RestStatistics:
        """Counters since the exchange opened; ``weight_used`` is this minute's."""
        c = self._counters
        self._roll_minute()
        return RestStatistics(
            requests=c.requests, snapshots=c.snapshots, rate_limited=c.rate_limited,
            weight_used=self._used, stale_served=c.stale_served,
            depth_dropped=c.depth_dropped, depth_reordered=c.depth_reordered,
            history_requests=c.history_requests, history_rows=c.history_rows,
            history_faults=c.history_faults,
        )

    # -- sessions ------------------------------------------------------------------

    def register(self, session: str, market: Market) -> None:
        self._sessions.setdefault(session, []).append(market)

    def unregister(self, session: str, market: Market) -> None:
        markets = self._sessions.get(session, [])
        if market in markets:
            markets.remove(market)
        if not markets:
            self._sessions.pop(session, None)

    def market_for(self, session: str) -> Market | None:
        """The market of the session's most recent open connection, if any."""
        markets = self._sessions.get(session)
        return markets[-1] if markets else None

    # -- HTTP -----------------------------------------------------------------------

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host`` (port chosen by the OS) and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            serve = partial(trio.serve_tcp, self._serve_connection, 0, host=self.host)
            listeners = await nursery.start(serve)
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self.port)

    @trio.lowlevel.enable_ki_protection  # a task's root (EXC3)
    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_BYTES)
        async with stream:
            while True:
                try:
                    request = await self._read_request(conn, stream)
                    if request is None:
                        return
                    refused = None
                    if self._is_history(request):
                        delay = self.faults.take_history_fault("slow")
                        if delay is not None:
                            await trio.sleep(delay)
                        refused = self.faults.take_history_fault("refuse")
                        if refused == CLOSE:
                            return  # no answer at all: the client sees the connection close
                    if refused is not None:
                        self._counters.requests += 1
                        status, headers, body = _json(int(refused), {
                            "code": -1, "msg": "refused (fault injected)"})
                    else:
                        status, headers, body = self.respond(request)
                except h11.RemoteProtocolError as exc:
                    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                        return
                    status, headers, body = _json(exc.error_status_hint,
                                                  {"code": -1, "msg": str(exc)})
                    headers.append((b"connection", b"close"))
                try:
                    await stream.send_all(conn.send(h11.Response(status_code=status,
                                                                 headers=headers)))
                    await stream.send_all(conn.send(h11.Data(data=body)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    @staticmethod
    async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None
            # h11.Data: a body we ignore

    def respond(self, request: h11.Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``(status, headers, body)`` for one request: the whole routing, without I/O."""
        self._counters.requests += 1
        session, target = split_session(request.target.decode("ascii", "replace"))
        parts = urlsplit(target)
        if request.method != b"GET":
            return _json(405, {"code": -1, "msg": "method not allowed"})
        venue = self.venue
        if parts.path == "/api/v3/ping":
            return self._weighed(1, {})
        if parts.path in _HISTORY:
            return self._history(session, parts.path, parts.query)
        if parts.path == SPOT.klines_path:
            return self._klines(session, parts.query)
        if parts.path != venue.snapshot_path:
            return _json(404, {"code": -1, "msg": f"unknown path {parts.path!r}: the local "
                                                  f"exchange serves {venue.snapshot_path}, "
                                                  f"{', '.join(_HISTORY)} and /api/v3/ping"})
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        symbol = query.get("symbol", "")
        if not symbol:
            return _json(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not "
                                                     "sent, was empty/null, or malformed."})
        text = query.get("limit", "100")
        if not text.isascii() or not text.isdigit() or int(text) < 1:
            return _json(400, {"code": -1100, "msg": "Illegal characters found in parameter "
                                                     "'limit'; legal range is '^[0-9]{1,20}$'."})
        limit = min(int(text), venue.max_snapshot_limit)
        if self.symbols is not None and symbol.lower() not in self.symbols:
            return _json(400, {"code": INVALID_SYMBOL_CODE, "msg": "Invalid symbol."})
        market = self.market_for(session)
        if market is None:
            return _json(503, {"code": -1, "msg": f"no stream connection is open in session "
                                                  f"{session!r}: the local exchange serves the "
                                                  "book of that connection's market"})
        if symbol.lower() not in market.symbols:
            return _json(400, {"code": INVALID_SYMBOL_CODE, "msg": "Invalid symbol."})
        weight = venue.depth_weight(limit)
        if not self._charge(weight):
            return self._too_many()
        self._counters.snapshots += 1
        snapshot = self.faults.take_stale(session, symbol)
        if snapshot is None:
            snapshot = market.depth_snapshot(symbol, limit)
        else:
            snapshot = {**snapshot, "bids": snapshot["bids"][:limit],
                        "asks": snapshot["asks"][:limit]}
        return _json(200, snapshot, self._used)

    # -- trade history --------------------------------------------------------------

    @staticmethod
    def _is_history(request: h11.Request) -> bool:
        target = split_session(request.target.decode("ascii", "replace"))[1]
        return urlsplit(target).path in _HISTORY

    def _history(self, session: str, path: str,
                 query_text: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        faults = self.faults
        limited = faults.take_history_fault("limit")
        if limited is not None:
            status, retry = limited
            self._counters.rate_limited += 1
            answer, headers, body = _json(status, {"code": -1003, "msg": "Too many requests "
                                                   "(fault injected)."}, self._used)
            headers.append((b"retry-after", str(retry).encode()))
            return answer, headers, body
        query = dict(parse_qsl(query_text, keep_blank_values=True))
        symbol = query.get("symbol", "")
        if not symbol:
            return _json(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not "
                                                     "sent, was empty/null, or malformed."})
        limit_text = query.get("limit", "500")
        from_text = query.get("fromId")
        for name, text in (("limit", limit_text), ("fromId", from_text)):
            if text is not None and (not text.isascii() or not text.isdigit()):
                return _json(400, {"code": -1100, "msg": f"Illegal characters found in "
                                                         f"parameter '{name}'."})
        limit = min(max(int(limit_text), 1), SPOT.max_trades_limit)
        market = self.shared or self.market_for(session)
        if (self.symbols is not None and symbol.lower() not in self.symbols) or (
                market is not None and symbol.lower() not in market.symbols):
            return _json(400, {"code": INVALID_SYMBOL_CODE, "msg": "Invalid symbol."})
        if market is None:
            return _json(503, {"code": -1, "msg": f"no stream connection is open in session "
                                                  f"{session!r}"})
        if not self._charge(_HISTORY[path]):
            return self._too_many()
        short = faults.take_history_fault("short")
        if short is not None:
            limit = min(limit, int(short))
        from_id = None if from_text is None else int(from_text)
        if path == SPOT.agg_trades_path:
            rows = market.agg_trades(symbol, from_id, limit)
        else:
            rows = market.historical_trades(symbol, from_id, limit)
        self._counters.history_requests += 1
        self._counters.history_rows += len(rows)
        return _json(200, rows, self._used)

    def _klines(self, session: str,
                query_text: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        query = dict(parse_qsl(query_text, keep_blank_values=True))
        symbol, interval = query.get("symbol", ""), query.get("interval", "")
        if not symbol or interval not in KLINE_INTERVALS:
            return _json(400, {"code": -1120, "msg": "Invalid interval or missing symbol."})
        numbers: dict[str, int] = {}
        for name in ("startTime", "endTime", "limit"):
            text = query.get(name)
            if text is not None:
                if not text.isascii() or not text.isdigit():
                    return _json(400, {"code": -1100, "msg": f"Illegal characters found in "
                                                             f"parameter '{name}'."})
                numbers[name] = int(text)
        market = self.shared or self.market_for(session)
        if market is None or symbol.lower() not in market.symbols:
            return _json(400, {"code": INVALID_SYMBOL_CODE, "msg": "Invalid symbol."})
        if not self._charge(SPOT.klines_weight):
            return self._too_many()
        limit = min(max(numbers.get("limit", 500), 1), SPOT.max_trades_limit)
        rows = market.klines(symbol, interval, numbers.get("startTime"),
                             numbers.get("endTime"), limit)
        self._counters.history_requests += 1
        self._counters.history_rows += len(rows)
        return _json(200, rows, self._used)

    # -- weight -----------------------------------------------------------------------

    def _roll_minute(self) -> int:
        now = trio.current_time()
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used = minute, 0
        return minute

    def _charge(self, weight: int) -> bool:
        self._roll_minute()
        if self._used + weight > self.weight_limit:
            return False
        self._used += weight
        return True

    def _weighed(self, weight: int, body: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if not self._charge(weight):
            return self._too_many()
        return _json(200, body, self._used)

    def _too_many(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self._counters.rate_limited += 1
        retry = max(1, math.ceil((self._minute + 1) * 60 - trio.current_time()))
        status, headers, body = _json(429, {
            "code": -1003,
            "msg": f"Too much request weight used; current limit is {self.weight_limit} "
                   "request weight per 1 MINUTE. Please use WebSocket Streams for live "
                   "updates to avoid polling the API.",
        }, self._used)
        headers.append((b"retry-after", str(retry).encode()))
        return status, headers, body


def _json(status: int, body: Any,
          used: int | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    data = orjson.dumps(body)
    headers = [(b"content-type", b"application/json;charset=UTF-8"),
               (b"content-length", str(len(data)).encode())]
    if used is not None:
        headers.append((b"x-mbx-used-weight-1m", str(used).encode()))
    return status, headers, data
