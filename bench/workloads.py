"""The benchmark's payloads, generated at run time from the shared Binance samples.

Nothing here is copied from the samples into the repository: the documented
example payloads in ``$BINANCE_SAMPLES`` (default: ``shared/binance/samples`` beside
the repository)
give each message's key order, and the recorded real messages give a pool
of price levels and symbols.  Values are then varied with a seeded
``random.Random``, so the server process and the client process build the
same bytes independently, and two runs of the benchmark send the same bytes.

Workloads (one *cycle* of distinct payloads each, repeated as needed):

``a``  raw mix of trade, bookTicker and small depthUpdate, about 200 B each,
       as ``/ws/<stream>`` delivers them (no envelope);
``b``  the same messages inside combined envelopes ``{"stream":…,"data":…}``;
``c``  diff-depth updates of 1–2 KB;
``d``  ``!miniTicker@arr``-shaped arrays of about 400 KB;
``e``  workload ``a`` sent over TLS (same payloads; the transport differs);
``f``  combined envelopes like ``b``, but every trade id, depth update id and
       bookTicker update id continues from the last one of its symbol for the
       whole run (no repeated cycle), so the supervised feed's continuity
       check sees a clean stream and hands out every message
       (:func:`feed_payloads`, :data:`FEED_STREAMS`).

:func:`stamped_frames` builds the latency workload: workload ``a`` with a
fixed-width ``"ts"`` field that the server overwrites with its send time
(``time.monotonic_ns() + TS_OFFSET``, always 19 digits, so the frame length
never changes).  ``CLOCK_MONOTONIC`` is system-wide on Linux, so the client
process can subtract it from its own clock.
"""

from __future__ import annotations

import functools
import json
import os
import random
import struct
from pathlib import Path

import orjson


def _samples_folder() -> Path:
    """``$BINANCE_SAMPLES``, else ``shared/`` beside the repository (as CI lays it out)."""
    if "BINANCE_SAMPLES" in os.environ:
        return Path(os.environ["BINANCE_SAMPLES"])
    candidate = Path(__file__).resolve().parents[2] / "shared" / "binance" / "samples"
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(
        "no Binance samples folder: set BINANCE_SAMPLES to shared/binance/samples"
    )


SAMPLES = _samples_folder()

#: Added to ``monotonic_ns()`` so that the stamp always has 19 digits.
TS_OFFSET = 10**18
TS_PLACEHOLDER = b"%d" % TS_OFFSET
CLOSE_FRAME = b"\x88\x02\x03\xe8"  # Close, code 1000, no reason

#: Workload name -> (payload-set name, TLS?, one-line description).
WORKLOADS: dict[str, tuple[str, bool, str]] = {
    "a": ("a", False, "raw mix ~200 B (trade, bookTicker, depthUpdate)"),
    "b": ("b", False, "combined envelopes of the same messages"),
    "c": ("c", False, "diff depth 1-2 KB"),
    "d": ("d", False, "!miniTicker@arr arrays ~400 KB"),
    "e": ("a", True, "workload a over TLS"),
    "f": ("f", False, "combined envelopes, ids continuing: the supervised feed"),
}

_CYCLE = {"a": 3000, "b": 3000, "c": 500, "d": 4}
_SYMBOLS_EXTRA = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]


def encode_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame, as a server sends it (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


@functools.cache
def _templates() -> dict[str, dict[str, object]]:
    """Key order of each documented example payload."""
    names = ("trade", "bookTicker", "depth_diff", "miniTicker")
    return {name: json.loads((SAMPLES / f"{name}.json").read_text()) for name in names}


@functools.cache
def _recorded() -> tuple[list[str], list[list[str]]]:
    """Symbols and [price, qty] levels seen in the recorded real messages."""
    symbols = set(_SYMBOLS_EXTRA)
    levels: list[list[str]] = []
    for name in ("recorded_cryptofeed_spot.jsonl", "recorded_cryptofeed_usdm_futures.jsonl"):
        path = SAMPLES / name
        if not path.exists():
            continue
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            data = orjson.loads(line).get("data", {})
            if isinstance(data, dict):
                if isinstance(data.get("s"), str):
                    symbols.add(data["s"])
                if data.get("e") == "depthUpdate":
                    for side in ("b", "a"):
                        levels.extend(x for x in data[side] if isinstance(x, list))
    if not levels:
        levels = [["0.35130000", "6195.00000000"], ["25.36520000", "40.66000000"]]
    return sorted(symbols), levels


def _price(rng: random.Random) -> str:
    return f"{rng.uniform(0.01, 70000):.8f}"


def _qty(rng: random.Random) -> str:
    return f"{rng.uniform(0.0001, 5000):.8f}"


def _fill(template: dict[str, object], values: dict[str, object]) -> dict[str, object]:
    """The template's keys, in order, with the given values (unknown keys keep theirs)."""
    return {key: values.get(key, default) for key, default in template.items()}


def _trade(rng: random.Random, symbol: str, now: int) -> dict[str, object]:
    return _fill(
        _templates()["trade"],
        {
            "E": now,
            "s": symbol,
            "t": rng.randrange(10**9, 4 * 10**9),
            "p": _price(rng),
            "q": _qty(rng),
            "T": now - rng.randrange(3),
            "m": rng.random() < 0.5,
        },
    )


def _book_ticker(rng: random.Random, symbol: str) -> dict[str, object]:
    return _fill(
        _templates()["bookTicker"],
        {
            "u": rng.randrange(10**10, 9 * 10**10),
            "s": symbol,
            "b": _price(rng),
            "B": _qty(rng),
            "a": _price(rng),
            "A": _qty(rng),
        },
    )


def _depth(rng: random.Random, symbol: str, now: int, levels: int) -> dict[str, object]:
    pool = _recorded()[1]
    first = rng.randrange(10**9, 5 * 10**10)
    bids = rng.randrange(levels + 1)
    return _fill(
        _templates()["depth_diff"],
        {
            "E": now,
            "s": symbol,
            "U": first,
            "u": first + rng.randrange(1, 50),
            "b": [rng.choice(pool) for _ in range(bids)],
            "a": [rng.choice(pool) for _ in range(levels - bids)],
        },
    )


def _stream_name(obj: dict[str, object]) -> str:
    symbol = str(obj["s"]).lower()
    if obj.get("e") == "trade":
        return f"{symbol}@trade"
    if obj.get("e") == "depthUpdate":
        return f"{symbol}@depth@100ms"
    return f"{symbol}@bookTicker"


def _small_mix(rng: random.Random, count: int) -> list[dict[str, object]]:
    symbols = _recorded()[0]
    now = 1_700_000_000_000
    out: list[dict[str, object]] = []
    for i in range(count):
        now += rng.randrange(0, 5)
        symbol = rng.choice(symbols)
        kind = i % 3
        if kind == 0:
            out.append(_trade(rng, symbol, now))
        elif kind == 1:
            out.append(_book_ticker(rng, symbol))
        else:
            out.append(_depth(rng, symbol, now, rng.randrange(8, 16)))
    return out


@functools.cache
def payloads(name: str) -> tuple[bytes, ...]:
    """One cycle of distinct payloads for payload set ``a``, ``b``, ``c`` or ``d``."""
    rng = random.Random(f"trio_feed-bench-{name}")
    count = _CYCLE[name]
    if name == "a":
        return tuple(orjson.dumps(o) for o in _small_mix(rng, count))
    if name == "b":
        return tuple(
            orjson.dumps({"stream": _stream_name(o), "data": o}) for o in _small_mix(rng, count)
        )
    if name == "c":
        symbols = _recorded()[0]
        out = []
        for i in range(count):
            target = rng.randrange(1024, 2048)
            obj = _depth(rng, rng.choice(symbols), 1_700_000_000_000 + i, 1)
            levels = obj["b"] if obj["b"] else obj["a"]
            assert isinstance(levels, list)
            data = orjson.dumps(obj)
            pool = _recorded()[1]
            while len(data) < target:
                levels.append(rng.choice(pool))
                data = orjson.dumps(obj)
            out.append(data)
        return tuple(out)
    if name == "d":
        template = _templates()["miniTicker"]
        symbols = [f"{s}{i}" if i else s for i in range(8) for s in _recorded()[0]]
        out = []
        for i in range(count):
            now = 1_700_000_000_000 + 1000 * i
            arr = []
            size = 2
            while size < 400 * 1024:
                item = orjson.dumps(
                    _fill(
                        template,
                        {
                            "E": now,
                            "s": symbols[len(arr) % len(symbols)],
                            "c": _price(rng),
                            "o": _price(rng),
                            "h": _price(rng),
                            "l": _price(rng),
                            "v": _qty(rng),
                            "q": _qty(rng),
                        },
                    )
                )
                arr.append(item)
                size += len(item) + 1
            out.append(b"[" + b",".join(arr) + b"]")
        return tuple(out)
    raise KeyError(name)


#: Payloads of workload ``f`` are made for a whole run (ids never repeat).
FEED_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
#: Every stream workload ``f`` sends on, for ``open_feed(FEED_STREAMS, ...)``.
FEED_STREAMS = tuple(
    f"{s.lower()}@{kind}" for s in FEED_SYMBOLS for kind in ("trade", "bookTicker", "depth@100ms")
)


@functools.cache
def feed_payloads(n: int) -> tuple[bytes, ...]:
    """Workload ``f``: ``n`` envelopes of the small mix with ids that continue per symbol."""
    rng = random.Random("trio_feed-bench-f")
    now = 1_700_000_000_000
    trade_id = dict.fromkeys(FEED_SYMBOLS, 10**9)
    update_id = dict.fromkeys(FEED_SYMBOLS, 10**10)
    ticker_id = dict.fromkeys(FEED_SYMBOLS, 2 * 10**10)
    out = []
    for i in range(n):
        now += rng.randrange(0, 5)
        symbol = FEED_SYMBOLS[rng.randrange(len(FEED_SYMBOLS))]
        kind = i % 3
        if kind == 0:
            obj = _trade(rng, symbol, now)
            trade_id[symbol] += 1
            obj["t"] = trade_id[symbol]
        elif kind == 1:
            obj = _book_ticker(rng, symbol)
            ticker_id[symbol] += rng.randrange(1, 4)
            obj["u"] = ticker_id[symbol]
        else:
            obj = _depth(rng, symbol, now, rng.randrange(8, 16))
            first = update_id[symbol] + 1
            obj["U"], obj["u"] = first, first + rng.randrange(0, 5)
            update_id[symbol] = int(obj["u"])  # type: ignore[call-overload]
        out.append(orjson.dumps({"stream": _stream_name(obj), "data": obj}))
    return tuple(out)


def mean_size(name: str) -> float:
    cycle = feed_payloads(3000) if name == "f" else payloads(WORKLOADS[name][0])
    return sum(map(len, cycle)) / len(cycle)


def message_list(name: str, n: int) -> list[bytes]:
    """The first ``n`` payloads the server sends for workload ``name``, in order."""
    if name == "f":
        return list(feed_payloads(n))
    cycle = payloads(WORKLOADS[name][0])
    reps, rest = divmod(n, len(cycle))
    return list(cycle) * reps + list(cycle[:rest])


def stream_bytes(name: str, n: int) -> int:
    """Bytes on the wire for ``n`` messages of workload ``name`` plus the Close frame."""
    if name == "f":
        return sum(len(encode_frame(p)) for p in feed_payloads(n)) + len(CLOSE_FRAME)
    cycle = payloads(WORKLOADS[name][0])
    sizes = [len(encode_frame(p)) for p in cycle]
    reps, rest = divmod(n, len(cycle))
    return reps * sum(sizes) + sum(sizes[:rest]) + len(CLOSE_FRAME)


@functools.cache
def stamped_frames() -> tuple[tuple[bytes, bytes], ...]:
    """Latency workload: frames of workload ``a`` split around a 19-digit ``"ts"`` value.

    The server sends ``head + stamp + tail``.
    """
    out = []
    for payload in payloads("a"):
        obj = orjson.loads(payload)
        obj["ts"] = TS_OFFSET
        frame = encode_frame(orjson.dumps(obj))
        at = frame.rindex(b'"ts":' + TS_PLACEHOLDER) + 5
        out.append((frame[:at], frame[at + len(TS_PLACEHOLDER) :]))
    return tuple(out)


def sized_depth(size: int) -> bytes:
    """A depthUpdate-shaped JSON payload of about ``size`` bytes (for the copy sweep)."""
    rng = random.Random(size)
    obj = _depth(rng, "BTCUSDT", 1_700_000_000_000, 0)
    levels = obj["b"]
    assert isinstance(levels, list)
    pool = _recorded()[1]
    data = orjson.dumps(obj)
    while len(data) < size:
        # Add about what is missing at once (a level is ~30 B), then top up.
        for _ in range(max(1, (size - len(data)) // 40)):
            levels.append(rng.choice(pool))
        data = orjson.dumps(obj)
    return data
