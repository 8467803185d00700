"""Binance's connection rules and REST snapshot rules, one record per market.

Every number a client or the local exchange needs about a Binance market
lives here once: where it is, how many streams a connection may carry, how
fast a client may talk, how often the server pings and how long it waits for
the pong, how long a connection lives, how many connection attempts an IP
may make, where the depth snapshot is and what it weighs, and which URL
path (route) serves each stream kind.  The feed's
defaults, the order books' weight budget, the CLI and the local exchange all
read these records, so they cannot drift apart.

Sources: ``STREAMS.md`` §0, §2, §5 and §8, checked against Binance's current
pages ("WebSocket Streams for Binance" for spot, "Websocket Market Streams"
and "Order Book" for USD-M futures); the trade-history endpoints against
spot's "Market data endpoints" (``aggTrades`` weight 4, ``historicalTrades``
weight 25 and no longer a MARKET_DATA endpoint, ``klines`` weight 2, pages of
at most 1000) and USD-M's "Compressed/Aggregate Trades List" (weight 20).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .._value import Value
from ._sequence import Rules

__all__ = [
    "INVALID_SYMBOL_CODE",
    "MARKETS",
    "SPOT",
    "USDM_FUTURES",
    "Venue",
    "venue_for",
    "venue_named",
]

#: The REST error code for a symbol the exchange does not list (``"Invalid symbol."``).
INVALID_SYMBOL_CODE = -1121


@attrs.frozen(repr=False)
class Venue(Value):
    """One Binance market's rules.  Times are seconds; weights are REQUEST_WEIGHT units.

    ``stream_hosts`` are the WebSocket base URLs, the first one the default;
    ``rest_url`` the REST base URL.  ``streams_per_connection``: the most
    streams one connection may carry.  ``client_messages_per_second``: what a
    client may send on one connection (pings, pongs and JSON control messages
    all count).  ``connection_attempts`` per ``attempts_window`` per IP
    (``None`` where Binance documents no limit).  ``ping_interval``: how often
    the server pings; ``pong_timeout``: how long it waits for the pong.
    ``connection_lifetime``: when the server drops a connection.
    ``snapshot_path`` is the REST depth endpoint, ``max_snapshot_limit`` its
    largest ``limit``, ``snapshot_weights`` its weight table (``(largest
    limit, weight)`` pairs in increasing order) and ``weight_limit`` the
    REQUEST_WEIGHT an IP may spend per minute.  ``sequence`` says which
    update-id rules its diff-depth stream follows.

    Trade history (what a feed's back-fill reads): ``agg_trades_path`` serves
    aggregate trades by ``fromId`` at ``agg_trades_weight`` per request,
    ``trades_path`` plain trades by ``fromId`` at ``trades_weight``; both
    return at most
    ``max_trades_limit`` rows a page, and ``trades_need_key`` says whether
    the trade endpoint wants an ``X-MBX-APIKEY`` header.  ``klines_path``
    serves closed candles by time at ``klines_weight`` (at the largest
    ``limit``).

    ``market`` is the short name callers pass as ``market=`` (``"spot"``,
    ``"usdm"``).  ``routes`` maps a stream kind to the URL path prefix that
    serves it (``/public``, ``/market``); a kind not listed goes to
    ``default_route`` (``""``: no prefix, as on spot).  ``legacy_route`` is
    the route an unrouted ``/ws`` or ``/stream`` connection still serves
    (``None``: it serves every kind).  ``quiet_after`` is how long a
    connection carrying only event-driven streams may be silent before it is
    taken for dead: a little more than one server ping interval, since the
    server's pings are then the only traffic.
    """

    name: str
    stream_hosts: tuple[str, ...]
    rest_url: str
    streams_per_connection: int
    client_messages_per_second: int
    connection_attempts: int | None
    attempts_window: float
    ping_interval: float
    pong_timeout: float
    connection_lifetime: float
    snapshot_path: str
    max_snapshot_limit: int
    snapshot_weights: tuple[tuple[int, int], ...]
    weight_limit: int
    sequence: Rules
    agg_trades_path: str
    agg_trades_weight: int
    trades_path: str
    trades_weight: int
    trades_need_key: bool
    max_trades_limit: int
    klines_path: str
    klines_weight: int
    market: str = "spot"
    routes: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    default_route: str = ""
    legacy_route: str | None = None
    quiet_after: float = 60.0

    @property
    def base_url(self) -> str:
        """The default stream host."""
        return self.stream_hosts[0]

    @property
    def route_names(self) -> tuple[str, ...]:
        """Every route this market serves, ``""`` for none."""
        return tuple(dict.fromkeys([*self.routes.values(), self.default_route]))

    def route(self, kind: str) -> str:
        """The URL path prefix that serves streams of ``kind`` (``""`` for none)."""
        return self.routes.get(kind, self.default_route)

    def serves(self, route: str, kind: str) -> bool:
        """Does a connection opened on ``route`` (``""``: unrouted) receive ``kind``'s data?

        Binance accepts a stream on the wrong route and then sends it
        nothing; this is the rule that decides it.
        """
        if route == "" and self.legacy_route is not None:
            route = self.legacy_route
        if route == "" and not self.routes and not self.default_route:
            return True
        return self.route(kind) == route

    def depth_weight(self, limit: int) -> int:
        """The request weight of a depth snapshot of ``limit`` levels.

        A ``limit`` above ``max_snapshot_limit`` is capped first, as Binance
        does; one below 1 raises ``ValueError``.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        limit = min(limit, self.max_snapshot_limit)
        for largest, weight in self.snapshot_weights:
            if limit <= largest:
                return weight
        return self.snapshot_weights[-1][1]


#: Binance spot.  Ping every 20 s and a one-minute pong deadline since the
#: rollout of February 2025 (3 min and 10 min before).
SPOT = Venue(
    name="spot",
    stream_hosts=("wss://stream.binance.com:9443", "wss://stream.binance.com:443",
                  "wss://data-stream.binance.vision"),
    rest_url="https://api.binance.com",
    streams_per_connection=1024,
    client_messages_per_second=5,
    connection_attempts=300,
    attempts_window=300.0,
    ping_interval=20.0,
    pong_timeout=60.0,
    connection_lifetime=24 * 3600.0,
    snapshot_path="/api/v3/depth",
    max_snapshot_limit=5000,
    snapshot_weights=((100, 5), (500, 25), (1000, 50), (5000, 250)),
    weight_limit=6000,
    sequence=Rules.SPOT,
    agg_trades_path="/api/v3/aggTrades",
    agg_trades_weight=4,
    trades_path="/api/v3/historicalTrades",
    trades_weight=25,
    trades_need_key=False,
    max_trades_limit=1000,
    klines_path="/api/v3/klines",
    klines_weight=2,
    market="spot",
    quiet_after=60.0,
)

#: The USD-M stream kinds served on ``/public`` (book data); every other
#: public kind is on ``/market``.  Source: the "Websocket Market Streams"
#: pages of developers.binance.com (each stream page names its URL path), and
#: the routed-URL change notice retiring unrouted URLs on 2026-04-23.
USDM_PUBLIC_KINDS = ("depth", "depth_partial", "bookTicker", "bookTicker_all", "rpiDepth")

#: Binance USD-M futures, as its current "Websocket Market Streams" page
#: states them: 1024 streams per connection (older copies say 200), 10
#: messages per second, a ping every 3 minutes and a 10-minute pong deadline.
#: It documents no connection-attempt limit for market streams.  An unrouted
#: connection only receives ``/public`` data; ``/market`` streams on it stay
#: silent.  With pings every 3 minutes, a quiet connection is only taken for
#: dead after 4 minutes of silence.
USDM_FUTURES = Venue(
    name="usdm_futures",
    stream_hosts=("wss://fstream.binance.com",),
    rest_url="https://fapi.binance.com",
    streams_per_connection=1024,
    client_messages_per_second=10,
    connection_attempts=None,
    attempts_window=300.0,
    ping_interval=180.0,
    pong_timeout=600.0,
    connection_lifetime=24 * 3600.0,
    snapshot_path="/fapi/v1/depth",
    max_snapshot_limit=1000,
    snapshot_weights=((50, 2), (100, 5), (500, 10), (1000, 20)),
    weight_limit=2400,
    sequence=Rules.USDM_FUTURES,
    agg_trades_path="/fapi/v1/aggTrades",
    agg_trades_weight=20,
    # /fapi/v1/historicalTrades exists but is MARKET_DATA: it wants an API key.
    trades_path="/fapi/v1/historicalTrades",
    trades_weight=20,
    trades_need_key=True,
    max_trades_limit=1000,
    klines_path="/fapi/v1/klines",
    klines_weight=5,
    market="usdm",
    routes=dict.fromkeys(USDM_PUBLIC_KINDS, "/public"),
    default_route="/market",
    legacy_route="/public",
    quiet_after=240.0,
)

#: COIN-M futures (``wss://dstream.binance.com``) is not modelled yet.  Its
#: current "Websocket Market Streams" page gives 1024 streams per connection,
#: 10 messages per second and the same 3-minute ping and 10-minute pong
#: deadline, with no routed paths; its events add ``ps`` (the pair).  Its REST
#: depth weights were not checked, so it has no record here.

#: Every market by its ``market=`` name.
MARKETS: Mapping[str, Venue] = {SPOT.market: SPOT, USDM_FUTURES.market: USDM_FUTURES}


def venue_for(rules: Rules | str) -> Venue:
    """The market whose diff-depth stream follows ``rules``."""
    return USDM_FUTURES if Rules(rules) is Rules.USDM_FUTURES else SPOT


def venue_named(market: str | Venue) -> Venue:
    """The market called ``market`` (``"spot"``, ``"usdm"``); ``ValueError`` for another name.

    The book rules' names (``"usdm_futures"``) are accepted too.
    """
    if isinstance(market, Venue):
        return market
    venue = MARKETS.get(market)
    if venue is None:
        for candidate in MARKETS.values():
            if market == candidate.name:
                return candidate
        raise ValueError(f"unknown market {market!r}: use one of {sorted(MARKETS)}")
    return venue
