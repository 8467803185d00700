"""Events in, the same events out, through a real server: every type, both formats."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
import trio

from trio_feed.binance import (
    ControlResponse,
    Decoder,
    ServerShutdown,
    Trade,
    UnknownEvent,
    parse_stream,
)
from trio_feed.broker import (
    SchemaError,
    control_key,
    open_redis_feed,
    open_redis_sink,
    snapshot_key,
    stream_key,
)
from trio_feed.exchange import Market

from .conftest import trades

STREAMS = [
    "btcusdt@trade", "btcusdt@aggTrade", "btcusdt@blockTrade", "btcusdt@kline_1m",
    "btcusdt@miniTicker", "btcusdt@ticker", "btcusdt@ticker_1h", "btcusdt@avgPrice",
    "btcusdt@bookTicker", "btcusdt@depth5", "btcusdt@depth@100ms", "btcusdt@referencePrice",
    "!miniTicker@arr", "!ticker@arr", "!ticker_1h@arr",
]


def market_frames(ticks: int) -> list[tuple[bytes, object]]:
    """Combined-stream frames of every kind the embedded market emits, with their events."""
    market = Market(0)
    decoder = Decoder([parse_stream(s) for s in STREAMS])
    frames = []
    for _ in range(ticks):
        market.step()
        for name in STREAMS:
            for payload in market.payloads(name):
                frame = orjson.dumps({"stream": name, "data": payload})
                frames.append((frame, decoder.decode(frame)))
    return frames


def test_key_layout_shares_one_hash_tag_per_symbol() -> None:
    assert stream_key("btcusdt@trade") == "md:{binance:spot:btcusdt}:trade"
    assert stream_key("btcusdt@depth@100ms", market="usdm") == (
        "md:{binance:usdm:btcusdt}:depth@100ms")
    assert snapshot_key("btcusdt@depth") == "md:{binance:spot:btcusdt}:depth:snapshot"
    assert stream_key("!miniTicker@arr") == "md:{binance:spot:!all}:!miniTicker@arr"
    assert control_key() == "md:{binance:spot}:control"


async def read_all(url: str, prefix: str, streams: list[str], count: int,
                   **options: object) -> list[object]:
    out: list[object] = []
    async with open_redis_feed(url, streams, prefix=prefix, start="earliest",
                               **options) as feed:  # type: ignore[arg-type]
        async for event in feed:
            out.append(event)
            if len(out) == count:
                break
        assert feed.statistics().gaps == 0
    return out


async def test_every_event_type_round_trips_as_normalised_json(redis_server, prefix) -> None:
    frames = market_frames(800)
    events = [event for _, event in frames]
    events.append(ServerShutdown(1_700_000_000_000, "!serverShutdown"))
    events.append(UnknownEvent({"e": "newKind", "x": [1, "2"]}, "btcusdt@trade"))
    kinds = {type(e).__name__ for e in events}
    assert len(kinds) == 17, kinds
    with trio.fail_after(30):
        async with open_redis_sink(redis_server.url, prefix=prefix) as sink:
            for event in events:
                await sink.send(event)
        stats = sink.statistics()
        assert stats.events == len(events) and stats.pending_events == 0
        assert stats.dropped_events == 0 and stats.already_written == 0
        names = [*STREAMS, "!serverShutdown"]
        got = await read_all(redis_server.url, prefix, names, len(events), books=False)
    by_stream: dict[str | None, list[object]] = {}
    for event in events:
        by_stream.setdefault(event.stream, []).append(event)
    got_by_stream: dict[str | None, list[object]] = {}
    for event in got:
        got_by_stream.setdefault(event.stream, []).append(event)  # type: ignore[attr-defined]
    assert got_by_stream == by_stream


async def test_raw_frames_round_trip_and_decimals_apply_on_read(redis_server, prefix) -> None:
    frames = market_frames(300)
    with trio.fail_after(20):
        async with open_redis_sink(redis_server.url, prefix=prefix) as sink:
            for frame, event in frames:
                await sink.send(event, raw=frame)  # type: ignore[arg-type]
        got = await read_all(redis_server.url, prefix, STREAMS, len(frames), books=False)
        exact = await read_all(redis_server.url, prefix, STREAMS, len(frames), books=False,
                               decimals=True)
    key = lambda e: (e.stream, repr(e))  # noqa: E731
    assert sorted(got, key=key) == sorted((e for _, e in frames), key=key)
    decimal_decoder = Decoder([parse_stream(s) for s in STREAMS], decimals=True)
    expected = [decimal_decoder.decode(f) for f, _ in frames]
    assert sorted(exact, key=key) == sorted(expected, key=key)
    assert any(isinstance(getattr(e, "price", None), Decimal) for e in exact)


async def test_entries_are_micro_batches_with_their_id_ranges(redis_server, prefix) -> None:
    with trio.fail_after(10):
        async with open_redis_sink(redis_server.url, prefix=prefix,
                                   max_batch_events=100, flush_interval=60) as sink:
            for event in trades(1, 250):
                await sink.send(event)
        import coredis

        async with coredis.Redis.from_url(redis_server.url) as client:
            entries = await client.xrange(stream_key("btcusdt@trade", prefix=prefix))
    fields = [e.field_values for e in entries]
    assert [(f[b"n"], f[b"first"], f[b"last"]) for f in fields] == [
        (b"100", b"1", b"100"), (b"100", b"101", b"200"), (b"50", b"201", b"250")]
    assert all(f[b"v"] == b"1" and f[b"fmt"] == b"json" and f[b"gap"] == b"" for f in fields)
    assert sink.statistics().entries == 3


async def test_an_event_without_a_stream_is_refused(redis_server, prefix) -> None:
    with trio.fail_after(10):
        async with open_redis_sink(redis_server.url, prefix=prefix) as sink:
            with pytest.raises(ValueError, match="no stream"):
                await sink.send(ControlResponse(1, None))
            assert sink.statistics().pending_events == 0


async def test_missing_ids_become_a_gap_and_are_counted(redis_server, prefix) -> None:
    with trio.fail_after(10):
        async with open_redis_sink(redis_server.url, prefix=prefix, max_batch_events=4) as sink:
            for event in [*trades(1, 10), *trades(15, 6)]:
                await sink.send(event)
        async with open_redis_feed(redis_server.url, ["btcusdt@trade"], prefix=prefix,
                                   start="earliest") as feed:
            got = [await feed.receive() for _ in range(17)]
            stats = feed.statistics()
    gaps = [g for g in got if not isinstance(g, Trade)]
    assert [(g.first, g.last, g.count, g.reason) for g in gaps] == [(11, 14, 4, "missing")]
    assert got.index(gaps[0]) == 10  # right before trade 15
    assert stats.missing == 4 and stats.gaps == 1 and stats.events == 17
    assert stats.streams["btcusdt@trade"].missing == 4


async def test_start_after_an_id_and_from_a_time(redis_server, prefix) -> None:
    clock = [1_800_000_000_000_000]  # µs
    with trio.fail_after(10):
        async with open_redis_sink(redis_server.url, prefix=prefix, max_batch_events=10,
                                   wall_clock_us=lambda: clock[0]) as sink:
            for event in trades(1, 10):
                await sink.send(event)
            await sink.flush()
            clock[0] += 5_000_000
            for event in trades(11, 10):
                await sink.send(event)
        since = (clock[0] - 1_000_000) / 1e6
        async with open_redis_feed(redis_server.url, ["btcusdt@trade"], prefix=prefix,
                                   start=since) as feed:
            first = await feed.receive()
        async with open_redis_feed(redis_server.url, ["btcusdt@trade"], prefix=prefix,
                                   start=f"{1_800_000_000_000}-0") as feed:
            after_id = await feed.receive()
    assert isinstance(first, Trade) and first.trade_id == 11
    assert isinstance(after_id, Trade) and after_id.trade_id == 11


async def test_an_unknown_schema_version_is_refused(redis_server, prefix) -> None:
    import coredis

    with trio.fail_after(10):
        async with coredis.Redis.from_url(redis_server.url) as client:
            await client.xadd(stream_key("btcusdt@trade", prefix=prefix),
                              {"v": "2", "fmt": "json", "p": "[]"})
        try:
            async with open_redis_feed(redis_server.url, ["btcusdt@trade"], prefix=prefix,
                                       start="earliest") as feed:
                await feed.receive()
        except SchemaError as exc:
            assert "version" in str(exc)
        else:
            raise AssertionError("a version 2 entry was accepted")


async def test_a_feed_with_payloads_publishes_the_frames_as_received(redis_server, prefix) -> None:
    """publish() of a payloads=True feed writes fmt=raw entries: the frames the feed read."""
    import coredis

    from trio_feed import open_feed
    from trio_feed.broker import publish
    from trio_feed.exchange import open_exchange

    with trio.fail_after(30):
        async with open_exchange(seed=5, rate=2000.0, clock=None) as exchange, \
                open_feed(["btcusdt@trade"], base_url=exchange.base_url,
                          payloads=True) as feed, \
                open_redis_sink(redis_server.url, prefix=prefix) as sink:
            sent = await publish(feed, sink, limit=300)
        async with coredis.Redis.from_url(redis_server.url) as client:
            entries = await client.xrange(stream_key("btcusdt@trade", prefix=prefix))
        got = await read_all(redis_server.url, prefix, ["btcusdt@trade"], sent, books=False)
    fields = [e.field_values for e in entries]
    assert sent == 300
    assert fields and all(f[b"fmt"] == b"raw" for f in fields)
    # Each payload is the frames side by side, each one the combined envelope as sent.
    assert all(f[b"p"].startswith(b'[{"stream":"btcusdt@trade","data":{') for f in fields)
    assert sum(int(f[b"n"]) for f in fields) == 300
    first = got[0].trade_id
    assert [t.trade_id for t in got] == list(range(first, first + 300))
    assert all(isinstance(e, Trade) for e in got)
