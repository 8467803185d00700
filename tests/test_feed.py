"""open_feed end to end: the local exchange over real sockets, both modes, raw, combined, TLS."""

from __future__ import annotations

import itertools
import ssl
from decimal import Decimal

import orjson
import pytest
import trio
import trio.testing
import trustme

from trio_feed import (
    ConnectionClosed,
    InvalidStreamName,
    format_event,
    open_feed,
)
from trio_feed.binance import BookTicker, Decoder, DepthUpdate, PartialDepth, Trade
from trio_feed.binance._urls import envelope
from trio_feed.exchange import open_exchange
from trio_feed.feed._outbox import Batch

STREAMS = ["btcusdt@trade", "btcusdt@bookTicker", "ethusdt@depth@100ms", "btcusdt@depth5@100ms"]


async def take(feed: object, n: int) -> list[object]:
    events = []
    async for event in feed:  # type: ignore[attr-defined]
        events.append(event)
        if len(events) == n:
            break
    return events


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_combined_stream_gives_typed_events(mode: str) -> None:
    with trio.fail_after(10):
        # The simulated clock: the 100 ms depth streams are due every few ticks, so 300
        # events hold all four kinds however fast or slow the machine is (on the wall clock
        # what 300 events hold depends on the machine's speed: a loaded run failed here).
        async with open_exchange(seed=3, rate=0, clock=None) as exchange:
            async with open_feed(STREAMS, mode=mode, base_url=exchange.base_url) as feed:
                events = await take(feed, 300)
                stats = feed.statistics()
    kinds = {type(e) for e in events}
    assert {Trade, BookTicker, DepthUpdate, PartialDepth} <= kinds
    assert all(e.stream in STREAMS for e in events)  # type: ignore[attr-defined]
    trades = [e for e in events if isinstance(e, Trade)]
    assert [t.trade_id for t in trades] == list(
        range(trades[0].trade_id, trades[0].trade_id + len(trades))
    )
    depth = [e for e in events if isinstance(e, DepthUpdate)]
    for before, after in itertools.pairwise(depth):
        assert after.first_update_id == before.final_update_id + 1
    assert isinstance(trades[0].price, str) and "." in trades[0].price
    assert stats.events == 300
    assert stats.copies == (0 if mode == "inline" else stats.copies)
    if mode == "channel":
        assert stats.copies >= 300
    assert all(format_event(e) for e in events)


async def test_both_modes_see_the_same_event_sequence() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=11, rate=0, clock=None) as exchange:
            results = []
            for mode in ("inline", "channel"):
                async with open_feed(STREAMS, mode=mode, base_url=exchange.base_url) as feed:
                    results.append(await take(feed, 400))
    assert results[0] == results[1]


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_raw_stream_types_payloads_without_an_envelope(mode: str) -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=5, rate=0) as exchange:
            url = exchange.raw_url("btcusdt@bookTicker")
            async with open_feed(["btcusdt@bookTicker"], mode=mode, url=url) as feed:
                events = await take(feed, 50)
    assert all(isinstance(e, BookTicker) for e in events)
    assert all(e.stream == "btcusdt@bookTicker" for e in events)  # type: ignore[attr-defined]


async def test_decimals_on_request() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=5, rate=0) as exchange:
            async with open_feed(["btcusdt@trade"], base_url=exchange.base_url,
                                 decimals=True) as feed:
                (event,) = await take(feed, 1)
    assert isinstance(event, Trade)
    assert isinstance(event.price, Decimal)


async def test_bad_stream_name_fails_before_connecting() -> None:
    with pytest.raises(InvalidStreamName, match="lowercase"):
        open_feed(["BTCUSDT@trade"])


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_server_shutdown_rotates_without_a_gap_or_a_duplicate(mode: str) -> None:
    with trio.fail_after(30):
        async with open_exchange(seed=2, rate=500, shared_market=True) as exchange:
            async with open_feed(["btcusdt@trade"], mode=mode, base_url=exchange.base_url) as feed:
                got = await take(feed, 50)
                await exchange.announce_shutdown()
                # However loaded the machine, consume until the rotation is done, then past it.
                while feed.statistics().rotations == 0:
                    got += await take(feed, 10)
                got += await take(feed, 200)
                stats = feed.statistics()
    ids = [e.trade_id for e in got]  # type: ignore[attr-defined]
    assert not any(type(e).__name__ == "ServerShutdown" for e in got)  # handled, not handed out
    assert stats.rotations == 1 and stats.reconnects == {"server shutdown": 1}
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # make-before-break: no gap, no repeat
    assert stats.missing == 0


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_server_close_is_raised_not_swallowed_without_reconnect(mode: str) -> None:
    stop = trio.Event()

    async def serve(*, task_status: trio.TaskStatus[object]) -> None:
        async with open_exchange(seed=2, rate=0, max_messages=10) as exchange:
            task_status.started(exchange)
            await stop.wait()  # leaving the block closes every client with 1001

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exchange = await nursery.start(serve)
            async with open_feed(["btcusdt@trade"], mode=mode, reconnect=False,
                                 base_url=exchange.base_url) as feed:  # type: ignore[attr-defined]
                got = await take(feed, 10)
                stop.set()
                with pytest.raises(ConnectionClosed) as info:
                    await take(feed, 1)
    assert len(got) == 10
    assert info.value.code == 1001


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_pings_are_answered_so_the_feed_stays_up(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    # Virtual time: the exchange's pings, its pong deadline and the 1.2 s all run on
    # trio's clock, and a pong answered late is missed in virtual time just the same.
    with trio.fail_after(10):
        async with open_exchange(seed=1, rate=50, ping_interval=0.05,
                                 pong_timeout=0.3) as exchange:
            # This server pings 20 times a second, 400 times Binance's rate, so
            # the token bucket must allow the pongs (Binance's would not).
            async with open_feed(["btcusdt@trade"], mode=mode, base_url=exchange.base_url,
                                 send_rate=100, send_burst=10) as feed:
                with trio.move_on_after(1.2):
                    await take(feed, 10**9)
                (connection,) = feed.statistics().open_connections
                assert connection.pongs_sent >= 10
            assert exchange.statistics().pongs_missed == 0


async def test_feed_over_tls_with_trustme() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(10):
        async with open_exchange(seed=4, rate=0, ssl_context=server_context) as exchange:
            assert exchange.base_url.startswith("wss://")
            for mode in ("inline", "channel"):
                async with open_feed(STREAMS, mode=mode, base_url=exchange.base_url,
                                     ssl_context=client_context) as feed:
                    assert len(await take(feed, 100)) == 100


async def test_consumer_failure_arrives_as_itself_and_counts_discards() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=4, rate=0) as exchange:
            with pytest.raises(ZeroDivisionError):
                async with open_feed(STREAMS, base_url=exchange.base_url, max_queued=1) as feed:
                    await take(feed, 5)
                    await trio.sleep(0.2)  # let the reader fill the channel
                    1 / 0  # noqa: B018
            stats = feed.statistics()
    assert stats.events == 5
    assert stats.messages > stats.events
    assert stats.events + stats.duplicates + stats.discarded == stats.messages  # all accounted


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_every_message_read_is_either_delivered_or_counted(mode: str) -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=9, rate=0) as exchange:
            async with open_feed(STREAMS, mode=mode, base_url=exchange.base_url) as feed:
                await take(feed, 777)
            stats = feed.statistics()
    assert stats.events == 777
    assert stats.events + stats.duplicates + stats.discarded == stats.messages


async def test_slow_consumer_cannot_silence_the_pongs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rule 6: with the outbox full, the connection task keeps reading and answering pings.

    On the autojump clock, as the exchange's pings and pong deadline are.
    """
    with trio.fail_after(15):
        async with open_exchange(seed=1, rate=200, ping_interval=0.05,
                                 pong_timeout=0.3) as exchange:
            async with open_feed(["btcusdt@trade", "btcusdt@bookTicker"], mode="channel",
                                 base_url=exchange.base_url, max_queued=1,
                                 send_rate=100, send_burst=10) as feed:
                first = await take(feed, 1)
                await trio.sleep(1.5)  # a consumer stuck for 5x the pong deadline
                later = await take(feed, 200)
                stats = feed.statistics()
            assert exchange.statistics().pongs_missed == 0
    assert len(first) == 1 and len(later) == 200
    assert stats.open_connections[0].pongs_sent >= 10
    assert stats.stalls >= 1 and stats.stall_seconds > 1.0
    assert stats.dropped == 0


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_receive_nowait_takes_what_is_queued_and_never_waits(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=3, rate=200) as exchange:
            async with open_feed(["btcusdt@trade"], mode=mode,
                                 base_url=exchange.base_url) as feed:
                first = await feed.receive()
                await trio.sleep(0.2)  # about 40 trades arrive and queue up, untaken
                exchange.pause_sending()
                await trio.sleep(0.1)  # what was sent before the pause has been read
                queued = feed.statistics().queued
                taken = []
                while True:
                    try:
                        taken.append(feed.receive_nowait())
                    except trio.WouldBlock:
                        break
                assert queued > 0 and len(taken) == queued and feed.statistics().queued == 0
                with pytest.raises(trio.WouldBlock):
                    feed.receive_nowait()  # nothing queued: it raises, it does not wait
                exchange.resume_sending()
                after = await feed.receive()
                stats = feed.statistics()
    ids = [e.trade_id for e in [first, *taken, after]]  # type: ignore[attr-defined]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # in order, none lost
    assert stats.events == len(ids)


@pytest.mark.parametrize("mode", ["inline", "channel"])
async def test_protocol_violation_arrives_after_the_events_before_it(
    mode: str, nursery: trio.Nursery
) -> None:
    """A peer that breaks the protocol mid-chunk: the events before the fault are delivered,
    then the ProtocolError arrives as itself, and the accounting still balances."""
    from trio_feed import ProtocolError
    from trio_feed.wire import Opcode

    from .scripted_server import ServerSide, start_scripted_server
    from .wire.server_frames import server_frame

    def trade(i: int) -> bytes:
        return (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":%d,"s":"BTCUSDT","t":%d,'
                b'"p":"1.5","q":"2","T":%d,"m":true,"M":true}}' % (i, i, i))

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        chunk = b"".join(server_frame(Opcode.TEXT, trade(i)) for i in (1, 2, 3))
        await peer.stream.send_all(chunk + server_frame(Opcode.TEXT, b"x", rsv=4))
        await peer.read_frame()  # the client's Close 1002

    port = await start_scripted_server(nursery, script)
    got: list[object] = []
    with trio.fail_after(10):
        with pytest.raises(ProtocolError) as info:
            async with open_feed(["btcusdt@trade"], mode=mode, reconnect=False,
                                 base_url=f"ws://127.0.0.1:{port}") as feed:
                async for event in feed:
                    got.append(event)
    assert info.value.close_code == 1002
    assert [e.trade_id for e in got] == [1, 2, 3]  # type: ignore[attr-defined]
    stats = feed.statistics()
    assert stats.messages == stats.events + stats.duplicates + stats.dropped + stats.discarded == 3


async def test_payloads_are_the_frames_each_event_came_from() -> None:
    """payloads=True: last_payload is the envelope as received, and it decodes to the event."""
    decoder = Decoder(STREAMS)
    with trio.fail_after(10):
        async with open_exchange(seed=3, rate=0, clock=None) as exchange:
            async with open_feed(STREAMS, base_url=exchange.base_url, payloads=True) as feed:
                assert feed.keeps_payloads and feed.last_payload is None
                pairs = []
                async for event in feed:
                    pairs.append((event, feed.last_payload))
                    if len(pairs) == 300:
                        break
    for event, payload in pairs:
        assert type(payload) is bytes and payload.startswith(b'{"stream":"')
        assert decoder.decode(payload) == event


async def test_payloads_stay_lined_up_with_the_events_when_duplicates_are_dropped() -> None:
    """Many messages per receive chunk, repeats among them: each event keeps its own frame."""
    def frame(trade_id: int) -> bytes:
        data = {"e": "trade", "E": 1_700_000_000_000 + trade_id, "s": "BTCUSDT", "t": trade_id,
                "p": f"{trade_id}.5", "q": "1", "T": 1, "m": False}
        return envelope("btcusdt@trade", orjson.dumps(data))

    feed = open_feed(["btcusdt@trade"], url="ws://127.0.0.1:1/x", payloads=True)
    chunk = Batch(None)
    chunk.extend(frame(i) for i in [*range(1, 101), *range(50, 151)])  # 51 repeats
    feed._accept(chunk, 0.0)
    got = []
    with pytest.raises(trio.WouldBlock):
        while True:
            event = feed.receive_nowait()
            got.append((event.trade_id, feed.last_payload))
    assert [t for t, _ in got] == list(range(1, 151))
    assert all(payload == frame(t) for t, payload in got)
    assert feed.statistics().duplicates == 51


def test_payloads_need_the_copy_strategy_and_no_backfill() -> None:
    for options in ({"mode": "inline"}, {"backfill": True}):
        with pytest.raises(ValueError, match="payloads=True"):
            open_feed(STREAMS, payloads=True, **options)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="payloads=True"):
        _ = open_feed(STREAMS).last_payload
