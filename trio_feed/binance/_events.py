"""Typed events for the Binance spot and USD-M futures market-data streams.

One class per stream kind of ``STREAMS.md`` section 4, the USD-M futures
kinds (section 8: mark price, liquidations, continuous klines, indexes,
contract info, the futures ticker), plus the replies of the
subscription protocol (section 3) and :class:`UnknownEvent`.  Field names are
readable snake_case; the Binance key each one comes from is written beside it,
so the wire documentation stays usable.  Keys Binance documents as "Ignore"
(``M`` on trades, ``k.B`` on klines) are not kept, and unknown extra keys are
tolerated and dropped: Binance adds keys over time (section 6).

Prices and quantities stay exact.  By default they are the wire strings,
untouched; a :class:`~trio_feed.binance.Decoder` built with ``decimals=True``
turns them into :class:`decimal.Decimal`.  Neither is ever a ``float``.  The
:data:`Number` alias names that choice in annotations, and ``Decimal(x)``
accepts both forms, so ``Decimal(event.price)`` is the portable spelling.
Depth levels are ``[price, quantity]`` two-element lists, exactly as they
arrive (their elements converted when ``decimals=True``).  Each class names
its price and quantity fields in ``_decimal_fields`` (and its level lists in
``_level_fields``) for that conversion; a test checks those lists against the
annotations, so a new field cannot be forgotten.

Klines are flat: the fields of the wire's nested ``k`` object sit on
:class:`Kline` itself.  The all-market array streams decode to one event that
holds a list of element events (:class:`MiniTickerArray` and friends).

Why ``@attrs.define(slots=True)`` and not ``frozen=True``: building a frozen
attrs instance for a trade was measured here at about 1.0 to 1.5 µs, against
about 0.3 to 0.35 µs for a plain slotted one (frozen classes assign through
``object.__setattr__``).  The bare ``orjson.loads`` of the payload costs about
1 µs, so frozen events would more than double the decode cost on the hot path
of every message.  The classes are therefore mutable in principle, but the
library never mutates an event once the decoder has returned it; treat events
as values.  (``decimals=True`` converts fields inside the decoder, before the
event is handed out.)

Every event carries ``stream``: the stream name it arrived on, taken from the
combined envelope or, on a raw ``/ws/<stream>`` connection, from the
decoder's single stream; ``None`` when neither is known (and always for the
control replies, which belong to the connection, not a stream).  It is the
last field and defaults to ``None``.

:func:`format_event` (the same as each event's ``describe()``) renders one
readable line per event, for examples and logs::

    btcusdt@trade  trade #12345  BUY 0.001 @ 25000.10

Timestamps are integers in milliseconds since the epoch, or microseconds when
the connection asked for ``timeUnit=MICROSECOND``; events do not know which.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, TypeAlias

import attrs

from .._errors import SubscriptionError
from .._value import Value

__all__ = [
    "AggTrade",
    "AllBookTicker",
    "AssetIndex",
    "AssetIndexArray",
    "AvgPrice",
    "BlockTrade",
    "BookTicker",
    "CompositeIndex",
    "ContinuousKline",
    "ContractInfo",
    "ControlError",
    "ControlResponse",
    "DepthUpdate",
    "Event",
    "ForceOrder",
    "FuturesTicker",
    "Kline",
    "Level",
    "MarkPrice",
    "MarkPriceArray",
    "MiniTicker",
    "MiniTickerArray",
    "Number",
    "PartialDepth",
    "ReferencePrice",
    "RollingWindowTicker",
    "RollingWindowTickerArray",
    "ServerShutdown",
    "Ticker",
    "TickerArray",
    "Trade",
    "UnknownEvent",
    "format_event",
]

#: A price or quantity: the exact wire string, or a ``Decimal`` with ``decimals=True``.
Number: TypeAlias = str | Decimal

#: One order-book level, ``[price, quantity]``.  A zero quantity in a diff deletes the level.
Level: TypeAlias = list[Number]


#: The price and volume fields of a candle (:class:`Kline`, USD-M ``ContinuousKline``).
_CANDLE_NUMBERS = (
    "open", "high", "low", "close", "volume", "quote_volume",
    "taker_buy_volume", "taker_buy_quote_volume",
)


def _text(number: Number) -> str:
    """Plain decimal notation: ``str(Decimal("0.00000000"))`` would give ``"0E-8"``."""
    return number if type(number) is str else format(number, "f")


def _prefix(stream: str | None) -> str:
    return f"{stream}  " if stream else ""


def _taker_side(buyer_is_maker: bool) -> str:
    return "SELL" if buyer_is_maker else "BUY"


def _best(levels: list[Level]) -> str:
    if not levels:
        return "none"
    price, quantity = levels[0]
    return f"{_text(quantity)} @ {_text(price)}"


@attrs.define(slots=True, repr=False)
class Trade(Value):
    """``<symbol>@trade``: one trade between one buyer and one seller (``e`` = ``"trade"``)."""

    event_time: int  # E
    symbol: str  # s
    trade_id: int  # t
    price: Number  # p
    quantity: Number  # q
    trade_time: int  # T
    buyer_is_maker: bool  # m: true means the taker sold
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ("price", "quantity")
    #: True only on a trade fetched over REST to fill a gap (``BackfilledTrade``).
    backfilled: ClassVar[bool] = False

    def describe(self) -> str:
        """One readable line, e.g. ``btcusdt@trade  trade #12345  BUY 0.001 @ 25000.10``."""
        side = _taker_side(self.buyer_is_maker)
        return (
            f"{_prefix(self.stream)}trade #{self.trade_id}  "
            f"{side} {_text(self.quantity)} @ {_text(self.price)}"
        )


@attrs.define(slots=True, repr=False)
class AggTrade(Value):
    """``<symbol>@aggTrade``: the fills of one taker order at one price (``e`` = ``"aggTrade"``).

    USD-M futures send the same event without ``M`` and, in newer versions,
    with ``nq``: the quantity without the trades that involved RPI orders,
    kept in ``quantity_excluding_rpi`` (``None`` on spot and where absent).
    """

    event_time: int  # E
    symbol: str  # s
    agg_trade_id: int  # a
    price: Number  # p
    quantity: Number  # q
    first_trade_id: int  # f
    last_trade_id: int  # l
    trade_time: int  # T
    buyer_is_maker: bool  # m
    quantity_excluding_rpi: Number | None = None  # nq (USD-M futures only)
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ("price", "quantity", "quantity_excluding_rpi")
    #: True only on an aggregate trade fetched over REST to fill a gap.
    backfilled: ClassVar[bool] = False

    def describe(self) -> str:
        """One readable line: id, covered trade ids, taker side, quantity and price."""
        side = _taker_side(self.buyer_is_maker)
        return (
            f"{_prefix(self.stream)}aggTrade #{self.agg_trade_id} "
            f"(trades {self.first_trade_id}-{self.last_trade_id})  "
            f"{side} {_text(self.quantity)} @ {_text(self.price)}"
        )


@attrs.define(slots=True, repr=False)
class BlockTrade(Value):
    """``<symbol>@blockTrade`` (since 2026-05-12): one block trade (``e`` = ``"blockTrade"``)."""

    event_time: int  # E
    symbol: str  # s
    trade_id: int  # t: the block trade ID
    price: Number  # p
    quantity: Number  # q
    trade_time: int  # T
    buyer_is_maker: bool  # m
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ("price", "quantity")

    def describe(self) -> str:
        """One readable line: id, taker side, quantity and price."""
        side = _taker_side(self.buyer_is_maker)
        return (
            f"{_prefix(self.stream)}blockTrade #{self.trade_id}  "
            f"{side} {_text(self.quantity)} @ {_text(self.price)}"
        )


@attrs.define(slots=True, repr=False)
class Kline(Value):
    """``<symbol>@kline_<interval>[@+08:00]``: the candle currently open (``e`` = ``"kline"``).

    The bar is *flat*: the fields of the wire's nested ``k`` object are lifted
    onto the event, which saves an allocation per message and an attribute
    hop per read.  ``k.s`` (always equal to ``s``) and ``k.B`` ("Ignore") are
    dropped.  ``is_closed`` turns true on the update that closes the candle;
    until then the bar is still moving.  The ``@+08:00`` variant aligns bars
    to UTC+8 but its timestamps stay UTC epoch times.
    """

    event_time: int  # E
    symbol: str  # s
    interval: str  # k.i
    open_time: int  # k.t
    close_time: int  # k.T
    first_trade_id: int  # k.f
    last_trade_id: int  # k.L
    open: Number  # k.o
    high: Number  # k.h
    low: Number  # k.l
    close: Number  # k.c
    volume: Number  # k.v: base asset volume
    trade_count: int  # k.n
    is_closed: bool  # k.x
    quote_volume: Number  # k.q
    taker_buy_volume: Number  # k.V: taker-buy base asset volume
    taker_buy_quote_volume: Number  # k.Q
    stream: str | None = None
    #: True only on a closed kline fetched over REST for one missed (``BackfilledKline``).
    backfilled: ClassVar[bool] = False

    _decimal_fields: ClassVar[tuple[str, ...]] = _CANDLE_NUMBERS

    def describe(self) -> str:
        """One readable line: interval, symbol, OHLC, volume and whether the bar closed."""
        state = "closed" if self.is_closed else "open"
        return (
            f"{_prefix(self.stream)}kline {self.interval} {self.symbol}  "
            f"O {_text(self.open)} H {_text(self.high)} L {_text(self.low)} C {_text(self.close)}  "
            f"vol {_text(self.volume)}  ({state})"
        )


@attrs.define(slots=True, repr=False)
class MiniTicker(Value):
    """``<symbol>@miniTicker``: rolling 24 h statistics, short (``e`` = ``"24hrMiniTicker"``)."""

    event_time: int  # E
    symbol: str  # s
    last_price: Number  # c
    open_price: Number  # o
    high_price: Number  # h
    low_price: Number  # l
    volume: Number  # v: base asset volume
    quote_volume: Number  # q
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = (
        "last_price", "open_price", "high_price", "low_price", "volume", "quote_volume",
    )

    def describe(self) -> str:
        """One readable line: symbol, last price, open/high/low and volume."""
        return (
            f"{_prefix(self.stream)}miniTicker {self.symbol}  last {_text(self.last_price)}  "
            f"O {_text(self.open_price)} H {_text(self.high_price)} L {_text(self.low_price)}  "
            f"vol {_text(self.volume)}"
        )


@attrs.define(slots=True, repr=False)
class Ticker(Value):
    """``<symbol>@ticker``: rolling 24 h statistics, full form (``e`` = ``"24hrTicker"``)."""

    event_time: int  # E
    symbol: str  # s
    price_change: Number  # p
    price_change_percent: Number  # P
    weighted_average_price: Number  # w
    prev_close_price: Number  # x: the last trade before the window (trade F-1)
    last_price: Number  # c
    last_quantity: Number  # Q
    best_bid_price: Number  # b
    best_bid_quantity: Number  # B
    best_ask_price: Number  # a
    best_ask_quantity: Number  # A
    open_price: Number  # o
    high_price: Number  # h
    low_price: Number  # l
    volume: Number  # v: base asset volume
    quote_volume: Number  # q
    open_time: int  # O
    close_time: int  # C
    first_trade_id: int  # F
    last_trade_id: int  # L
    trade_count: int  # n
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = (
        "price_change", "price_change_percent", "weighted_average_price", "prev_close_price",
        "last_price", "last_quantity", "best_bid_price", "best_bid_quantity",
        "best_ask_price", "best_ask_quantity", "open_price", "high_price", "low_price",
        "volume", "quote_volume",
    )

    def describe(self) -> str:
        """One readable line: symbol, last price, 24 h change, best bid and ask."""
        return (
            f"{_prefix(self.stream)}ticker {self.symbol}  last {_text(self.last_price)}  "
            f"change {_text(self.price_change)} ({_text(self.price_change_percent)}%)  "
            f"bid {_text(self.best_bid_quantity)} @ {_text(self.best_bid_price)}  "
            f"ask {_text(self.best_ask_quantity)} @ {_text(self.best_ask_price)}"
        )


@attrs.define(slots=True, repr=False)
class RollingWindowTicker(Value):
    """``<symbol>@ticker_<1h|4h|1d>``: rolling-window statistics (``e`` = ``"1hTicker"`` etc.).

    ``window`` is ``"1h"``, ``"4h"`` or ``"1d"``, taken from the ``e`` value.
    ``open_time`` is aligned to a whole minute and ``close_time`` is the time
    of the update, so the real window can exceed the nominal one by up to
    59,999 ms.
    """

    window: str  # from e: "1hTicker" -> "1h"
    event_time: int  # E
    symbol: str  # s
    price_change: Number  # p
    price_change_percent: Number  # P
    open_price: Number  # o
    high_price: Number  # h
    low_price: Number  # l
    last_price: Number  # c
    weighted_average_price: Number  # w
    volume: Number  # v: base asset volume
    quote_volume: Number  # q
    open_time: int  # O
    close_time: int  # C
    first_trade_id: int  # F
    last_trade_id: int  # L
    trade_count: int  # n
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = (
        "price_change", "price_change_percent", "open_price", "high_price", "low_price",
        "last_price", "weighted_average_price", "volume", "quote_volume",
    )

    def describe(self) -> str:
        """One readable line: window, symbol, last price and change over the window."""
        return (
            f"{_prefix(self.stream)}{self.window} ticker {self.symbol}  "
            f"last {_text(self.last_price)}  "
            f"change {_text(self.price_change)} ({_text(self.price_change_percent)}%)  "
            f"vol {_text(self.volume)}"
        )


@attrs.define(slots=True, repr=False)
class AvgPrice(Value):
    """``<symbol>@avgPrice``: the average price over an interval (``e`` = ``"avgPrice"``)."""

    event_time: int  # E
    symbol: str  # s
    interval: str  # i: the averaging interval, e.g. "5m"
    average_price: Number  # w
    last_trade_time: int  # T
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ("average_price",)

    def describe(self) -> str:
        """One readable line: symbol, interval and average price."""
        return (
            f"{_prefix(self.stream)}avgPrice {self.symbol}  {_text(self.average_price)} "
            f"over {self.interval}"
        )


@attrs.define(slots=True, repr=False)
class BookTicker(Value):
    """``<symbol>@bookTicker``: a change of the best bid or ask.

    Spot payloads have no ``e`` and no ``E``, so they are typed by stream name
    or key set.  USD-M futures add ``e`` = ``"bookTicker"``, ``E`` and ``T``,
    kept in ``event_time`` and ``transaction_time`` (``None`` on spot).
    ``update_id`` shares its sequence with the diff-depth ``u``.
    """

    update_id: int  # u
    symbol: str  # s
    best_bid_price: Number  # b
    best_bid_quantity: Number  # B
    best_ask_price: Number  # a
    best_ask_quantity: Number  # A
    event_time: int | None = None  # E (futures only)
    transaction_time: int | None = None  # T (futures only)
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = (
        "best_bid_price", "best_bid_quantity", "best_ask_price", "best_ask_quantity",
    )

    def describe(self) -> str:
        """One readable line: symbol, best bid and best ask."""
        return (
            f"{_prefix(self.stream)}bookTicker {self.symbol}  "
            f"bid {_text(self.best_bid_quantity)} @ {_text(self.best_bid_price)}  "
            f"ask {_text(self.best_ask_quantity)} @ {_text(self.best_ask_price)}  #{self.update_id}"
        )


@attrs.define(slots=True, repr=False)
class AllBookTicker(BookTicker):
    """USD-M ``!bookTicker``: one symbol's :class:`BookTicker`, on the all-market stream.

    The same fields, and an instance of :class:`BookTicker`; a class of its
    own because ``update_id`` is per symbol and the stream mixes symbols, so
    a lower ``u`` of another symbol is not a repeat.  The feed orders these
    by event time instead (``trio_feed.binance._sequence`` has no id rule
    for this class).
    """


@attrs.define(slots=True, repr=False)
class PartialDepth(Value):
    """``<symbol>@depth<5|10|20>[@100ms]``: a snapshot of the top levels of the book.

    The spot payload has no ``e``, ``E`` or ``s``.  ``symbol`` therefore
    comes from the stream name, uppercased to match every other event (the
    ASCII symbols Binance lists upper- and lowercase cleanly); it is ``None``
    when the stream is not known.  These are absolute snapshots: never merge
    them with the diff stream.  A REST ``/api/v3/depth`` body has the same
    shape and decodes to this class too.  USD-M futures send partial depth in
    the diff form, which decodes to :class:`DepthUpdate`.
    """

    last_update_id: int  # lastUpdateId
    bids: list[Level]  # bids: best (highest) first
    asks: list[Level]  # asks: best (lowest) first
    symbol: str | None = None  # from the stream name
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()
    _level_fields: ClassVar[tuple[str, ...]] = ("bids", "asks")

    def describe(self) -> str:
        """One readable line: symbol, update id and the best level of each side."""
        return (
            f"{_prefix(self.stream)}depth {self.symbol or '?'} #{self.last_update_id}  "
            f"{len(self.bids)} bids (best {_best(self.bids)})  "
            f"{len(self.asks)} asks (best {_best(self.asks)})"
        )


@attrs.define(slots=True, repr=False)
class DepthUpdate(Value):
    """``<symbol>@depth[@100ms]``: changed book levels (``e`` = ``"depthUpdate"``).

    Quantities are absolute, and a zero quantity deletes the level.
    ``prev_final_update_id`` (``pu``) and ``transaction_time`` (``T``) are
    sent only by USD-M futures, whose partial depth also takes this form;
    they are ``None`` on spot.
    """

    event_time: int  # E
    symbol: str  # s
    first_update_id: int  # U
    final_update_id: int  # u
    bids: list[Level]  # b
    asks: list[Level]  # a
    prev_final_update_id: int | None = None  # pu (futures only)
    transaction_time: int | None = None  # T (futures only)
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()
    _level_fields: ClassVar[tuple[str, ...]] = ("bids", "asks")

    def describe(self) -> str:
        """One readable line: symbol, update id range and how many levels changed."""
        return (
            f"{_prefix(self.stream)}depthUpdate {self.symbol} "
            f"#{self.first_update_id}-{self.final_update_id}  "
            f"{len(self.bids)} bids  {len(self.asks)} asks"
        )


@attrs.define(slots=True, repr=False)
class ReferencePrice(Value):
    """``<symbol>@referencePrice`` (since 2026-03): the price-range reference price.

    ``reference_price`` is ``None`` when the symbol has none.  There is no
    event time; ``engine_time`` is when the reference price was valid.
    """

    symbol: str  # s
    reference_price: Number | None  # r
    engine_time: int  # t
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ("reference_price",)

    def describe(self) -> str:
        """One readable line: symbol and reference price."""
        price = "none" if self.reference_price is None else _text(self.reference_price)
        return f"{_prefix(self.stream)}referencePrice {self.symbol}  {price}"


@attrs.define(slots=True, repr=False)
class ServerShutdown(Value):
    """The server is going down: reconnect now (``e`` = ``"serverShutdown"``, since 2026-05).

    It may arrive on any connection; combined connections wrap it with the
    stream name ``"!serverShutdown"``.
    """

    event_time: int  # E
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line saying what to do."""
        return f"{_prefix(self.stream)}serverShutdown at {self.event_time}: reconnect now"


def _describe_array(stream: str | None, what: str, symbols: list[str]) -> str:
    shown = ", ".join(symbols[:5])
    more = f", … (+{len(symbols) - 5})" if len(symbols) > 5 else ""
    return f"{_prefix(stream)}{len(symbols)} {what}: {shown}{more}"


@attrs.define(slots=True, repr=False)
class MiniTickerArray(Value):
    """``!miniTicker@arr``: the mini tickers of the symbols that changed in the last second."""

    events: list[MiniTicker]
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line: how many tickers, and the first few symbols."""
        return _describe_array(self.stream, "miniTickers", [e.symbol for e in self.events])


@attrs.define(slots=True, repr=False)
class TickerArray(Value):
    """``!ticker@arr``: the full 24 h tickers that changed.

    Deprecated on spot by Binance on 2025-11-14; documented on USD-M futures,
    whose elements are :class:`FuturesTicker`.
    """

    events: list[Ticker | FuturesTicker]
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line: how many tickers, and the first few symbols."""
        return _describe_array(self.stream, "tickers", [e.symbol for e in self.events])


@attrs.define(slots=True, repr=False)
class RollingWindowTickerArray(Value):
    """``!ticker_<1h|4h|1d>@arr``: the rolling-window tickers that changed, of one ``window``."""

    window: str
    events: list[RollingWindowTicker]
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line: window, how many tickers, and the first few symbols."""
        return _describe_array(
            self.stream, f"{self.window} tickers", [e.symbol for e in self.events]
        )


@attrs.define(slots=True, repr=False)
class ControlResponse(Value):
    """A successful reply to a SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / … request.

    ``id`` echoes the request's id (an int, a string or ``None``); match
    replies by it, since they interleave with data.  ``result`` is ``None``
    for the commands that change state, the list of stream names for
    LIST_SUBSCRIPTIONS, and the property value for GET_PROPERTY.
    """

    id: int | str | None  # id
    result: Any  # result
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line: the id and the result."""
        return f"{_prefix(self.stream)}control response id={self.id!r} result={self.result!r}"


@attrs.define(slots=True, repr=False)
class ControlError(Value):
    """An error reply to a control request: ``{"code": <int>, "msg": "...", "id": ...}``.

    The nested shape ``{"error": {"code": <int>, "msg": "..."}, "id": ...}``
    decodes to the same class (``code`` is ``-1`` if the error names none).

    Codes 0 to 3 are documented (unknown property, bad value type, invalid
    request, invalid JSON).  ``id`` is ``None`` when the server did not echo
    one, which it often does not.
    """

    code: int  # code
    msg: str  # msg
    id: int | str | None = None  # id
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def to_exception(self) -> SubscriptionError:
        """The :class:`~trio_feed.SubscriptionError` that reports this reply."""
        return SubscriptionError(self.code, self.msg, self.id)

    def describe(self) -> str:
        """One readable line: code, message and id."""
        return f"{_prefix(self.stream)}control error {self.code}: {self.msg} (id={self.id!r})"


@attrs.define(slots=True, repr=False)
class UnknownEvent(Value):
    """A message this library cannot type: an unknown ``e`` value or an unknown shape.

    Nothing is dropped silently.  ``data`` is the decoded JSON object or
    array (the event payload, without its envelope; the whole envelope when
    its ``data`` is neither an object nor an array), so a caller can still
    handle kinds Binance adds before this library knows them.
    """

    data: dict[str, Any] | list[Any]
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line: the ``e`` value or the keys, and a truncated repr."""
        data = self.data
        if isinstance(data, dict):
            what = f"e={data['e']!r}" if "e" in data else f"keys {sorted(data)[:8]}"
        else:
            what = f"array of {len(data)}"
        text = repr(data)
        if len(text) > 80:
            text = text[:77] + "..."
        return f"{_prefix(self.stream)}unknown event ({what})  {text}"


# -- USD-M futures ---------------------------------------------------------------


@attrs.define(slots=True, repr=False)
class FuturesTicker(Value):
    """USD-M ``<symbol>@ticker``: rolling 24 h statistics (``e`` = ``"24hrTicker"``).

    The futures form of :class:`Ticker`: it has no previous close (``x``)
    and no best bid or ask (``b B a A``).
    """

    event_time: int  # E
    symbol: str  # s
    price_change: Number  # p
    price_change_percent: Number  # P
    weighted_average_price: Number  # w
    last_price: Number  # c
    last_quantity: Number  # Q
    open_price: Number  # o
    high_price: Number  # h
    low_price: Number  # l
    volume: Number  # v: base asset volume
    quote_volume: Number  # q
    open_time: int  # O
    close_time: int  # C
    first_trade_id: int  # F
    last_trade_id: int  # L
    trade_count: int  # n
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = (
        "price_change", "price_change_percent", "weighted_average_price", "last_price",
        "last_quantity", "open_price", "high_price", "low_price", "volume", "quote_volume",
    )

    def describe(self) -> str:
        """One readable line: symbol, last price and 24 h change."""
        return (
            f"{_prefix(self.stream)}ticker {self.symbol}  last {_text(self.last_price)}  "
            f"change {_text(self.price_change)} ({_text(self.price_change_percent)}%)  "
            f"vol {_text(self.volume)}"
        )


@attrs.define(slots=True, repr=False)
class MarkPrice(Value):
    """USD-M ``<symbol>@markPrice[@1s]``: mark price and funding (``e`` = ``"markPriceUpdate"``).

    Pushed every 3 s, or every second with ``@1s``.  ``funding_rate`` is
    ``None`` when the wire sends ``""`` (a delivery contract has none).
    """

    event_time: int  # E
    symbol: str  # s
    mark_price: Number  # p
    index_price: Number  # i
    estimated_settle_price: Number  # P: only meaningful in the hour before settlement
    funding_rate: Number | None  # r
    next_funding_time: int  # T
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = (
        "mark_price", "index_price", "estimated_settle_price", "funding_rate",
    )

    def describe(self) -> str:
        """One readable line: symbol, mark and index price, funding rate."""
        rate = "none" if self.funding_rate is None else _text(self.funding_rate)
        return (
            f"{_prefix(self.stream)}markPrice {self.symbol}  mark {_text(self.mark_price)}  "
            f"index {_text(self.index_price)}  funding {rate}"
        )


@attrs.define(slots=True, repr=False)
class MarkPriceArray(Value):
    """USD-M ``!markPrice@arr[@1s]``: the mark prices of every symbol."""

    events: list[MarkPrice]
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line: how many mark prices, and the first few symbols."""
        return _describe_array(self.stream, "markPrices", [e.symbol for e in self.events])


@attrs.define(slots=True, repr=False)
class ForceOrder(Value):
    """USD-M ``<symbol>@forceOrder`` and ``!forceOrder@arr``: a liquidation order.

    ``e`` = ``"forceOrder"``; the order's fields (the wire's nested ``o``)
    sit on the event.  Binance pushes at most the latest liquidation per
    symbol per second, and nothing when there is none.  ``!forceOrder@arr``
    sends these one per message, not as an array.
    """

    event_time: int  # E
    symbol: str  # o.s
    side: str  # o.S: "BUY" or "SELL"
    order_type: str  # o.o
    time_in_force: str  # o.f
    quantity: Number  # o.q: original quantity
    price: Number  # o.p
    average_price: Number  # o.ap
    status: str  # o.X
    last_filled_quantity: Number  # o.l
    filled_quantity: Number  # o.z: accumulated
    trade_time: int  # o.T
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = (
        "quantity", "price", "average_price", "last_filled_quantity", "filled_quantity",
    )

    def describe(self) -> str:
        """One readable line: symbol, side, quantity, price and status."""
        return (
            f"{_prefix(self.stream)}forceOrder {self.symbol}  {self.side} "
            f"{_text(self.quantity)} @ {_text(self.price)}  {self.status}"
        )


@attrs.define(slots=True, repr=False)
class ContinuousKline(Value):
    """USD-M ``<pair>_<contract>@continuousKline_<interval>`` (``e`` = ``"continuous_kline"``).

    A kline of a contract type (perpetual, current or next quarter) rather
    than of one symbol, flat like :class:`Kline`.
    """

    event_time: int  # E
    pair: str  # ps
    contract_type: str  # ct: "PERPETUAL", "CURRENT_QUARTER", "NEXT_QUARTER"
    interval: str  # k.i
    open_time: int  # k.t
    close_time: int  # k.T
    first_trade_id: int  # k.f
    last_trade_id: int  # k.L
    open: Number  # k.o
    high: Number  # k.h
    low: Number  # k.l
    close: Number  # k.c
    volume: Number  # k.v
    trade_count: int  # k.n
    is_closed: bool  # k.x
    quote_volume: Number  # k.q
    taker_buy_volume: Number  # k.V
    taker_buy_quote_volume: Number  # k.Q
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = _CANDLE_NUMBERS

    def describe(self) -> str:
        """One readable line: interval, pair, contract, OHLC and whether the bar closed."""
        state = "closed" if self.is_closed else "open"
        return (
            f"{_prefix(self.stream)}continuousKline {self.interval} {self.pair} "
            f"{self.contract_type}  O {_text(self.open)} H {_text(self.high)} "
            f"L {_text(self.low)} C {_text(self.close)}  ({state})"
        )


@attrs.define(slots=True, repr=False)
class CompositeIndex(Value):
    """USD-M ``<symbol>@compositeIndex``: a composite index (``e`` = ``"compositeIndex"``).

    ``components`` are the wire's ``c`` objects as they arrive (``b`` base
    asset, ``q`` quote asset, ``w`` weight in quantity, ``W`` weight in
    percent, ``i`` index price, all strings); they are not converted.
    """

    event_time: int  # E
    symbol: str  # s
    price: Number  # p
    component_type: str  # C, e.g. "baseAsset"
    components: list[dict[str, Any]]  # c
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ("price",)

    def describe(self) -> str:
        """One readable line: symbol, price and how many components."""
        return (
            f"{_prefix(self.stream)}compositeIndex {self.symbol}  {_text(self.price)}  "
            f"{len(self.components)} components"
        )


@attrs.define(slots=True, repr=False)
class ContractInfo(Value):
    """USD-M ``!contractInfo``: a contract was listed, changed or delisted.

    ``e`` = ``"contractInfo"``.  ``brackets`` is the wire's ``bks`` list as
    it arrives (its numbers are JSON numbers on the wire), or ``None`` when
    the event carries none.
    """

    event_time: int  # E
    symbol: str  # s
    pair: str  # ps
    contract_type: str  # ct
    delivery_time: int  # dt
    onboard_time: int  # ot
    status: str  # cs
    brackets: list[dict[str, Any]] | None = None  # bks
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line: symbol, contract type and status."""
        return (f"{_prefix(self.stream)}contractInfo {self.symbol}  "
                f"{self.contract_type} {self.status}")


@attrs.define(slots=True, repr=False)
class AssetIndex(Value):
    """USD-M ``<asset>@assetIndex``: a multi-assets mode asset index (``"assetIndexUpdate"``)."""

    event_time: int  # E
    symbol: str  # s, e.g. "ADAUSD"
    index_price: Number  # i
    bid_buffer: Number  # b
    ask_buffer: Number  # a
    bid_rate: Number  # B
    ask_rate: Number  # A
    auto_exchange_bid_buffer: Number  # q
    auto_exchange_ask_buffer: Number  # g
    auto_exchange_bid_rate: Number  # Q
    auto_exchange_ask_rate: Number  # G
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = (
        "index_price", "bid_buffer", "ask_buffer", "bid_rate", "ask_rate",
        "auto_exchange_bid_buffer", "auto_exchange_ask_buffer", "auto_exchange_bid_rate",
        "auto_exchange_ask_rate",
    )

    def describe(self) -> str:
        """One readable line: symbol and index price."""
        return f"{_prefix(self.stream)}assetIndex {self.symbol}  {_text(self.index_price)}"


@attrs.define(slots=True, repr=False)
class AssetIndexArray(Value):
    """USD-M ``!assetIndex@arr``: every asset index."""

    events: list[AssetIndex]
    stream: str | None = None

    _decimal_fields: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """One readable line: how many indexes, and the first few symbols."""
        return _describe_array(self.stream, "assetIndexes", [e.symbol for e in self.events])


Event: TypeAlias = (
    Trade
    | AggTrade
    | BlockTrade
    | Kline
    | MiniTicker
    | Ticker
    | RollingWindowTicker
    | AvgPrice
    | BookTicker
    | PartialDepth
    | DepthUpdate
    | ReferencePrice
    | ServerShutdown
    | MiniTickerArray
    | TickerArray
    | RollingWindowTickerArray
    | FuturesTicker
    | AllBookTicker
    | MarkPrice
    | MarkPriceArray
    | ForceOrder
    | ContinuousKline
    | CompositeIndex
    | ContractInfo
    | AssetIndex
    | AssetIndexArray
    | ControlResponse
    | ControlError
    | UnknownEvent
)


def format_event(event: Event) -> str:
    """One readable line for ``event``, e.g. ``btcusdt@trade  trade #12345  BUY 0.001 @ 25000.10``.

    The line starts with the stream name when it is known.  For trades the
    side shown is the taker's: ``buyer_is_maker`` means the taker sold.
    """
    return event.describe()
