"""Turn Binance market-data messages into typed events.

A message can be typed from four places, and the decoder looks at them in
the order ``STREAMS.md`` section 10 recommends:

1. A **control reply** (``result``, ``code`` or ``error`` at the top level,
   with no ``e`` and no ``stream``) becomes :class:`ControlResponse` or
   :class:`ControlError`; an error comes flat (``{"code", "msg", "id"}``) or
   nested (``{"error": {"code", "msg"}, "id"}``).
2. A **combined envelope** ``{"stream": name, "data": payload}`` is unwrapped,
   and the payload is typed as below with ``name`` as its stream.
3. A **JSON array** is an all-market stream: typed by the stream kind
   (``!miniTicker@arr`` and friends), or else by the elements' ``e``.
4. An object is typed by its **``e`` field**.  Without one (spot bookTicker
   and partial depth) it is typed by the **stream kind**, the stream being the
   envelope's or, on a raw ``/ws/<stream>`` connection, the single stream the
   decoder was built with.  As a last resort the **key set** decides
   (bookTicker: ``u s b B a A``; partial depth: ``lastUpdateId bids asks``).

Anything else becomes :class:`UnknownEvent` carrying the decoded data: an
unknown ``e`` value or shape is never dropped, because Binance adds streams
and keys over time and the caller may know what to do with them.  What
*cannot* be a Binance message raises instead: invalid JSON or a JSON scalar
raises :class:`~trio_feed.DecodeError`, and so does a payload typed by its
``e`` or its stream kind that lacks a key the type requires (the message
names the key).
Prices and quantities must be JSON strings, as Binance sends them: a JSON
number there (``1e-8``) would already be an inexact float after ``loads``,
and ``null`` would be a missing price, so either raises
:class:`~trio_feed.DecodeError` naming the field, in both modes; the
exact strings pass through untouched (or become ``Decimal``).  Only the
fields a type documents as optional (``referencePrice``'s ``r``, futures
``nq``) may be ``null`` or absent.  The ids the continuity filter counts with
(``t``, ``a``, ``U``, ``u``) must be integers; in the less frequent kinds
(klines, tickers, the USD-M events) ``null`` in any required field is
refused too.  The times and flags of trades, bookTicker and depth are not
type-checked: the checks on those hot kinds are kept to what would corrupt
data or fail untyped later.  Invalid UTF-8 raises
:class:`~trio_feed.ProtocolError` with close code 1007, since RFC 6455
requires text messages to be UTF-8 and the connection must fail.

Performance is the reason for the shape of this module.  The target is a
trade decode within about 1.8 times a bare ``orjson.loads``, so the hot path
is one ``loads``, a few dict probes, one dict lookup from the ``e`` value (or,
for the ``e``-less kinds, from the envelope's stream name) to a small
constructor function, and one positional attrs ``__init__``; keyword arguments
measured nearly twice as slow.  :meth:`Decoder.decode` inlines those shapes
and hands everything else to :meth:`Decoder.decode_object`, the reference
path; a test checks that both agree.  Measured here (CPython 3.11, a 168-byte
combined trade): ``loads`` 0.87 µs, ``loads`` plus building the ``Trade`` with
no dispatch at all 1.62 µs (1.86x), ``decode`` 1.82 µs (2.1x).  The attrs
instance, not the dispatch, is most of the gap.  Stream names are parsed only
for payloads without ``e`` and for arrays, once per name, since envelopes
repeat the same few names forever.  ``decimals=True`` wraps the constructors
once, when the decoder is built, so the default mode pays nothing for it.

:meth:`Decoder.decode` does not keep a reference to its payload: the frame
reader may lend a ``memoryview`` of a receive buffer that is reused as soon
as the handler returns, and ``orjson.loads`` copies everything it keeps.
Errors carry an owned ``bytes`` copy of the payload's start instead, and
``decode`` deletes its ``payload`` local before raising, because a caller
that keeps the exception keeps the traceback, and with it that frame's
locals: a live view there would block the buffer from being resized.
"""

from __future__ import annotations

import codecs
import typing
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Final

import orjson

from .._errors import DecodeError, InvalidStreamName, ProtocolError
from ._events import (
    AggTrade,
    AllBookTicker,
    AssetIndex,
    AssetIndexArray,
    AvgPrice,
    BlockTrade,
    BookTicker,
    CompositeIndex,
    ContinuousKline,
    ContractInfo,
    ControlError,
    ControlResponse,
    DepthUpdate,
    Event,
    ForceOrder,
    FuturesTicker,
    Kline,
    MarkPrice,
    MarkPriceArray,
    MiniTicker,
    MiniTickerArray,
    PartialDepth,
    ReferencePrice,
    RollingWindowTicker,
    RollingWindowTickerArray,
    ServerShutdown,
    Ticker,
    TickerArray,
    Trade,
    UnknownEvent,
)
from ._streams import ALL_BOOK_TICKER, KINDS, MARKET_NAMES, TICKER_WINDOWS, Stream, parse_stream

__all__ = ["Decoder"]

_Object = dict[str, Any]
_Constructor = Callable[[_Object, "str | None"], Event]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

#: Stream names cached per decoder.  Envelope names come from the server, so
#: the cache is bounded; past the limit, names are parsed each time.
_CACHE_LIMIT: Final = 4096

_BOOK_TICKER_KEYS: Final = frozenset({"u", "s", "b", "B", "a", "A"})
_PARTIAL_DEPTH_KEYS: Final = frozenset({"lastUpdateId", "bids", "asks"})


def _not_text(label: str, ids: dict[str, Any] | None = None, **values: Any) -> DecodeError:
    """The error for a price or quantity that is not a JSON string (a number, a null),
    or for an id (``ids``) that is not an integer."""
    for name, value in values.items():
        if value.__class__ is not str:
            return DecodeError(f"{label} {name}: expected a decimal string, got {value!r}")
    for name, value in (ids or {}).items():
        if value.__class__ is not int:
            return DecodeError(f"{label} {name}: expected an integer id, got {value!r}")
    return DecodeError(f"malformed {label} event")  # not reached: one value was wrong


def _check_levels(levels: Any, label: str) -> None:
    """Every level must be a ``[price, quantity]`` pair of strings."""
    for price, quantity in levels:
        if price.__class__ is not str or quantity.__class__ is not str:
            raise DecodeError(
                f"{label}: levels must be [price, quantity] strings, got {[price, quantity]!r}"
            )


# The hot constructors check, inline, what must never be wrong: prices and
# quantities are strings, and the ids the continuity filter counts with are
# integers (a null there would fail later, untyped, in the consumer's task).


def _trade(o: _Object, stream: str | None) -> Event:
    p, q, t = o["p"], o["q"], o["t"]
    if p.__class__ is not str or q.__class__ is not str or t.__class__ is not int:
        raise _not_text("trade", {"trade_id": t}, price=p, quantity=q)
    return Trade(o["E"], o["s"], t, p, q, o["T"], o["m"], stream)


def _agg_trade(o: _Object, stream: str | None) -> Event:
    p, q, a = o["p"], o["q"], o["a"]
    if p.__class__ is not str or q.__class__ is not str or a.__class__ is not int:
        raise _not_text("aggTrade", {"agg_trade_id": a}, price=p, quantity=q)
    return AggTrade(
        o["E"], o["s"], a, p, q, o["f"], o["l"], o["T"], o["m"], None, stream
    )


def _usdm_agg_trade(o: _Object, stream: str | None) -> Event:
    p, q, a, nq = o["p"], o["q"], o["a"], o.get("nq")
    if p.__class__ is not str or q.__class__ is not str or a.__class__ is not int or (
            nq is not None and nq.__class__ is not str):
        raise _not_text("aggTrade", {"agg_trade_id": a}, price=p, quantity=q,
                        quantity_excluding_rpi=nq if nq is not None else "")
    return AggTrade(
        o["E"], o["s"], a, p, q, o["f"], o["l"], o["T"], o["m"], nq, stream
    )


def _block_trade(o: _Object, stream: str | None) -> Event:
    return BlockTrade(o["E"], o["s"], o["t"], o["p"], o["q"], o["T"], o["m"], stream)


def _kline(o: _Object, stream: str | None) -> Event:
    event_time, symbol, k = o["E"], o["s"], o["k"]
    try:
        return Kline(
            event_time, symbol, k["i"], k["t"], k["T"], k["f"], k["L"],
            k["o"], k["h"], k["l"], k["c"], k["v"], k["n"], k["x"], k["q"], k["V"], k["Q"],
            stream,
        )
    except KeyError as exc:
        raise KeyError(f"k.{exc.args[0]}") from None


def _mini_ticker(o: _Object, stream: str | None) -> Event:
    return MiniTicker(
        o["E"], o["s"], o["c"], o["o"], o["h"], o["l"], o["v"], o["q"], stream
    )


def _ticker(o: _Object, stream: str | None) -> Event:
    return Ticker(
        o["E"], o["s"], o["p"], o["P"], o["w"], o["x"], o["c"], o["Q"],
        o["b"], o["B"], o["a"], o["A"], o["o"], o["h"], o["l"], o["v"], o["q"],
        o["O"], o["C"], o["F"], o["L"], o["n"], stream,
    )


def _rolling_window_ticker(window: str) -> _Constructor:
    def build(o: _Object, stream: str | None) -> Event:
        return RollingWindowTicker(
            window, o["E"], o["s"], o["p"], o["P"], o["o"], o["h"], o["l"], o["c"],
            o["w"], o["v"], o["q"], o["O"], o["C"], o["F"], o["L"], o["n"], stream,
        )

    return build


def _avg_price(o: _Object, stream: str | None) -> Event:
    return AvgPrice(o["E"], o["s"], o["i"], o["w"], o["T"], stream)


def _book_ticker_as(cls: type[BookTicker]) -> _Constructor:
    """The bookTicker constructor building ``cls``: prices checked, the id an integer."""

    def build(o: _Object, stream: str | None) -> Event:
        b, bq, a, aq, u = o["b"], o["B"], o["a"], o["A"], o["u"]
        if (b.__class__ is not str or bq.__class__ is not str or a.__class__ is not str
                or aq.__class__ is not str or u.__class__ is not int):
            raise _not_text("bookTicker", {"update_id": u}, best_bid_price=b,
                            best_bid_quantity=bq, best_ask_price=a, best_ask_quantity=aq)
        return cls(u, o["s"], b, bq, a, aq, o.get("E"), o.get("T"), stream)

    return build


_book_ticker = _book_ticker_as(BookTicker)
#: ``!bookTicker`` mixes symbols, whose ids are their own: a class without an id rule.
_all_book_ticker = _book_ticker_as(AllBookTicker)


def _usdm_book_ticker(o: _Object, stream: str | None) -> Event:
    return (_all_book_ticker if stream == ALL_BOOK_TICKER else _book_ticker)(o, stream)


def _depth_update(o: _Object, stream: str | None) -> Event:
    bids, asks, first, last = o["b"], o["a"], o["U"], o["u"]
    if first.__class__ is not int or last.__class__ is not int:
        raise _not_text("depthUpdate", {"first_update_id": first, "final_update_id": last})
    _check_levels(bids, "depthUpdate b")
    _check_levels(asks, "depthUpdate a")
    return DepthUpdate(
        o["E"], o["s"], first, last, bids, asks, o.get("pu"), o.get("T"), stream
    )


def _reference_price(o: _Object, stream: str | None) -> Event:
    return ReferencePrice(o["s"], o["r"], o["t"], stream)


def _server_shutdown(o: _Object, stream: str | None) -> Event:
    return ServerShutdown(o["E"], stream)


# -- USD-M futures (STREAMS.md section 8 and the USD-M stream pages) -------------


def _futures_ticker(o: _Object, stream: str | None) -> Event:
    return FuturesTicker(
        o["E"], o["s"], o["p"], o["P"], o["w"], o["c"], o["Q"], o["o"], o["h"], o["l"],
        o["v"], o["q"], o["O"], o["C"], o["F"], o["L"], o["n"], stream,
    )


def _mark_price(o: _Object, stream: str | None) -> Event:
    rate = o["r"]
    return MarkPrice(o["E"], o["s"], o["p"], o["i"], o["P"], None if rate == "" else rate,
                     o["T"], stream)


def _force_order(o: _Object, stream: str | None) -> Event:
    order = o["o"]
    try:
        return ForceOrder(
            o["E"], order["s"], order["S"], order["o"], order["f"], order["q"], order["p"],
            order["ap"], order["X"], order["l"], order["z"], order["T"], stream,
        )
    except KeyError as exc:
        raise KeyError(f"o.{exc.args[0]}") from None


def _continuous_kline(o: _Object, stream: str | None) -> Event:
    event_time, pair, contract, k = o["E"], o["ps"], o["ct"], o["k"]
    try:
        return ContinuousKline(
            event_time, pair, contract, k["i"], k["t"], k["T"], k["f"], k["L"],
            k["o"], k["h"], k["l"], k["c"], k["v"], k["n"], k["x"], k["q"], k["V"], k["Q"],
            stream,
        )
    except KeyError as exc:
        raise KeyError(f"k.{exc.args[0]}") from None


def _composite_index(o: _Object, stream: str | None) -> Event:
    return CompositeIndex(o["E"], o["s"], o["p"], o["C"], o["c"], stream)


def _contract_info(o: _Object, stream: str | None) -> Event:
    return ContractInfo(o["E"], o["s"], o["ps"], o["ct"], o["dt"], o["ot"], o["cs"],
                        o.get("bks"), stream)


def _asset_index(o: _Object, stream: str | None) -> Event:
    return AssetIndex(o["E"], o["s"], o["i"], o["b"], o["a"], o["B"], o["A"], o["q"],
                      o["g"], o["Q"], o["G"], stream)


#: ``e`` value -> constructor.  This table is the whole of the hot-path dispatch.
_BY_E: Final[dict[str, _Constructor]] = {
    "trade": _trade,
    "aggTrade": _agg_trade,
    "blockTrade": _block_trade,
    "kline": _kline,
    "24hrMiniTicker": _mini_ticker,
    "24hrTicker": _ticker,
    "avgPrice": _avg_price,
    "bookTicker": _book_ticker,
    "depthUpdate": _depth_update,
    "referencePrice": _reference_price,
    "serverShutdown": _server_shutdown,
    **{f"{w}Ticker": _rolling_window_ticker(w) for w in sorted(TICKER_WINDOWS)},
}

#: A USD-M decoder's table: spot's, with the futures-only ``e`` values and the
#: two that futures spell differently (``nq`` on aggTrade; the short ticker).
#: Which table a decoder uses is decided once, when it is built.
_USDM_BY_E: Final[dict[str, _Constructor]] = {
    "aggTrade": _usdm_agg_trade,
    "24hrTicker": _futures_ticker,
    "bookTicker": _usdm_book_ticker,
    "markPriceUpdate": _mark_price,
    "forceOrder": _force_order,
    "continuous_kline": _continuous_kline,
    "compositeIndex": _composite_index,
    "contractInfo": _contract_info,
    "assetIndexUpdate": _asset_index,
}

#: Constructors that check their own prices inline (the hot kinds); every
#: other one is checked by ``_strict`` after it is built.
_CHECKED_INLINE: Final = frozenset(
    {_trade, _agg_trade, _usdm_agg_trade, _book_ticker, _usdm_book_ticker, _depth_update}
)


def _partial_depth(symbol: str | None) -> _Constructor:
    def build(o: _Object, stream: str | None) -> Event:
        return PartialDepth(o["lastUpdateId"], o["bids"], o["asks"], symbol, stream)

    return build


def _window_array(window: str) -> Callable[[list[Any], str | None], Event]:
    def wrap(events: list[Any], stream: str | None) -> Event:
        return RollingWindowTickerArray(window, events, stream)

    return wrap


#: Element ``e`` value -> builder of the array event from its typed elements.
_ARRAYS: Final[dict[str, Callable[[list[Any], str | None], Event]]] = {
    "24hrMiniTicker": MiniTickerArray,
    "24hrTicker": TickerArray,
    **{f"{w}Ticker": _window_array(w) for w in sorted(TICKER_WINDOWS)},
    "markPriceUpdate": MarkPriceArray,
    "assetIndexUpdate": AssetIndexArray,
}


def _decimal(value: Any, name: str) -> Decimal:
    if type(value) is not str:
        raise DecodeError(f"{name}: expected a decimal string, got {value!r}")
    try:
        return Decimal(value)
    except ArithmeticError:
        raise DecodeError(f"{name}: {value!r} is not a decimal number") from None


_FIELDS_TO_CONVERT: dict[type, tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]] = {}
#: Event class -> its fields that may never be None (no ``None`` in the annotation).
_REQUIRED: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]:
    """``(number fields, level fields, number fields that may be None)`` of an event class."""
    try:
        return _FIELDS_TO_CONVERT[cls]
    except KeyError:
        pass
    numbers = cls._decimal_fields  # type: ignore[attr-defined]
    hints = typing.get_type_hints(cls)
    optional = frozenset(name for name in numbers if type(None) in typing.get_args(hints[name]))
    entry = numbers, getattr(cls, "_level_fields", ()), optional
    _FIELDS_TO_CONVERT[cls] = entry
    _REQUIRED[cls] = tuple(
        name for name, hint in hints.items()
        if not name.startswith("_") and type(None) not in typing.get_args(hint)
        and hint is not typing.Any
    )
    return entry


def _strict(build: _Constructor) -> _Constructor:
    """``build``, then refuse a price or quantity that is not a string (default mode)."""
    if build in _CHECKED_INLINE:
        return build

    def build_strict(o: _Object, stream: str | None) -> Event:
        event = build(o, stream)
        numbers, levels, optional = _fields(type(event))
        for name in numbers:
            value = getattr(event, name)
            if value.__class__ is not str and not (value is None and name in optional):
                raise DecodeError(f"{name}: expected a decimal string, got {value!r}")
        for name in levels:
            _check_levels(getattr(event, name), name)
        _check_required(event)
        return event

    return build_strict


def _to_decimals(event: Event) -> Event:
    """Replace the wire strings of ``event`` by Decimals, before anyone else sees it."""
    numbers, levels, optional = _fields(type(event))
    for name in numbers:
        value = getattr(event, name)
        if value is not None or name not in optional:
            setattr(event, name, _decimal(value, name))
    for name in levels:
        try:
            converted = [[_decimal(p, name), _decimal(q, name)] for p, q in getattr(event, name)]
        except DecodeError:
            raise
        except (TypeError, ValueError):
            raise DecodeError(f"{name}: levels must be [price, quantity] pairs") from None
        setattr(event, name, converted)
    return event


def _with_decimals(build: _Constructor) -> _Constructor:
    if build in _CHECKED_INLINE:
        def build_decimal(o: _Object, stream: str | None) -> Event:
            return _to_decimals(build(o, stream))

        return build_decimal

    def build_checked_decimal(o: _Object, stream: str | None) -> Event:
        event = _to_decimals(build(o, stream))
        _check_required(event)
        return event

    return build_checked_decimal


def _check_required(event: Event) -> None:
    """A null in a field that may not be None is a :class:`~trio_feed.DecodeError`."""
    for name in _REQUIRED[type(event)]:
        if getattr(event, name) is None:
            raise DecodeError(f"{name}: required, got null")


def _invalid(e: object, exc: Exception) -> DecodeError:
    if isinstance(exc, DecodeError):
        return exc
    if isinstance(exc, KeyError):
        return DecodeError(f"{e!r} event is missing the required key {exc.args[0]!r}")
    return DecodeError(f"malformed {e!r} event: {exc}")


def _label_of(obj: Any) -> object:
    """What to call a payload in an error message: its ``e``, else its stream name."""
    if type(obj) is not dict:
        return None
    data = obj.get("data", obj) if "stream" in obj else obj
    e = data.get("e") if type(data) is dict else None
    return e if e is not None else obj.get("stream")


def _json_error(payload: bytes | bytearray | memoryview, exc: Exception) -> Exception:
    try:
        codecs.utf_8_decode(payload, "strict", True)
    except UnicodeDecodeError as utf8:
        return ProtocolError(f"text message is not valid UTF-8: {utf8}", close_code=1007)
    return DecodeError(f"message is not valid JSON: {exc}", payload=bytes(payload[:200]))


class Decoder:
    """Decode Binance market-data messages into typed events.

    ``streams`` are the streams the connection carries.  With exactly one
    stream the decoder assumes a raw ``/ws/<stream>`` connection: payloads
    that arrive without an envelope are typed by, and labelled with, that
    stream.  Names are parsed here, so an invalid one raises
    :class:`~trio_feed.InvalidStreamName` at once.  Names that only appear
    later in envelopes are parsed (and cached) when first needed; a name the
    parser does not know is not an error, its payloads are typed by ``e`` or
    key set.

    ``decimals=True`` turns every price and quantity into a ``Decimal``;
    by default they stay the exact wire strings.  ``market`` (``"spot"`` or
    ``"usdm"``) says whose stream names and payload forms to expect: USD-M
    names are parsed by its rules, its ``aggTrade`` keeps ``nq`` and its
    ``24hrTicker`` becomes :class:`~trio_feed.binance.FuturesTicker`.

    A decoder holds only its configuration and the stream-name caches, so one
    decoder per connection is the natural use, but sharing is harmless.
    """

    def __init__(self, streams: Iterable[str | Stream] = (), *, decimals: bool = False,
                 market: str = "spot") -> None:
        if market not in MARKET_NAMES:
            raise ValueError(f"unknown market {market!r}: use one of {list(MARKET_NAMES)}")
        self.market: Final = market
        parsed = [parse_stream(s, market) for s in streams]
        self.decimals: Final = decimals
        self._wrap = _with_decimals if decimals else _strict
        table = {**_BY_E, **_USDM_BY_E} if market == "usdm" else _BY_E
        # Keyed by object: the hot path looks up whatever ``e`` the wire held.
        self._by_e: dict[object, _Constructor] = {
            e: self._wrap(build) for e, build in table.items()
        }
        self._keyed_book_ticker = self._wrap(_book_ticker)
        self._keyed_partial_depth = self._wrap(_partial_depth(None))
        self._cache: dict[str, Stream | None] = {}
        #: Stream name -> constructor, for the names whose payloads have no ``e``.
        self._no_e: dict[object, _Constructor] = {}
        for stream in parsed:
            self._remember(stream.name, stream)
        self._raw_stream: str | None = parsed[0].name if len(parsed) == 1 else None

    def decode(self, payload: bytes | bytearray | memoryview) -> Event:
        """Decode one text message.

        Raises :class:`~trio_feed.ProtocolError` (close code 1007) if the
        payload is not UTF-8, and :class:`~trio_feed.DecodeError` if it is not
        JSON, is a JSON scalar, or is a known event missing a required key.
        The error holds a copy of the payload's first 200 bytes; ``payload``
        itself is not retained, so a lent view may be released afterwards.
        """
        try:
            obj = _loads(payload)
        except _JSONDecodeError as exc:
            error = _json_error(payload, exc)
            del payload
            raise error from None
        try:
            # The hot shapes, inlined; decode_object is the reference for the rest.
            if obj.__class__ is dict:
                name = obj.get("stream")
                if name is None:
                    build = self._by_e.get(obj.get("e"))
                    if build is not None:
                        return build(obj, self._raw_stream)
                elif name.__class__ is str:
                    data = obj.get("data")
                    if data.__class__ is dict:
                        e = data.get("e")
                        build = self._by_e.get(e) if e is not None else self._no_e.get(name)
                        if build is not None:
                            return build(data, name)
            return self.decode_object(obj)
        except DecodeError as exc:
            exc.payload = bytes(payload[:200])
            del payload
            raise
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            invalid = _invalid(_label_of(obj), exc)
            invalid.payload = bytes(payload[:200])
            del payload
            raise invalid from None

    def decode_batch(
        self, payloads: Iterable[bytes | bytearray | memoryview], events: list[Event]
    ) -> None:
        """Decode ``payloads`` in order, appending each event to ``events``.

        The same as ``events.append(self.decode(p))`` for each payload, with
        the per-call work done once per batch: this is the feed's hot path.
        On the first payload that does not decode it raises what
        :meth:`decode` would; the events before it are in ``events``, so
        ``len(events)`` tells the caller which payload failed.
        """
        loads = _loads
        by_e = self._by_e
        no_e = self._no_e
        raw_stream = self._raw_stream
        append = events.append
        decode = self.decode
        for payload in payloads:
            # The shapes of decode's inlined path; anything unusual (including
            # every error) goes through decode itself, the reference.
            try:
                obj = loads(payload)
            except _JSONDecodeError:
                append(decode(payload))  # raises the right error
                continue
            if obj.__class__ is dict:
                name = obj.get("stream")
                if name is None:
                    build = by_e.get(obj.get("e"))
                    if build is not None:
                        try:
                            append(build(obj, raw_stream))
                            continue
                        except (KeyError, TypeError, ValueError, ArithmeticError):
                            pass
                elif name.__class__ is str:
                    data = obj.get("data")
                    if data.__class__ is dict:
                        e = data.get("e")
                        build = by_e.get(e) if e is not None else no_e.get(name)
                        if build is not None:
                            try:
                                append(build(data, name))
                                continue
                            except (KeyError, TypeError, ValueError, ArithmeticError):
                                pass
            append(decode(payload))  # the reference path, and its errors

    def decode_object(self, obj: Any, stream: str | None = None) -> Event:
        """Type an already-parsed JSON value, as :meth:`decode` does after ``loads``.

        ``stream`` names the stream the value arrived on, when the caller
        knows it and the value carries no envelope; it defaults to the single
        stream the decoder was built with, if any.  Raises
        :class:`~trio_feed.DecodeError` for a JSON scalar or a known event
        missing a required key.
        """
        if type(obj) is dict:
            name = obj.get("stream")
            if type(name) is str and "data" in obj:
                data = obj["data"]
                if type(data) is dict:
                    return self._object(data, name)
                if type(data) is list:
                    return self._array(data, name)
                return UnknownEvent(obj, name)
            if "e" not in obj and name is None and (
                "result" in obj or "code" in obj or "error" in obj
            ):
                return self._control(obj)
            return self._object(obj, stream if stream is not None else self._raw_stream)
        if type(obj) is list:
            return self._array(obj, stream if stream is not None else self._raw_stream)
        raise DecodeError(f"expected a JSON object or array, got {type(obj).__name__}")

    def _object(self, o: _Object, stream: str | None) -> Event:
        e = o.get("e")
        if e is not None:
            try:
                build = self._by_e.get(e)
                if build is not None:
                    return build(o, stream)
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                raise _invalid(e, exc) from None
            return UnknownEvent(o, stream)
        build = self._no_e.get(stream)
        if build is None and stream is not None and stream not in self._cache:
            build = self._no_e_constructor(self._stream(stream))
        if build is None:
            if o.keys() >= _BOOK_TICKER_KEYS:
                build = self._keyed_book_ticker
            elif o.keys() >= _PARTIAL_DEPTH_KEYS:
                build = self._keyed_partial_depth
            else:
                return UnknownEvent(o, stream)
        try:
            return build(o, stream)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise _invalid(stream, exc) from None

    def _array(self, items: list[Any], stream: str | None) -> Event:
        parsed = self._stream(stream) if stream is not None else None
        expected: Any
        if parsed is not None and parsed.is_array:
            expected = KINDS[parsed.kind] or f"{parsed.interval}Ticker"
        elif items and type(items[0]) is dict:
            expected = items[0].get("e")
        else:
            return UnknownEvent(items, stream)
        wrap = _ARRAYS.get(expected) if type(expected) is str else None
        if wrap is None:
            return UnknownEvent(items, stream)
        for item in items:
            if type(item) is not dict or item.get("e") != expected:
                return UnknownEvent(items, stream)
        build = self._by_e.get(expected)
        if build is None:  # an array kind of another market
            return UnknownEvent(items, stream)
        try:
            events = [build(item, stream) for item in items]
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise _invalid(expected, exc) from None
        return wrap(events, stream)

    @staticmethod
    def _control(o: _Object) -> Event:
        if "code" in o:
            return ControlError(o["code"], o.get("msg", ""), o.get("id"))
        error = o.get("error")
        if error.__class__ is dict:  # the nested shape: {"error": {"code", "msg"}, "id"}
            return ControlError(error.get("code", -1), error.get("msg", ""), o.get("id"))
        if error is not None:
            return ControlError(-1, str(error), o.get("id"))
        return ControlResponse(o.get("id"), o["result"])

    def _stream(self, name: str) -> Stream | None:
        try:
            return self._cache[name]
        except KeyError:
            pass
        try:
            parsed: Stream | None = parse_stream(name, self.market)
        except InvalidStreamName:
            parsed = None
        self._remember(name, parsed)
        return parsed

    def _remember(self, name: str, parsed: Stream | None) -> None:
        if len(self._cache) >= _CACHE_LIMIT:
            return
        self._cache[name] = parsed
        build = self._no_e_constructor(parsed)
        if build is not None:
            self._no_e[name] = build

    def _no_e_constructor(self, parsed: Stream | None) -> _Constructor | None:
        """The constructor for payloads without ``e`` on this stream, if its kind has one."""
        if parsed is None:
            return None
        if parsed.kind == "bookTicker":
            return self._keyed_book_ticker
        if parsed.kind == "depth_partial":
            symbol = parsed.symbol.upper() if parsed.symbol is not None else None
            return self._wrap(_partial_depth(symbol))
        return None
