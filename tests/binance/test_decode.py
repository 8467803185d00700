"""Tests for trio_feed.binance._decode: dispatch, exactness, errors and lifetimes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_feed import DecodeError, InvalidStreamName, ProtocolError
from trio_feed.binance import (
    BookTicker,
    ControlError,
    ControlResponse,
    Decoder,
    DepthUpdate,
    MiniTicker,
    MiniTickerArray,
    PartialDepth,
    ReferencePrice,
    RollingWindowTicker,
    RollingWindowTickerArray,
    ServerShutdown,
    TickerArray,
    Trade,
    UnknownEvent,
    _decode,
    parse_stream,
)

TRADE: dict[str, Any] = {
    "e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.00100000",
    "q": "100.10", "T": 1672515782135, "m": True, "M": True,
}
BOOK_TICKER: dict[str, Any] = {
    "u": 400900217, "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000",
    "a": "25.36520000", "A": "40.66000000",
}
PARTIAL: dict[str, Any] = {
    "lastUpdateId": 160, "bids": [["0.0024", "10"]], "asks": [["0.0026", "100"], ["0.0027", "1"]],
}
MINI: dict[str, Any] = {
    "e": "24hrMiniTicker", "E": 1, "s": "BNBBTC", "c": "0.0025", "o": "0.0010",
    "h": "0.0025", "l": "0.0010", "v": "10000", "q": "18",
}
WINDOW: dict[str, Any] = {
    "e": "4hTicker", "E": 1, "s": "BNBBTC", "p": "0.0015", "P": "250.00", "o": "0.0010",
    "h": "0.0025", "l": "0.0010", "c": "0.0025", "w": "0.0018", "v": "10000", "q": "18",
    "O": 0, "C": 1675216573749, "F": 0, "L": 18150, "n": 18151,
}


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


def envelope(stream: str, data: object) -> bytes:
    return dumps({"stream": stream, "data": data})


# --- exactness ------------------------------------------------------------------------


def test_default_keeps_wire_strings() -> None:
    trade = Decoder().decode(dumps(TRADE))
    assert trade == Trade(1672515782136, "BNBBTC", 12345, "0.00100000", "100.10",
                          1672515782135, True, None)
    assert type(trade.price) is str


def test_decimals() -> None:
    decoder = Decoder(decimals=True)
    trade = decoder.decode(dumps(TRADE))
    assert isinstance(trade, Trade)
    assert trade.price == Decimal("0.00100000") and type(trade.price) is Decimal
    assert str(trade.price) == "0.00100000"  # trailing zeros survive
    assert trade.quantity == Decimal("100.10")
    assert type(trade.trade_id) is int

    book = decoder.decode(envelope("bnbusdt@bookTicker", BOOK_TICKER))
    assert isinstance(book, BookTicker)
    assert book.best_ask_quantity == Decimal("40.66000000")

    depth = decoder.decode(envelope("bnbbtc@depth5", PARTIAL))
    assert isinstance(depth, PartialDepth)
    assert depth.asks == [[Decimal("0.0026"), Decimal("100")], [Decimal("0.0027"), Decimal("1")]]

    mini = decoder.decode(envelope("!miniTicker@arr", [MINI, MINI]))
    assert isinstance(mini, MiniTickerArray)
    assert all(type(m.last_price) is Decimal for m in mini.events)
    assert mini.events[0].last_price == Decimal("0.0025")

    ref = decoder.decode(dumps({"e": "referencePrice", "s": "BAZUSD", "r": None, "t": 1}))
    assert isinstance(ref, ReferencePrice) and ref.reference_price is None


def test_decimals_reject_non_string_numbers() -> None:
    with pytest.raises(DecodeError, match="price"):
        Decoder(decimals=True).decode(dumps({**TRADE, "p": 0.1}))
    with pytest.raises(DecodeError, match="not a decimal"):
        Decoder(decimals=True).decode(dumps({**TRADE, "q": "abc"}))
    with pytest.raises(DecodeError, match="pairs"):
        Decoder(decimals=True).decode(envelope("x@depth5", {**PARTIAL, "bids": [["1"]]}))


# --- dispatch -------------------------------------------------------------------------


def test_envelope_sets_stream() -> None:
    event = Decoder().decode(envelope("bnbbtc@trade", TRADE))
    assert isinstance(event, Trade) and event.stream == "bnbbtc@trade"


def test_raw_single_stream_decoder_labels_and_types() -> None:
    trade = Decoder(["bnbbtc@trade"]).decode(dumps(TRADE))
    assert trade.stream == "bnbbtc@trade"

    book = Decoder(["bnbusdt@bookTicker"]).decode(dumps(BOOK_TICKER))
    assert book == BookTicker(400900217, "BNBUSDT", "25.35190000", "31.21000000",
                              "25.36520000", "40.66000000", None, None, "bnbusdt@bookTicker")

    depth = Decoder(["bnbbtc@depth10@100ms"]).decode(dumps(PARTIAL))
    assert depth == PartialDepth(160, PARTIAL["bids"], PARTIAL["asks"], "BNBBTC",
                                 "bnbbtc@depth10@100ms")


def test_raw_stream_kind_wins_over_key_set() -> None:
    """A partial-depth stream types its payload even if it also had bookTicker keys."""
    odd = {**PARTIAL, **BOOK_TICKER}
    assert isinstance(Decoder(["x@depth5"]).decode(dumps(odd)), PartialDepth)
    assert isinstance(Decoder(["x@bookTicker"]).decode(dumps(odd)), BookTicker)


def test_several_streams_means_no_default_stream() -> None:
    decoder = Decoder(["bnbbtc@trade", "bnbbtc@depth5"])
    assert decoder.decode(dumps(TRADE)).stream is None
    depth = decoder.decode(dumps(PARTIAL))  # typed by key set, symbol unknown
    assert isinstance(depth, PartialDepth) and depth.symbol is None and depth.stream is None


def test_key_set_fallback() -> None:
    decoder = Decoder()
    assert isinstance(decoder.decode(dumps(BOOK_TICKER)), BookTicker)
    assert isinstance(decoder.decode(dumps(PARTIAL)), PartialDepth)
    assert isinstance(decoder.decode(dumps({**BOOK_TICKER, "extra": 1})), BookTicker)


def test_decode_object_with_explicit_stream() -> None:
    decoder = Decoder()
    depth = decoder.decode_object(orjson.loads(dumps(PARTIAL)), "ethbtc@depth20")
    assert isinstance(depth, PartialDepth) and depth.symbol == "ETHBTC"
    assert depth.stream == "ethbtc@depth20"


def test_e_wins_over_stream_kind() -> None:
    """USD-M futures send partial depth in the diff form, with e='depthUpdate'."""
    futures = {"e": "depthUpdate", "E": 5, "T": 4, "s": "BTCUSDT", "U": 1, "u": 3, "pu": 0,
               "b": [], "a": [["1", "2"]]}
    event = Decoder().decode(envelope("btcusdt@depth5@500ms", futures))
    assert event == DepthUpdate(5, "BTCUSDT", 1, 3, [], [["1", "2"]], 0, 4,
                                "btcusdt@depth5@500ms")


def test_spot_depth_update_has_no_futures_fields() -> None:
    spot = {"e": "depthUpdate", "E": 5, "s": "BNBBTC", "U": 1, "u": 3, "b": [], "a": []}
    event = Decoder().decode(dumps(spot))
    assert isinstance(event, DepthUpdate)
    assert event.prev_final_update_id is None and event.transaction_time is None


def test_rolling_window_keeps_window() -> None:
    event = Decoder().decode(dumps(WINDOW))
    assert isinstance(event, RollingWindowTicker) and event.window == "4h"


def test_arrays_typed_by_stream_kind() -> None:
    decoder = Decoder()
    empty = decoder.decode(envelope("!miniTicker@arr", []))
    assert empty == MiniTickerArray([], "!miniTicker@arr")
    assert decoder.decode(envelope("!ticker@arr", [])) == TickerArray([], "!ticker@arr")
    window = decoder.decode(envelope("!ticker_4h@arr", [WINDOW]))
    assert isinstance(window, RollingWindowTickerArray)
    assert window.window == "4h" and window.events[0].stream == "!ticker_4h@arr"


def test_arrays_typed_by_elements() -> None:
    decoder = Decoder()
    arr = decoder.decode(dumps([MINI, MINI]))
    assert isinstance(arr, MiniTickerArray) and len(arr.events) == 2
    assert all(isinstance(m, MiniTicker) for m in arr.events)
    raw = Decoder(["!ticker_4h@arr"]).decode(dumps([WINDOW]))
    assert isinstance(raw, RollingWindowTickerArray) and raw.stream == "!ticker_4h@arr"


@pytest.mark.parametrize(
    ("stream", "items"),
    [
        (None, []),
        (None, [1, 2]),
        (None, [{"e": "markPriceUpdate"}]),
        (None, [MINI, WINDOW]),  # mixed kinds
        ("!miniTicker@arr", [WINDOW]),  # elements do not match the stream
        ("!ticker_1h@arr", [WINDOW]),  # wrong window
        ("!miniTicker@arr", [MINI, "x"]),
    ],
)
def test_unknown_arrays_are_kept(stream: str | None, items: list[Any]) -> None:
    payload = dumps(items) if stream is None else envelope(stream, items)
    event = Decoder().decode(payload)
    assert event == UnknownEvent(items, stream)


def test_unknown_e_is_kept() -> None:
    data = {"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "1"}
    assert Decoder().decode(envelope("btcusdt@markPrice", data)) == UnknownEvent(
        data, "btcusdt@markPrice"
    )
    assert Decoder(["btcusdt@trade"]).decode(dumps(data)) == UnknownEvent(data, "btcusdt@trade")


@pytest.mark.parametrize(
    "obj",
    [{}, {"x": 1}, {"s": "BTCUSDT", "u": 1}, {"stream": "a@trade"}, {"data": {"e": "trade"}}],
)
def test_unknown_shapes_are_kept(obj: dict[str, Any]) -> None:
    assert Decoder().decode(dumps(obj)) == UnknownEvent(obj, None)


def test_envelope_with_scalar_data_keeps_envelope() -> None:
    obj = {"stream": "btcusdt@trade", "data": 5}
    assert Decoder().decode(dumps(obj)) == UnknownEvent(obj, "btcusdt@trade")


def test_control_responses() -> None:
    decoder = Decoder(["btcusdt@trade"])
    assert decoder.decode(b'{"result":null,"id":1}') == ControlResponse(1, None)
    assert decoder.decode(b'{"result":["btcusdt@aggTrade"],"id":"abc"}') == ControlResponse(
        "abc", ["btcusdt@aggTrade"]
    )
    assert decoder.decode(b'{"result":true,"id":null}') == ControlResponse(None, True)
    assert decoder.decode(b'{"code": 0, "msg": "Unknown property","id": 9}') == ControlError(
        0, "Unknown property", 9
    )
    assert decoder.decode(b'{"code":3,"msg":"Invalid JSON"}') == ControlError(3, "Invalid JSON")


def test_server_shutdown_anywhere() -> None:
    decoder = Decoder(["!miniTicker@arr"])
    event = decoder.decode(b'{"e":"serverShutdown","E":1770123456789}')
    assert event == ServerShutdown(1770123456789, "!miniTicker@arr")
    wrapped = decoder.decode(
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}'
    )
    assert wrapped == ServerShutdown(1770123456789, "!serverShutdown")


def test_unknown_extra_keys_are_ignored() -> None:
    event = Decoder().decode(dumps({**TRADE, "b": 88, "a": 99, "zz": [1]}))
    assert isinstance(event, Trade) and event.trade_id == 12345


def test_unparseable_envelope_names_are_not_errors() -> None:
    decoder = Decoder()
    event = decoder.decode(envelope("BTCUSDT@whatever", BOOK_TICKER))
    assert isinstance(event, BookTicker) and event.stream == "BTCUSDT@whatever"


def test_invalid_constructor_stream() -> None:
    with pytest.raises(InvalidStreamName):
        Decoder(["BTCUSDT@trade"])


def test_stream_names_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = parse_stream

    def counting(name: Any, *market: Any) -> Any:
        calls.append(name)
        return real(name, *market)

    monkeypatch.setattr(_decode, "parse_stream", counting)
    decoder = Decoder()
    for _ in range(50):
        decoder.decode(envelope("bnbusdt@bookTicker", BOOK_TICKER))
        decoder.decode(envelope("bnbbtc@depth5", PARTIAL))
        decoder.decode(envelope("bnbbtc@trade", TRADE))  # typed by e: never parsed
    assert sorted(calls) == ["bnbbtc@depth5", "bnbusdt@bookTicker"]


def test_stream_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_decode, "_CACHE_LIMIT", 3)
    decoder = Decoder()
    for i in range(10):
        decoder.decode(envelope(f"s{i}@bookTicker", BOOK_TICKER))
    assert len(decoder._cache) == 3


def test_stream_typed_payloads_past_the_cache_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_decode, "_CACHE_LIMIT", 0)
    decoder = Decoder()
    for _ in range(2):
        depth = decoder.decode(envelope("ethbtc@depth5", {**PARTIAL, **BOOK_TICKER}))
        assert isinstance(depth, PartialDepth) and depth.symbol == "ETHBTC"
    assert decoder._cache == {} and decoder._no_e == {}


def test_unknown_e_on_a_book_ticker_stream_stays_unknown() -> None:
    decoder = Decoder(["x@bookTicker", "y@depth5"])
    assert isinstance(decoder.decode(envelope("x@bookTicker", BOOK_TICKER)), BookTicker)
    odd = {**BOOK_TICKER, "e": "bookTickerV2"}
    assert decoder.decode(envelope("x@bookTicker", odd)) == UnknownEvent(odd, "x@bookTicker")


def test_missing_key_without_e_names_the_stream() -> None:
    broken = {k: v for k, v in BOOK_TICKER.items() if k != "b"}
    decoder = Decoder()
    for _ in range(2):  # first sight (general path), then the inlined path
        with pytest.raises(DecodeError, match=r"'x@bookTicker' event is missing .* 'b'") as info:
            decoder.decode(envelope("x@bookTicker", broken))
        assert info.value.payload.startswith(b'{"stream":"x@bookTicker"')


def test_hot_path_agrees_with_decode_object() -> None:
    decoder = Decoder(["bnbbtc@trade"])
    for payload in [dumps(TRADE), envelope("bnbbtc@trade", TRADE), dumps(WINDOW),
                    envelope("x@bookTicker", BOOK_TICKER), envelope("x@depth20", PARTIAL),
                    envelope("x@trade", BOOK_TICKER),
                    dumps(BOOK_TICKER), b'{"result":null,"id":1}']:
        assert decoder.decode(payload) == decoder.decode_object(orjson.loads(payload))


HOT_AND_ODD = [
    dumps(TRADE), envelope("bnbbtc@trade", TRADE), dumps(WINDOW),
    envelope("x@bookTicker", BOOK_TICKER), envelope("x@depth20", PARTIAL),
    envelope("x@trade", BOOK_TICKER), dumps(BOOK_TICKER), b'{"result":null,"id":1}',
    b"[1,2]", envelope("x@trade", {**TRADE, "p": 5}),
]


@pytest.mark.parametrize("decimals", [False, True])
def test_decode_batch_agrees_with_decode(decimals: bool) -> None:
    """The feed's batch path gives what decode gives, payload by payload, in order."""
    payloads = HOT_AND_ODD * 3
    decoder = Decoder(["bnbbtc@trade"], decimals=decimals)
    expected = []
    for payload in payloads:
        try:
            expected.append(decoder.decode(payload))
        except DecodeError:
            break  # decimals=True refuses the number price: the batch stops there too
    events: list[object] = []
    if len(expected) == len(payloads):
        decoder.decode_batch(payloads, events)  # type: ignore[arg-type]
    else:
        with pytest.raises(DecodeError, match="expected a decimal string"):
            decoder.decode_batch(payloads, events)  # type: ignore[arg-type]
    assert events == expected


@pytest.mark.parametrize("bad", [b"not json", envelope("x@trade", {"e": "trade"})])
def test_decode_batch_raises_at_the_failing_payload_with_the_ones_before_it(bad: bytes) -> None:
    decoder = Decoder()
    good = [dumps(TRADE), envelope("x@bookTicker", BOOK_TICKER)]
    events: list[object] = []
    with pytest.raises(DecodeError) as info:
        decoder.decode_batch([*good, bad, dumps(TRADE)], events)  # type: ignore[list-item]
    assert events == [decoder.decode(p) for p in good]  # len(events): the failing index
    assert info.value.payload == bad[:200]


def test_accepts_bytearray_and_memoryview() -> None:
    decoder = Decoder()
    payload = dumps(TRADE)
    expected = decoder.decode(payload)
    assert decoder.decode(bytearray(payload)) == expected
    assert decoder.decode(memoryview(bytearray(b"xx" + payload))[2:]) == expected


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"{", b"not json", b'{"e":"trade",}', b"\x00"])
def test_invalid_json(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="not valid JSON") as info:
        Decoder().decode(payload)
    assert info.value.payload == payload
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "payload", [b'{"e":"trade","s":"\xff"}', b"\xc3\x28", b'"\xed\xa0\x80"']
)
def test_invalid_utf8_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        Decoder().decode(memoryview(payload))
    assert info.value.close_code == 1007


def test_json_escaped_lone_surrogate_is_a_decode_error() -> None:
    """Valid UTF-8 bytes; the JSON escape is what orjson refuses."""
    with pytest.raises(DecodeError):
        Decoder().decode(b'{"s":"\\ud800"}')


@pytest.mark.parametrize("payload", [b"1", b'"text"', b"null", b"true", b"1.5"])
def test_json_scalars_are_errors(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="object or array") as info:
        Decoder().decode(payload)
    assert info.value.payload == payload
    with pytest.raises(DecodeError):
        Decoder().decode_object(orjson.loads(payload))


@pytest.mark.parametrize("key", ["E", "s", "t", "p", "q", "T", "m"])
def test_missing_key_names_the_key(key: str) -> None:
    data = {k: v for k, v in TRADE.items() if k != key}
    for payload in (dumps(data), envelope("bnbbtc@trade", data)):
        with pytest.raises(DecodeError, match=f"'trade' event is missing the required key '{key}'"):
            Decoder().decode(payload)
    with pytest.raises(DecodeError, match=f"'{key}'"):
        Decoder().decode_object(data)


def test_missing_nested_kline_key() -> None:
    kline = {"e": "kline", "E": 1, "s": "BNBBTC", "k": {"t": 1, "i": "1m"}}
    with pytest.raises(DecodeError, match=r"'k\.T'"):
        Decoder().decode(dumps(kline))
    with pytest.raises(DecodeError, match="malformed 'kline'"):
        Decoder().decode(dumps({**kline, "k": "oops"}))


def test_missing_key_without_e() -> None:
    with pytest.raises(DecodeError, match="'lastUpdateId'"):
        Decoder(["x@depth5"]).decode(b'{"bids":[],"asks":[]}')
    with pytest.raises(DecodeError, match="'A'"):
        Decoder(["x@bookTicker"]).decode(dumps({k: v for k, v in BOOK_TICKER.items()
                                                if k != "A"}))


def test_missing_key_in_array_element() -> None:
    broken = {k: v for k, v in MINI.items() if k != "c"}
    with pytest.raises(DecodeError, match="'c'"):
        Decoder().decode(envelope("!miniTicker@arr", [MINI, broken]))


def test_unhashable_e_is_an_error_not_a_crash() -> None:
    with pytest.raises(DecodeError):
        Decoder().decode(b'{"e":["trade"],"E":1}')
    with pytest.raises(DecodeError):
        Decoder().decode(b'{"stream":"a@trade","data":{"e":{},"E":1}}')


def test_error_payload_is_truncated_owned_bytes() -> None:
    payload = b"[" * 1000
    with pytest.raises(DecodeError) as info:
        Decoder().decode(memoryview(payload))
    assert type(info.value.payload) is bytes and len(info.value.payload) == 200


# --- lifetimes ------------------------------------------------------------------------


def test_decode_does_not_retain_a_lent_view() -> None:
    """A live export of the buffer would make the resize raise BufferError."""
    buffer = bytearray(envelope("bnbbtc@trade", TRADE))
    event = Decoder().decode(memoryview(buffer))
    buffer.extend(b" ")
    assert isinstance(event, Trade)


@pytest.mark.parametrize("payload", [b"nope", b"\xff", b"5", b'{"e":"trade"}'])
def test_errors_do_not_retain_a_lent_view(payload: bytes) -> None:
    buffer = bytearray(payload)
    with pytest.raises((DecodeError, ProtocolError)) as info:
        Decoder().decode(memoryview(buffer))
    buffer.extend(b" ")  # the traceback kept in ``info`` must not pin the view
    assert info.value is not None


# --- property -------------------------------------------------------------------------

ids = st.integers(min_value=0, max_value=2**63 - 1)
decimal_text = st.decimals(
    min_value=0, max_value=10**12, places=8, allow_nan=False, allow_infinity=False
).map(lambda d: f"{d:f}")
wire_text = st.one_of(decimal_text, st.text(max_size=30))


@given(
    event_time=ids, symbol=st.text(min_size=1, max_size=20), trade_id=ids,
    price=wire_text, quantity=wire_text, trade_time=ids, maker=st.booleans(),
    stream=st.sampled_from([None, "btcusdt@trade", "\u5e01\u5b89usdt@trade"]),
)
def test_trade_round_trip(
    event_time: int, symbol: str, trade_id: int, price: str, quantity: str,
    trade_time: int, maker: bool, stream: str | None,
) -> None:
    data = {"e": "trade", "E": event_time, "s": symbol, "t": trade_id, "p": price,
            "q": quantity, "T": trade_time, "m": maker, "M": True}
    payload = dumps(data) if stream is None else envelope(stream, data)
    event = Decoder().decode(payload)
    assert event == Trade(event_time, symbol, trade_id, price, quantity, trade_time, maker,
                          stream)


@given(price=decimal_text, quantity=decimal_text)
def test_trade_round_trip_decimals(price: str, quantity: str) -> None:
    event = Decoder(decimals=True).decode(dumps({**TRADE, "p": price, "q": quantity}))
    assert isinstance(event, Trade)
    assert event.price == Decimal(price) and f"{event.price:f}" == price
    assert event.quantity == Decimal(quantity) and f"{event.quantity:f}" == quantity


def test_every_documented_e_has_a_type() -> None:
    """The e table covers STREAMS.md section 4, plus the futures bookTicker."""
    known = set(_decode._BY_E)
    assert known == {
        "trade", "aggTrade", "blockTrade", "kline", "24hrMiniTicker", "24hrTicker",
        "1hTicker", "4hTicker", "1dTicker", "avgPrice", "bookTicker", "depthUpdate",
        "referencePrice", "serverShutdown",
    }
