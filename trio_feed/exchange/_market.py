"""A deterministic, self-consistent simulated spot market.

The local exchange needs data that a client can *check*, not just parse.  A
random payload generator would pass a decoder test and hide every bug in
order-book syncing, so instead this module runs a small market and derives
every stream from it: each symbol has a true order book, a taker flow that
trades against it, and statistics accumulated from those same trades.  What a
client rebuilds from the diff-depth stream is therefore the book that
``depth_snapshot`` reports, ``bookTicker`` agrees with both, and every ticker
and kline can be recomputed from the trades that were sent.

The module is pure: no trio, no sockets, and the wall clock only when asked
for (:func:`wall_clock_ms`, the exchange's default clock).  The server steps
one :class:`Market` per connection and sends what :meth:`Market.encoded`
returns.

Theory of operation
-------------------

Time is a simulated clock in milliseconds.  It starts at :data:`EPOCH_MS`
and every :meth:`Market.step` (a *tick*) advances it by :data:`TICK_MS`,
100 ms, the finest cadence Binance documents for JSON streams.  A ``clock``
callable may replace it (it must return epoch milliseconds); the market then
reads it once per tick and never lets time go backwards.  Every cadence below
is "the first tick at or after each boundary", so both clocks behave the same.
The local exchange passes the wall clock by default, so that event times are
real and a client's lag is measured against them, and starts each market's
ids from that clock (:func:`ids_from_clock`), so that a restarted exchange
continues its ids forward.

One ``random.Random(seed)`` drives everything, and it is consulted only inside
:meth:`~Market.step`, in a fixed order over the symbols.  Building payloads
never draws a random number.  So:

MKT1: the market's history depends only on the seed, the symbols and the
    clock, never on which streams anybody asks for or when.

Each tick, for each symbol in order:

1. a hidden *fair price* takes a random-walk step on the symbol's tick grid;
2. with probability 0.85 one taker order arrives.  It trades only against
   the best level on the other side, filling from one to three maker orders
   at that one price, so it makes one ``aggTrade`` covering one to three
   consecutive ``trade`` ids.  All its fills share one trade time ``T``, drawn
   in ``[previous tick, this tick)``;
3. one to three maker updates add, resize or cancel levels near the fair
   price, and the book is kept between 40 and 120 levels per side;
4. with probability 0.005 an off-book ``blockTrade`` is printed, with its
   own id sequence.  Block trades do not enter tickers or klines.

MKT2: every change to a book level consumes exactly one update id, and
    nothing else does.  So a tick always has at least one update (the makers
    guarantee it), a diff-depth event covering ticks ``[a..b]`` has
    ``U = (last id before a) + 1`` and ``u = (last id of b)``, and
    consecutive events of one depth stream chain with ``U == previous u + 1``.

MKT3: a bid is never placed at or above the best ask, nor an ask at or
    below the best bid, so the book is never crossed.

``bookTicker`` is sent on every tick where the best bid or ask (price or
quantity) changed, and its ``u`` is the last update id of that tick: the
same id the ``@depth@100ms`` event of that tick ends with, so a client can
cross-check them.  Partial depth and ``depth_snapshot`` report
``lastUpdateId`` the same way.

Statistics come from bars.  Trades go into the current one-second bar; a
closed second merges into the current minute bar; a closed minute merges
into one accumulator per kline interval and time zone, and into a history of
minute bars that the rolling tickers sum over (with prefix sums, so a 24 h
ticker costs a slice, not a scan).  A kline stream sends the open candle on
its cadence (1000 ms for ``1s``, 2000 ms otherwise) and, on the tick where a
candle closes, that candle with ``x: true`` instead.  Rolling windows start at
a whole minute (``O = floor_minute(C - window)``), as Binance documents for
``@ticker_<w>``; the 24 h ``@ticker`` and ``@miniTicker`` use the same rule.

Prices and quantities are integers internally: price in ticks, quantity in
lots, formatted at the edge as Binance does, with eight decimals.

USD-M futures.  ``Market(..., market="usdm")`` runs the same market and
speaks the futures payload forms (``STREAMS.md`` section 8): depth events
carry ``T`` and ``pu`` (the ``u`` of the stream's previous event, so
``pu == U - 1`` here) and come every 250 ms, or 500 ms or 100 ms as asked;
partial depth is sent in that same diff form (the top ``N`` levels, with
``U``/``u``/``pu``); ``bookTicker`` has ``e``, ``E`` and ``T``;
``aggTrade`` has ``nq`` (equal to ``q``: the simulation has no RPI orders)
and no ``M``; the 24 h ticker has no ``x``/``b``/``B``/``a``/``A``.  It adds
mark price (every 3 s, or 1 s; the fair price, a fixed funding rate),
liquidations (a ``forceOrder`` on the ticks that print an off-book block,
which futures does not stream), continuous-contract klines (the symbol's
klines), a one-component composite index, ``!bookTicker`` and
``@rpiDepth@500ms`` (the 500 ms diff: no RPI orders).  ``!contractInfo`` and
the asset indexes send nothing: the simulation lists no contract changes
and no multi-assets indexes.  The snapshot (``depth_snapshot``) adds ``E``
and ``T``.
"""

from __future__ import annotations

import calendar
import datetime
import random
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from math import log as _log
from typing import Any

import attrs
import orjson

from ..binance._limits import SPOT, USDM_FUTURES
from ..binance._streams import KLINE_INTERVALS, TICKER_WINDOWS, Stream, interval_ms, parse_stream

__all__ = [
    "DEFAULT_SYMBOLS",
    "EPOCH_MS",
    "IDS_PER_MS",
    "TICK_MS",
    "Market",
    "SymbolSpec",
    "format_decimal",
    "ids_from_clock",
    "wall_clock_ms",
]

#: Where the simulated clock starts: 2023-11-14T22:13:20Z, in ms.
EPOCH_MS = 1_700_000_000_000
#: Simulated milliseconds per tick.
TICK_MS = 100
DEFAULT_SYMBOLS = ("btcusdt", "ethusdt", "bnbusdt")
#: The REST depth endpoint caps ``limit`` here.
MAX_DEPTH_LIMIT = SPOT.max_snapshot_limit

_SCALE = 100_000_000
_MINUTE = 60_000
_DAY = 86_400_000
_WEEK = 7 * _DAY
_MONDAY = 4 * _DAY  # 1970-01-05, the first Monday after the epoch
_PLUS_8 = 8 * 3_600_000

_MIN_LEVELS = 40
_MAX_LEVELS = 120
_FIRST_UPDATE_ID = 1_000_000
_FIRST_TRADE_ID = 5_000_000
_FIRST_AGG_ID = 2_000_000
_FIRST_BLOCK_ID = 500
#: The USD-M depth cadences beside spot's 100 and 1000 ms (``@depth`` is 250 ms).
_USDM_DEPTH_PERIODS = (250, 500)
#: Every cadence a payload may be due on, in ms (3000: the USD-M mark price).
_PERIODS = (100, 250, 500, 1000, 2000, 3000)
_FUNDING_INTERVAL = 8 * 3_600_000

#: Trades (and aggregate trades) each symbol keeps for the REST history endpoints; the
#: oldest half is forgotten when a symbol holds twice as many.
HISTORY_LIMIT = 200_000
#: Closed candles each symbol keeps per interval for REST klines (the same halving).
KLINE_HISTORY_LIMIT = 20_000

_FIXED_INTERVALS = {interval: length for interval in KLINE_INTERVALS
                    if (length := interval_ms(interval)) is not None}
_WINDOWS = {window: _FIXED_INTERVALS[window] for window in TICKER_WINDOWS}
_AVG_PRICE_WINDOW = 5 * _MINUTE


def wall_clock_ms() -> int:
    """The wall clock in epoch milliseconds: the local exchange's default clock."""
    return time.time_ns() // 1_000_000


#: Ids a market may consume per millisecond of its clock, per symbol and id
#: sequence, and still start below a market started a millisecond later.
IDS_PER_MS = 1000


def ids_from_clock(clock: Callable[[], int]) -> int:
    """An ``id_base`` above every id of a market started earlier on ``clock``.

    ``clock() * IDS_PER_MS``: a market that consumed fewer than ``IDS_PER_MS``
    ids per millisecond (the local exchange makes a few per tick, and far
    fewer than 1000 ticks per millisecond) stays below a later one's first id.
    """
    return int(clock()) * IDS_PER_MS


def format_decimal(units: int) -> str:
    """Format an integer count of 1e-8 units the way Binance does: ``"25000.10000000"``."""
    if units < 0:
        return "-" + format_decimal(-units)
    whole, frac = divmod(units, _SCALE)
    return f"{whole}.{frac:08d}"


def _format_percent(change: int, base: int) -> str:
    if base <= 0:
        return "0.000"
    milli = abs(change) * 100_000 // base
    sign = "-" if change < 0 and milli else ""
    return f"{sign}{milli // 1000}.{milli % 1000:03d}"


@attrs.frozen
class SymbolSpec:
    """How one symbol trades: all amounts in 1e-8 units.

    ``price`` is the starting price, ``tick`` the price step, ``lot`` the
    quantity step and ``size`` the typical resting level, in lots.
    """

    price: int
    tick: int
    lot: int
    size: int

    @classmethod
    def for_symbol(cls, symbol: str) -> SymbolSpec:
        """The spec of a known symbol, or a stable made-up one (from a CRC of the name)."""
        known = _KNOWN_SPECS.get(symbol)
        if known is not None:
            return known
        dollars = 1 + zlib.crc32(symbol.encode()) % 500
        return cls(price=dollars * _SCALE, tick=10_000, lot=1_000_000, size=2_000)


_KNOWN_SPECS = {
    "btcusdt": SymbolSpec(price=25_000 * _SCALE, tick=1_000_000, lot=1_000, size=5_000),
    "ethusdt": SymbolSpec(price=1_600 * _SCALE, tick=1_000_000, lot=10_000, size=5_000),
    "bnbusdt": SymbolSpec(price=215 * _SCALE, tick=1_000_000, lot=100_000, size=2_000),
}


def candle_bounds(interval: str, offset: int, t: int) -> tuple[int, int]:
    """``(open_time, end)`` of the ``interval`` candle containing ``t``.

    ``offset`` is the time zone in ms (0, or 8 h for the ``@+08:00``
    variant): candles open on local boundaries, but times stay UTC epoch ms.
    Weeks open on Monday, months on the first of the month.
    """
    local = t + offset
    if interval == "1M":
        day = datetime.datetime.fromtimestamp(local // 1000, datetime.UTC)
        year, month = day.year, day.month
        start = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        end = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    elif interval == "1w":
        start = (local - _MONDAY) // _WEEK * _WEEK + _MONDAY
        end = start + _WEEK
    else:
        length = _FIXED_INTERVALS[interval]
        start = local // length * length
        end = start + length
    return start - offset, end - offset


class _Bar:
    """OHLC and volume over a time span; prices in ticks, volumes in lots.

    ``qv`` is the sum of price × quantity in ticks × lots; ``bv``/``bq``
    are the taker-buy parts.  ``f``/``L`` are the first and last trade ids.
    """

    __slots__ = ("L", "bq", "bv", "c", "f", "h", "l", "n", "o", "qv", "t", "v")

    def __init__(self, t: int, price: int, qty: int, trade_id: int, n: int, buy: bool) -> None:
        self.t = t
        self.o = self.h = self.l = self.c = price
        self.v = qty
        self.qv = price * qty
        self.bv = qty if buy else 0
        self.bq = self.qv if buy else 0
        self.f = trade_id
        self.L = trade_id + n - 1
        self.n = n

    def add(self, price: int, qty: int, last_id: int, n: int, buy: bool) -> None:
        if price > self.h:
            self.h = price
        elif price < self.l:
            self.l = price
        self.c = price
        self.v += qty
        quote = price * qty
        self.qv += quote
        if buy:
            self.bv += qty
            self.bq += quote
        self.L = last_id
        self.n += n

    def copy(self) -> _Bar:
        other = _Bar.__new__(_Bar)
        for name in _Bar.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def merge(self, later: _Bar) -> None:
        """Fold in a bar that starts after this one."""
        if later.h > self.h:
            self.h = later.h
        if later.l < self.l:
            self.l = later.l
        self.c = later.c
        self.v += later.v
        self.qv += later.qv
        self.bv += later.bv
        self.bq += later.bq
        self.L = later.L
        self.n += later.n


def _merged(*bars: _Bar | None) -> _Bar | None:
    result: _Bar | None = None
    for bar in bars:
        if bar is None:
            continue
        if result is None:
            result = bar.copy()
        else:
            result.merge(bar)
    return result


class _Diff:
    """Book changes since a depth stream's last event: price → new quantity."""

    __slots__ = ("asks", "bids", "first_id")

    def __init__(self, first_id: int) -> None:
        self.first_id = first_id
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}


class _Kline:
    __slots__ = ("bar", "end", "interval", "offset", "start")

    def __init__(self, interval: str, offset: int, t: int) -> None:
        self.interval = interval
        self.offset = offset
        self.start, self.end = candle_bounds(interval, offset, t)
        self.bar: _Bar | None = None


_Closed = tuple[int, int, "_Bar | None", int]  # (open time, end, bar, close price if empty)


class _Symbol:
    """One symbol's book, trades and statistics.  See the module docstring."""

    def __init__(self, name: str, spec: SymbolSpec, now: int, id_base: int = 0,
                 periods: tuple[int, ...] = ()) -> None:
        self.name = name
        self.upper = name.upper()
        self.spec = spec
        self.tick = spec.tick
        self.lot = spec.lot
        self.fair = spec.price // spec.tick
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.best_bid = 0
        self.best_ask = 0
        self.update_id = id_base + _FIRST_UPDATE_ID
        self.trade_id = id_base + _FIRST_TRADE_ID - 1
        self.agg_id = id_base + _FIRST_AGG_ID - 1
        self.block_id = id_base + _FIRST_BLOCK_ID - 1
        self.last_price = self.fair
        self.last_qty = 0
        self.last_trade_time = now
        self.fast_diff = _Diff(self.update_id + 1)  # since the last 100 ms boundary
        self.slow_diff = _Diff(self.update_id + 1)  # since the last 1000 ms boundary
        #: More depth cadences (USD-M: 250 and 500 ms): period -> changes since its boundary.
        self.diffs: dict[int, _Diff] = {p: _Diff(self.update_id + 1) for p in periods}
        self._more = tuple(self.diffs.values())
        self.top: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.top_changed = False
        # What happened during the current tick.
        self.trades: list[tuple[int, int, int, int, bool]] = []  # id, price, qty, T, buyer maker
        self.agg: tuple[int, int, int, int, int, int, bool] | None = None
        self.block: tuple[int, int, int, int, bool] | None = None
        # Every trade and aggregate trade, oldest first, for REST (at most 2 * HISTORY_LIMIT).
        self.trade_history: list[tuple[int, int, int, int, bool]] = []
        self.agg_history: list[tuple[int, int, int, int, int, int, bool]] = []
        self.traded = False  # since the last 1000 ms boundary
        self.closed: dict[tuple[str, int], _Closed] = {}
        #: Every closed candle (UTC candles only), oldest first, for REST klines.
        self.kline_history: dict[str, list[_Closed]] = {}
        # Bars.
        self.sec_start = now - now % 1000
        self.sec_bar: _Bar | None = None
        self.min_start = now - now % _MINUTE
        self.min_bar: _Bar | None = None
        self.klines = {
            (interval, offset): _Kline(interval, offset, now)
            for interval in KLINE_INTERVALS if interval != "1s"
            for offset in (0, _PLUS_8)
        }
        self.hist: list[_Bar] = []
        self.hist_t: list[int] = []
        self.hist_h: list[int] = []
        self.hist_l: list[int] = []
        self.hist_v: list[int] = []  # total volume before each bar
        self.hist_qv: list[int] = []
        self.total_v = 0
        self.total_qv = 0
        self.hist_end_v = 0
        self.hist_end_qv = 0

    # -- the book -----------------------------------------------------------

    def seed_book(self, rng: random.Random) -> None:
        size = self.spec.size
        for side, sign in ((self.bids, -1), (self.asks, 1)):
            distance = 1
            while len(side) < (_MIN_LEVELS + _MAX_LEVELS) // 2:
                side[self.fair + sign * distance] = 1 + int(rng.random() * 2 * size)
                distance += 1 + int(rng.random() * 3)
        self.best_bid = max(self.bids)
        self.best_ask = min(self.asks)
        self.top = self._top()

    def _top(self) -> tuple[int, int, int, int]:
        return (self.best_bid, self.bids[self.best_bid], self.best_ask, self.asks[self.best_ask])

    def _set_bid(self, price: int, qty: int) -> None:
        self.update_id += 1
        bids = self.bids
        if qty:
            bids[price] = qty
            if price > self.best_bid:
                self.best_bid = price
        else:
            del bids[price]
            if price == self.best_bid:
                self.best_bid = max(bids)
        self.fast_diff.bids[price] = qty
        self.slow_diff.bids[price] = qty
        for diff in self._more:
            diff.bids[price] = qty

    def _set_ask(self, price: int, qty: int) -> None:
        self.update_id += 1
        asks = self.asks
        if qty:
            asks[price] = qty
            if price < self.best_ask:
                self.best_ask = price
        else:
            del asks[price]
            if price == self.best_ask:
                self.best_ask = min(asks)
        self.fast_diff.asks[price] = qty
        self.slow_diff.asks[price] = qty
        for diff in self._more:
            diff.asks[price] = qty

    # -- one tick -----------------------------------------------------------

    def step(self, rng: random.Random, prev: int, now: int, reset_100: bool,
             reset_1000: bool, resets: tuple[int, ...] = ()) -> None:
        if resets:
            for period in resets:
                self.diffs[period] = _Diff(self.update_id + 1)
            self._more = tuple(self.diffs.values())
        if reset_100:
            self.fast_diff = _Diff(self.update_id + 1)
        if reset_1000:
            self.slow_diff = _Diff(self.update_id + 1)
            self.traded = False
        self.trades = []
        self.agg = None
        self.block = None
        if self.closed:
            self.closed = {}
        random_ = rng.random

        r = random_()
        if r < 0.15:
            self.fair -= 1 + int(r * 13)
        elif r > 0.85:
            self.fair += 1 + int((1.0 - r) * 13)
        if self.fair < 2 * _MAX_LEVELS:
            self.fair = 2 * _MAX_LEVELS

        u = random_()
        trade_time = prev + int(u * (now - prev)) if now > prev else now
        if random_() < 0.85:
            self._take(random_, trade_time)

        for _ in range(1 + int(random_() * 3)):
            self._make(random_)
        if not _MIN_LEVELS <= len(self.bids) <= _MAX_LEVELS \
                or not _MIN_LEVELS <= len(self.asks) <= _MAX_LEVELS:
            self._keep_depth(random_)

        if random_() < 0.005:
            self.block_id += 1
            qty = self.spec.size * (5 + int(random_() * 20))
            self.block = (self.block_id, self.fair, qty, trade_time, random_() < 0.5)

        if now >= self.sec_start + 1000:
            self._roll(now)
        top = (self.best_bid, self.bids[self.best_bid], self.best_ask, self.asks[self.best_ask])
        self.top_changed = top != self.top
        self.top = top

    def _take(self, random_: Callable[[], float], when: int) -> None:
        lean = (2 * self.fair - self.best_bid - self.best_ask) * 0.2
        buy = random_() < 0.5 + (-0.45 if lean < -0.45 else 0.45 if lean > 0.45 else lean)
        if buy:
            price = self.best_ask
            level = self.asks[price]
        else:
            price = self.best_bid
            level = self.bids[price]
        filled = 1 + int(random_() * random_() * 2 * self.spec.size)
        if filled > level:
            filled = level
        makers = 1 + int(random_() * 3)
        if filled == 1 or makers == 1:
            parts = [filled]
        else:
            first_part = 1 + int(random_() * (filled - 1))
            parts = [first_part, filled - first_part]
            if makers == 3 and first_part > 1:
                cut = 1 + int(random_() * (first_part - 1))
                parts = [cut, first_part - cut, filled - first_part]
        if buy:
            self._set_ask(price, level - filled)
        else:
            self._set_bid(price, level - filled)

        if when >= self.sec_start + 1000:
            self._roll(when)
        first = self.trade_id + 1
        maker_is_buyer = not buy
        trades = self.trades
        trade_id = self.trade_id
        for qty in parts:
            trade_id += 1
            trades.append((trade_id, price, qty, when, maker_is_buyer))
        self.trade_id = trade_id
        self.agg_id += 1
        self.agg = (self.agg_id, price, filled, first, trade_id, when, maker_is_buyer)
        history = self.trade_history
        history.extend(trades)
        self.agg_history.append(self.agg)
        if len(history) > 2 * HISTORY_LIMIT:
            del history[:len(history) - HISTORY_LIMIT]
        if len(self.agg_history) > 2 * HISTORY_LIMIT:
            del self.agg_history[:len(self.agg_history) - HISTORY_LIMIT]
        self.last_price = price
        self.last_qty = parts[-1]
        self.last_trade_time = when
        self.total_v += filled
        self.total_qv += price * filled
        if self.sec_bar is None:
            self.sec_bar = _Bar(self.sec_start, price, filled, first, len(parts), buy)
        else:
            self.sec_bar.add(price, filled, trade_id, len(parts), buy)
        self.traded = True

    def _make(self, random_: Callable[[], float]) -> None:
        bid_side = random_() < 0.5
        distance = int(-_log(1.0 - random_()) * 6.7)
        qty = 1 + int(random_() * 2 * self.spec.size)
        cancel = random_() < 0.3
        if bid_side:
            price = (self.fair if self.fair < self.best_ask else self.best_ask) - 1 - distance
            if price <= 0:
                return
            if cancel and price in self.bids and len(self.bids) > _MIN_LEVELS:
                self._set_bid(price, 0)
            else:
                self._set_bid(price, qty)
        else:
            price = (self.fair if self.fair > self.best_bid else self.best_bid) + 1 + distance
            if cancel and price in self.asks and len(self.asks) > _MIN_LEVELS:
                self._set_ask(price, 0)
            else:
                self._set_ask(price, qty)

    def _keep_depth(self, random_: Callable[[], float]) -> None:
        size = self.spec.size
        while len(self.bids) < _MIN_LEVELS:
            worst = min(self.bids)
            if worst <= 1:
                break
            self._set_bid(max(1, worst - 1 - int(random_() * 3)), 1 + int(random_() * size))
        while len(self.asks) < _MIN_LEVELS:
            worst = max(self.asks)
            self._set_ask(worst + 1 + int(random_() * 3), 1 + int(random_() * size))
        while len(self.bids) > _MAX_LEVELS:
            self._set_bid(min(self.bids), 0)
        while len(self.asks) > _MAX_LEVELS:
            self._set_ask(max(self.asks), 0)

    def _roll(self, t: int) -> None:
        """Close every bar that ends at or before ``t`` (at least the current second)."""
        closed_sec = self.sec_bar
        self.closed[("1s", 0)] = self.closed[("1s", _PLUS_8)] = (
            self.sec_start, self.sec_start + 1000, closed_sec, self.last_price)
        self._keep_kline("1s", self.closed[("1s", 0)])
        if closed_sec is not None:
            if self.min_bar is None:
                self.min_bar = closed_sec.copy()
            else:
                self.min_bar.merge(closed_sec)
        self.sec_bar = None
        self.sec_start = t - t % 1000
        if t < self.min_start + _MINUTE:
            return
        bar = self.min_bar
        if bar is not None:
            bar.t = self.min_start
            self.hist.append(bar)
            self.hist_t.append(bar.t)
            self.hist_h.append(bar.h)
            self.hist_l.append(bar.l)
            self.hist_v.append(self.hist_end_v)
            self.hist_qv.append(self.hist_end_qv)
            self.hist_end_v += bar.v
            self.hist_end_qv += bar.qv
            if len(self.hist) > 2 * 1500:
                for column in (self.hist, self.hist_t, self.hist_h, self.hist_l,
                               self.hist_v, self.hist_qv):
                    del column[:1500]
        self.min_bar = None
        self.min_start = t - t % _MINUTE
        for kline in self.klines.values():
            if bar is not None:
                if kline.bar is None:
                    kline.bar = bar.copy()
                else:
                    kline.bar.merge(bar)
            if self.min_start >= kline.end:
                self.closed[(kline.interval, kline.offset)] = (
                    kline.start, kline.end, kline.bar, self.last_price)
                if not kline.offset:
                    self._keep_kline(kline.interval, self.closed[(kline.interval, 0)])
                kline.start, kline.end = candle_bounds(kline.interval, kline.offset,
                                                        self.min_start)
                kline.bar = None

    def _keep_kline(self, interval: str, closed: _Closed) -> None:
        history = self.kline_history.setdefault(interval, [])
        history.append(closed)
        if len(history) > 2 * KLINE_HISTORY_LIMIT:
            del history[:KLINE_HISTORY_LIMIT]

    # -- statistics ---------------------------------------------------------

    def window(self, now: int, length: int) -> tuple[int, _Bar | None, int]:
        """``(open time, totals, price before the window)`` for a rolling window."""
        open_time = (now - length) - (now - length) % _MINUTE
        index = bisect_left(self.hist_t, open_time)
        live = _merged(self.min_bar, self.sec_bar)
        before = self.hist[index - 1].c if index > 0 else self.spec.price // self.tick
        if index == len(self.hist):
            return open_time, live, before
        first = self.hist[index]
        totals = first.copy()
        totals.h = max(self.hist_h[index:])
        totals.l = min(self.hist_l[index:])
        last = live if live is not None else self.hist[-1]
        if live is not None:
            totals.h = max(totals.h, live.h)
            totals.l = min(totals.l, live.l)
        totals.c = last.c
        totals.L = last.L
        totals.v = self.total_v - self.hist_v[index]
        totals.qv = self.total_qv - self.hist_qv[index]
        totals.n = totals.L - totals.f + 1
        return open_time, totals, before


class Market:
    """A simulated exchange for the configured ``symbols``, reproducible from ``seed``.

    Call :meth:`step` to advance one tick, then ask what each stream emits
    for that tick with :meth:`payloads` (dicts, as Binance sends them) or
    :meth:`encoded` (the same, serialised once with orjson).  A stream for a
    symbol this market does not trade simply emits nothing here (the
    exchange refuses such streams before they reach a market).
    ``!serverShutdown`` also emits nothing by itself: it is pushed by the
    exchange, see :meth:`server_shutdown`.

    ``clock``, if given, returns the time in epoch milliseconds and replaces
    the simulated clock; the market is then no longer reproducible.
    ``id_base`` is added to every first id (update, trade, aggTrade and block
    trade ids), so that a market started later can continue the ids of one
    started earlier; :func:`ids_from_clock` derives it from a clock.
    """

    def __init__(
        self,
        seed: int = 0,
        symbols: Iterable[str] = DEFAULT_SYMBOLS,
        *,
        clock: Callable[[], int] | None = None,
        id_base: int = 0,
        market: str = "spot",
    ) -> None:
        if market not in ("spot", "usdm"):
            raise ValueError(f"unknown market {market!r}: 'spot' or 'usdm'")
        names = tuple(dict.fromkeys(symbols))
        if not names:
            raise ValueError("a market needs at least one symbol")
        if id_base < 0:
            raise ValueError(f"id_base must be >= 0, got {id_base!r}")
        for name in names:
            stream = parse_stream(f"{name}@trade")
            if stream.symbol != name:
                raise ValueError(f"invalid symbol {name!r}")
        self.seed = seed
        #: ``"spot"`` or ``"usdm"``: which payload forms :meth:`payloads` speaks.
        self.market = market
        self._futures = market == "usdm"
        periods = _USDM_DEPTH_PERIODS if self._futures else ()
        self._rng = random.Random(seed)
        self._clock = clock
        self._now = EPOCH_MS if clock is None else int(clock())
        self._prev = self._now
        self._tick = 0
        self._symbols = {name: _Symbol(name, SymbolSpec.for_symbol(name), self._now, id_base,
                                       periods)
                         for name in names}
        for symbol in self._symbols.values():
            symbol.seed_book(self._rng)
        self._due = dict.fromkeys(_PERIODS, False)
        self._cache: dict[str, list[bytes]] = {}
        self._price_text: dict[int, str] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        """The lowercase symbols this market trades, in their stepping order."""
        return tuple(self._symbols)

    @property
    def tick(self) -> int:
        """How many times :meth:`step` has run."""
        return self._tick

    @property
    def time_ms(self) -> int:
        """The event time ``E`` of the current tick."""
        return self._now

    def step(self) -> None:
        """Advance one tick: move prices, trade, update the books and the bars."""
        emitted = self._due
        prev = self._now
        if self._clock is None:
            now = prev + TICK_MS
        else:
            now = max(prev, int(self._clock()))
        self._prev, self._now = prev, now
        self._tick += 1
        self._due = {period: now // period != prev // period for period in emitted}
        rng = self._rng
        reset_100, reset_1000 = emitted[100], emitted[1000]
        resets = tuple(p for p in _USDM_DEPTH_PERIODS if emitted[p]) if self._futures else ()
        for symbol in self._symbols.values():
            symbol.step(rng, prev, now, reset_100, reset_1000, resets)
        self._cache.clear()
        if len(self._price_text) > 100_000:
            self._price_text.clear()

    # -- output -------------------------------------------------------------

    def events(self, streams: Iterable[str | Stream]) -> Iterator[tuple[str, Any]]:
        """``(stream name, payload)`` for this tick, stream by stream in the given order."""
        for stream in streams:
            parsed = parse_stream(stream, self.market)
            for payload in self.payloads(parsed):
                yield parsed.name, payload

    def encoded(self, stream: str | Stream) -> list[bytes]:
        """What :meth:`payloads` returns, serialised with orjson (computed once per tick)."""
        name = stream if isinstance(stream, str) else stream.name
        cached = self._cache.get(name)
        if cached is None:
            cached = self._cache[name] = [orjson.dumps(p) for p in self.payloads(stream)]
        return cached

    def payloads(self, stream: str | Stream) -> list[Any]:
        """Every payload ``stream`` emits for the current tick; often empty.

        Raises :class:`~trio_feed.InvalidStreamName` for a malformed name.
        """
        parsed = parse_stream(stream, self.market)
        if self._futures:
            return self._futures_payloads(parsed)
        kind = parsed.kind
        if parsed.symbol is None:
            return self._all_market(parsed)
        symbol = self._symbols.get(parsed.symbol)
        if symbol is None:
            return []
        if kind == "trade":
            return self._trades(symbol)
        if kind == "depth":
            return self._depth(symbol, 100 if parsed.interval == "100ms" else 1000)
        if kind == "bookTicker":
            if not symbol.top_changed:
                return []
            return [self._book_ticker(symbol)]
        if kind == "aggTrade":
            return self._agg_trade(symbol)
        if kind == "depth_partial":
            period = 100 if parsed.interval == "100ms" else 1000
            if not self._due[period]:
                return []
            assert parsed.levels is not None
            return [self._partial(symbol, parsed.levels)]
        if kind == "kline":
            assert parsed.interval is not None
            offset = _PLUS_8 if parsed.timezone else 0
            return self._kline(symbol, parsed.interval, offset)
        if kind == "blockTrade":
            return self._block_trade(symbol)
        if not self._due[1000]:
            return []
        if kind == "miniTicker":
            return [self._mini_ticker(symbol)]
        if kind == "ticker":
            return [self._ticker(symbol)]
        if kind == "ticker_window":
            assert parsed.interval is not None
            return [self._window_ticker(symbol, parsed.interval)]
        if kind == "avgPrice":
            return [self._avg_price(symbol)]
        if kind == "referencePrice":
            return [{"e": "referencePrice", "s": symbol.upper,
                     "r": self._price(symbol, symbol.fair), "t": self._now}]
        return []

    def _all_market(self, stream: Stream) -> list[Any]:
        if stream.kind == "serverShutdown" or not self._due[1000]:
            return []
        changed = [s for s in self._symbols.values() if s.traded]
        if not changed:
            return []
        if stream.kind == "miniTicker_arr":
            return [[self._mini_ticker(s) for s in changed]]
        if stream.kind == "ticker_arr":
            return [[self._ticker(s) for s in changed]]
        assert stream.interval is not None
        return [[self._window_ticker(s, stream.interval) for s in changed]]

    def server_shutdown(self) -> dict[str, Any]:
        """The ``serverShutdown`` event, stamped with the current time."""
        return {"e": "serverShutdown", "E": self._now}

    def depth_snapshot(self, symbol: str, limit: int = 100) -> dict[str, Any]:
        """The REST ``GET /api/v3/depth`` answer for the true book right now.

        ``limit`` is capped at 5000 as on Binance; bids come best (highest)
        first.  ``lastUpdateId`` is the id of the last change already applied,
        so the next diff event starts at ``lastUpdateId + 1`` or earlier.
        Raises ``KeyError`` for a symbol this market does not trade and
        ``ValueError`` for a limit below 1.
        """
        state = self._symbols[symbol.lower()]
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if self._futures:
            body = self._levels(state, min(limit, USDM_FUTURES.max_snapshot_limit))
            return {"lastUpdateId": body["lastUpdateId"], "E": self._now, "T": self._now,
                    "bids": body["bids"], "asks": body["asks"]}
        return self._levels(state, min(limit, MAX_DEPTH_LIMIT))

    def agg_trades(self, symbol: str, from_id: int | None, limit: int) -> list[dict[str, Any]]:
        """The REST ``GET /api/v3/aggTrades`` answer: up to ``limit`` rows from ``from_id``.

        Oldest first, ``from_id`` included; without it, the latest ``limit``.
        An id older than the history kept (:data:`HISTORY_LIMIT`) starts at
        the oldest kept, as a database that no longer has it would.
        """
        state = self._symbols[symbol.lower()]
        rows = _page(state.agg_history, from_id, limit)
        lot = state.lot
        return [{"a": a, "p": self._price(state, p), "q": format_decimal(q * lot), "f": f,
                 "l": last, "T": when, "m": m, "M": True}
                for a, p, q, f, last, when, m in rows]

    def historical_trades(self, symbol: str, from_id: int | None,
                          limit: int) -> list[dict[str, Any]]:
        """The REST ``GET /api/v3/historicalTrades`` answer; see :meth:`agg_trades`."""
        state = self._symbols[symbol.lower()]
        rows = _page(state.trade_history, from_id, limit)
        lot, tick = state.lot, state.tick
        return [{"id": t, "price": self._price(state, p), "qty": format_decimal(q * lot),
                 "quoteQty": format_decimal(p * tick * q * lot // _SCALE), "time": when,
                 "isBuyerMaker": m, "isBestMatch": True}
                for t, p, q, when, m in rows]

    def klines(self, symbol: str, interval: str, start: int | None, end: int | None,
               limit: int) -> list[list[Any]]:
        """The REST ``GET /api/v3/klines`` answer: closed candles opening in ``[start, end]``.

        Oldest first, at most ``limit``; without ``start`` the latest.  Only
        candles already closed are kept (Binance adds the open one).
        """
        state = self._symbols[symbol.lower()]
        rows = []
        for t, close_end, bar, price in state.kline_history.get(interval, ()):
            if (start is not None and t < start) or (end is not None and t > end):
                continue
            k = self._kline_stats(state, bar, price, True)
            rows.append([t, k["o"], k["h"], k["l"], k["c"], k["v"], close_end - 1, k["q"],
                         k["n"], k["V"], k["Q"], "0"])
        return rows[:limit] if start is not None else rows[-limit:]

    # -- payload builders -----------------------------------------------------

    def _price(self, symbol: _Symbol, ticks: int) -> str:
        units = ticks * symbol.tick
        text = self._price_text.get(units)
        if text is None:
            text = self._price_text[units] = format_decimal(units)
        return text

    def _trades(self, symbol: _Symbol) -> list[Any]:
        now, s, lot = self._now, symbol.upper, symbol.lot
        return [
            {"e": "trade", "E": now, "s": s, "t": t, "p": self._price(symbol, p),
             "q": format_decimal(q * lot), "T": when, "m": m, "M": True}
            for t, p, q, when, m in symbol.trades
        ]

    def _agg_trade(self, symbol: _Symbol) -> list[Any]:
        if symbol.agg is None:
            return []
        a, p, q, f, last, when, m = symbol.agg
        return [{"e": "aggTrade", "E": self._now, "s": symbol.upper, "a": a,
                 "p": self._price(symbol, p), "q": format_decimal(q * symbol.lot),
                 "f": f, "l": last, "T": when, "m": m, "M": True}]

    def _block_trade(self, symbol: _Symbol) -> list[Any]:
        if symbol.block is None:
            return []
        t, p, q, when, m = symbol.block
        return [{"e": "blockTrade", "E": self._now, "s": symbol.upper, "t": t,
                 "p": self._price(symbol, p), "q": format_decimal(q * symbol.lot),
                 "T": when, "m": m}]

    def _depth(self, symbol: _Symbol, period: int) -> list[Any]:
        if not self._due[period]:
            return []
        diff = symbol.fast_diff if period == 100 else symbol.slow_diff
        lot = symbol.lot
        return [{
            "e": "depthUpdate", "E": self._now, "s": symbol.upper,
            "U": diff.first_id, "u": symbol.update_id,
            "b": [[self._price(symbol, p), format_decimal(diff.bids[p] * lot)]
                  for p in sorted(diff.bids, reverse=True)],
            "a": [[self._price(symbol, p), format_decimal(diff.asks[p] * lot)]
                  for p in sorted(diff.asks)],
        }]

    def _book_ticker(self, symbol: _Symbol) -> dict[str, Any]:
        bid, bid_qty, ask, ask_qty = symbol.top
        lot = symbol.lot
        return {"u": symbol.update_id, "s": symbol.upper,
                "b": self._price(symbol, bid), "B": format_decimal(bid_qty * lot),
                "a": self._price(symbol, ask), "A": format_decimal(ask_qty * lot)}

    def _levels(self, symbol: _Symbol, limit: int) -> dict[str, Any]:
        lot = symbol.lot
        bids = sorted(symbol.bids, reverse=True)[:limit]
        asks = sorted(symbol.asks)[:limit]
        return {
            "lastUpdateId": symbol.update_id,
            "bids": [[self._price(symbol, p), format_decimal(symbol.bids[p] * lot)]
                     for p in bids],
            "asks": [[self._price(symbol, p), format_decimal(symbol.asks[p] * lot)]
                     for p in asks],
        }

    def _partial(self, symbol: _Symbol, levels: int) -> dict[str, Any]:
        return self._levels(symbol, levels)

    def _kline(self, symbol: _Symbol, interval: str, offset: int) -> list[Any]:
        closed = symbol.closed.get((interval, offset))
        if closed is not None:
            start, end, bar, price = closed
            final = True
        elif self._due[1000 if interval == "1s" else 2000]:
            if interval == "1s":
                start, bar = symbol.sec_start, symbol.sec_bar
                end = start + 1000
            else:
                kline = symbol.klines[(interval, offset)]
                start, end = kline.start, kline.end
                bar = _merged(kline.bar, symbol.min_bar, symbol.sec_bar)
            price = symbol.last_price
            final = False
        else:
            return []
        k = {"t": start, "T": end - 1, "s": symbol.upper, "i": interval}
        k.update(self._kline_stats(symbol, bar, price, final))
        k["B"] = "0"
        return [{"e": "kline", "E": self._now, "s": symbol.upper, "k": k}]

    def _kline_stats(self, symbol: _Symbol, bar: _Bar | None, price: int,
                     final: bool) -> dict[str, Any]:
        lot, tick = symbol.lot, symbol.tick
        if bar is None:
            o = h = low = c = self._price(symbol, price)
            stats: dict[str, Any] = {"f": -1, "L": -1, "o": o, "c": c, "h": h, "l": low,
                                     "v": "0.00000000", "n": 0, "x": final,
                                     "q": "0.00000000", "V": "0.00000000",
                                     "Q": "0.00000000"}
        else:
            stats = {"f": bar.f, "L": bar.L, "o": self._price(symbol, bar.o),
                     "c": self._price(symbol, bar.c), "h": self._price(symbol, bar.h),
                     "l": self._price(symbol, bar.l), "v": format_decimal(bar.v * lot),
                     "n": bar.n, "x": final,
                     "q": format_decimal(bar.qv * tick * lot // _SCALE),
                     "V": format_decimal(bar.bv * lot),
                     "Q": format_decimal(bar.bq * tick * lot // _SCALE)}
        return stats

    def _stats(self, symbol: _Symbol, length: int) -> dict[str, Any]:
        """The keys every ticker shares, in Binance's order for ``@ticker_<w>``."""
        open_time, bar, before = symbol.window(self._now, length)
        tick, lot = symbol.tick, symbol.lot
        if bar is None:
            o = h = low = c = symbol.last_price
            v = qv = 0
            first = last = -1
            n = 0
        else:
            o, h, low, c = bar.o, bar.h, bar.l, bar.c
            v, qv, first, last, n = bar.v, bar.qv, bar.f, bar.L, bar.n
        return {
            "p": format_decimal((c - o) * tick), "P": _format_percent(c - o, o),
            "o": self._price(symbol, o), "h": self._price(symbol, h),
            "l": self._price(symbol, low), "c": self._price(symbol, c),
            "w": format_decimal(qv * tick // v) if v else self._price(symbol, c),
            "v": format_decimal(v * lot), "q": format_decimal(qv * tick * lot // _SCALE),
            "O": open_time, "C": self._now, "F": first, "L": last, "n": n,
            "x": self._price(symbol, before),
        }

    def _mini_ticker(self, symbol: _Symbol) -> dict[str, Any]:
        st = self._stats(symbol, _DAY)
        return {"e": "24hrMiniTicker", "E": self._now, "s": symbol.upper, "c": st["c"],
                "o": st["o"], "h": st["h"], "l": st["l"], "v": st["v"], "q": st["q"]}

    def _ticker(self, symbol: _Symbol) -> dict[str, Any]:
        st = self._stats(symbol, _DAY)
        bid, bid_qty, ask, ask_qty = symbol.top
        lot = symbol.lot
        return {
            "e": "24hrTicker", "E": self._now, "s": symbol.upper, "p": st["p"], "P": st["P"],
            "w": st["w"], "x": st["x"], "c": st["c"],
            "Q": format_decimal(symbol.last_qty * lot),
            "b": self._price(symbol, bid), "B": format_decimal(bid_qty * lot),
            "a": self._price(symbol, ask), "A": format_decimal(ask_qty * lot),
            "o": st["o"], "h": st["h"], "l": st["l"], "v": st["v"], "q": st["q"],
            "O": st["O"], "C": st["C"], "F": st["F"], "L": st["L"], "n": st["n"],
        }

    def _window_ticker(self, symbol: _Symbol, window: str) -> dict[str, Any]:
        st = self._stats(symbol, _WINDOWS[window])
        return {
            "e": f"{window}Ticker", "E": self._now, "s": symbol.upper, "p": st["p"],
            "P": st["P"], "o": st["o"], "h": st["h"], "l": st["l"], "c": st["c"],
            "w": st["w"], "v": st["v"], "q": st["q"], "O": st["O"], "C": st["C"],
            "F": st["F"], "L": st["L"], "n": st["n"],
        }

    def _avg_price(self, symbol: _Symbol) -> dict[str, Any]:
        st = self._stats(symbol, _AVG_PRICE_WINDOW)
        return {"e": "avgPrice", "E": self._now, "s": symbol.upper, "i": "5m",
                "w": st["w"], "T": symbol.last_trade_time}

    # -- USD-M futures --------------------------------------------------------

    def _futures_payloads(self, parsed: Stream) -> list[Any]:
        """What ``parsed`` (a USD-M stream) emits this tick, in the futures forms."""
        kind, due = parsed.kind, self._due
        if parsed.symbol is None:
            return self._futures_all_market(parsed)
        symbol = self._symbols.get(parsed.symbol)
        if symbol is None:
            return []
        if kind in ("depth", "depth_partial", "rpiDepth"):
            period = {None: 250, "500ms": 500, "100ms": 100}[parsed.interval]
            if not due[period]:
                return []
            return [self._futures_depth(symbol, period, parsed.levels)]
        if kind == "bookTicker":
            return [self._futures_book_ticker(symbol)] if symbol.top_changed else []
        if kind == "aggTrade":
            trades = self._agg_trade(symbol)
            for trade in trades:
                del trade["M"]
                trade["nq"] = trade["q"]
            return trades
        if kind in ("kline", "continuousKline"):
            assert parsed.interval is not None
            klines = self._kline(symbol, parsed.interval, 0)
            if kind == "kline":
                return klines
            contract = (parsed.contract_type or "perpetual").upper()
            return [{"e": "continuous_kline", "E": k["E"], "ps": k["s"], "ct": contract,
                     "k": {key: v for key, v in k["k"].items() if key != "s"}}
                    for k in klines]
        if kind == "forceOrder":
            return self._force_order(symbol)
        if kind == "markPrice":
            return [self._mark_price(symbol)] if due[1000 if parsed.interval else 3000] else []
        if not due[1000]:
            return []
        if kind == "miniTicker":
            return [self._mini_ticker(symbol)]
        if kind == "ticker":
            return [self._futures_ticker(symbol)]
        if kind == "compositeIndex":
            price = self._price(symbol, symbol.fair)
            return [{"e": "compositeIndex", "E": self._now, "s": symbol.upper, "p": price,
                     "C": "baseAsset",
                     "c": [{"b": symbol.upper, "q": "USDT", "w": "1.00000000",
                            "W": "1.00000000", "i": price}]}]
        return []  # assetIndex: no multi-assets indexes here

    def _futures_all_market(self, stream: Stream) -> list[Any]:
        kind, due = stream.kind, self._due
        symbols = list(self._symbols.values())
        if kind == "bookTicker_all":
            return [self._futures_book_ticker(s) for s in symbols if s.top_changed]
        if kind == "forceOrder_all":
            return [order for s in symbols for order in self._force_order(s)]
        if kind == "markPrice_arr":
            if not due[1000 if stream.interval else 3000]:
                return []
            return [[self._mark_price(s) for s in symbols]]
        if kind in ("miniTicker_arr", "ticker_arr") and due[1000]:
            changed = [s for s in symbols if s.traded]
            if not changed:
                return []
            build = self._mini_ticker if kind == "miniTicker_arr" else self._futures_ticker
            return [[build(s) for s in changed]]
        return []  # serverShutdown is pushed by the exchange; no contract or index changes

    def _futures_depth(self, symbol: _Symbol, period: int, levels: int | None) -> dict[str, Any]:
        diff = symbol.fast_diff if period == 100 else symbol.diffs[period]
        now, lot = self._now, symbol.lot
        if levels is None:
            bids = [[self._price(symbol, p), format_decimal(diff.bids[p] * lot)]
                    for p in sorted(diff.bids, reverse=True)]
            asks = [[self._price(symbol, p), format_decimal(diff.asks[p] * lot)]
                    for p in sorted(diff.asks)]
        else:
            top = self._levels(symbol, levels)
            bids, asks = top["bids"], top["asks"]
        return {"e": "depthUpdate", "E": now, "T": now, "s": symbol.upper,
                "U": diff.first_id, "u": symbol.update_id, "pu": diff.first_id - 1,
                "b": bids, "a": asks}

    def _futures_book_ticker(self, symbol: _Symbol) -> dict[str, Any]:
        ticker = self._book_ticker(symbol)
        return {"e": "bookTicker", "u": ticker["u"], "s": ticker["s"], "b": ticker["b"],
                "B": ticker["B"], "a": ticker["a"], "A": ticker["A"], "T": self._now,
                "E": self._now}

    def _futures_ticker(self, symbol: _Symbol) -> dict[str, Any]:
        ticker = self._ticker(symbol)
        for key in ("x", "b", "B", "a", "A"):
            del ticker[key]
        return ticker

    def _mark_price(self, symbol: _Symbol) -> dict[str, Any]:
        price = self._price(symbol, symbol.fair)
        funding = (self._now // _FUNDING_INTERVAL + 1) * _FUNDING_INTERVAL
        return {"e": "markPriceUpdate", "E": self._now, "s": symbol.upper, "p": price,
                "i": price, "P": price, "r": "0.00010000", "T": funding}

    def _force_order(self, symbol: _Symbol) -> list[Any]:
        if symbol.block is None:
            return []
        _, p, q, when, buyer_maker = symbol.block
        price, qty = self._price(symbol, p), format_decimal(q * symbol.lot)
        return [{"e": "forceOrder", "E": self._now, "o": {
            "s": symbol.upper, "S": "SELL" if buyer_maker else "BUY", "o": "LIMIT", "f": "IOC",
            "q": qty, "p": price, "ap": price, "X": "FILLED", "l": qty, "z": qty, "T": when}}]


def _page(history: list[Any], from_id: int | None, limit: int) -> list[Any]:
    """Up to ``limit`` entries of an id-ordered, consecutive ``history`` from ``from_id``."""
    if not history:
        return []
    if from_id is None:
        return history[-limit:]
    start = max(0, from_id - history[0][0])
    return history[start:start + limit]
