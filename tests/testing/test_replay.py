"""Replaying recordings: byte-exact frames, routing by URL, pacing, endings, the plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from trio_feed import Connection, ConnectionClosed, open_connection, open_feed
from trio_feed.binance import Trade
from trio_feed.exchange import KeepOpen, LocalExchange, open_replay_server
from trio_feed.recording import Record, RecordingWriter, read_recording, record
from trio_feed.testing import EventRecorder, open_local_exchange, replay_recording

STREAMS = ["btcusdt@trade", "btcusdt@depth@100ms", "ethusdt@bookTicker"]


async def make_recording(path: Path, count: int = 120, streams: list[str] = STREAMS) -> None:
    # The simulated clock: with rate=None, ticks come back to back, and on the wall clock
    # the 100 ms depth stream would rarely be due within 120 messages.
    async with open_local_exchange(seed=3, rate=None, clock=None) as exchange:
        with RecordingWriter(path) as writer:
            stats = await record(exchange.combined_url(streams), writer, limit=count)
    assert stats.messages == count and stats.closed is None


async def test_recording_replays_byte_exact_to_combined_and_raw_clients(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with trio.fail_after(10):
        await make_recording(path)
        recorded = list(read_recording(path))
        assert {r.stream for r in recorded} == set(STREAMS)
        async with replay_recording(path) as server:
            order = [r.stream for r in recorded]
            assert server.streams == tuple(sorted(STREAMS, key=order.index))
            assert server.messages == 120
            async with open_websocket_url(server.combined_url()) as ws:
                got = [await ws.get_message() for _ in range(120)]
            assert got == [r.raw for r in recorded]
            async with open_websocket_url(server.raw_url("btcusdt@trade")) as ws:
                trades = [r.payload() for r in recorded if r.stream == "btcusdt@trade"]
                got = [await ws.get_message() for _ in trades]
            assert got == trades and all(str(g).startswith('{"e":"trade"') for g in got)
            # Through a feed, with the recorder's checks: the market has no gaps.
            recorder = EventRecorder()
            async with open_feed(STREAMS, base_url=server.base_url) as feed:
                closed = await recorder.consume(feed)
            assert closed is not None and closed.code == 1000
            assert closed.reason == "end of recording"
            assert len(recorder) == 120
            recorder.assert_no_gaps()


async def test_binary_and_unattributed_frames(tmp_path: Path) -> None:
    records = [Record(0, None, b"\x00\x01"), Record(0, None, '{"e":"x"}'),
               Record(0, "btcusdt@trade", '{"stream":"btcusdt@trade","data":{}}')]
    with trio.fail_after(10):
        async with open_replay_server(records, speed=None) as server:
            async with open_websocket_url(server.raw_url("ethusdt@trade")) as ws:
                assert await ws.get_message() == b"\x00\x01"
                assert await ws.get_message() == '{"e":"x"}'
            async with open_websocket_url(server.combined_url(["btcusdt@trade"])) as ws:
                got = [await ws.get_message() for _ in range(3)]
            assert got == [r.raw for r in records]


async def test_pacing_follows_the_recording_times_speed() -> None:
    records = [Record(1_000_000_000, None, "a"), Record(1_600_000_000, None, "b")]
    with trio.fail_after(10):
        # Timed from before connecting, so that only the lower bounds are exact.
        for speed, low, high in ((1.0, 0.6, 3.0), (4.0, 0.15, 0.6), (None, 0.0, 0.6)):
            async with open_replay_server(records, speed=speed) as server:
                started = trio.current_time()
                async with open_websocket_url(f"{server.base_url}/ws") as ws:
                    assert [await ws.get_message(), await ws.get_message()] == ["a", "b"]
                    assert low <= trio.current_time() - started < high, speed


async def test_bad_paths_are_refused_like_the_exchange() -> None:
    with trio.fail_after(10):
        async with open_replay_server([Record(0, None, "a")]) as server:
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(f"{server.base_url}/ws/BTCUSDT@trade"):
                    pass
            assert info.value.status_code == 400
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(f"{server.base_url}/nowhere"):
                    pass
            assert info.value.status_code == 404
            assert server.statistics().handshakes_rejected == 2


async def test_wait_done_and_statistics() -> None:
    with trio.fail_after(10):
        async with open_replay_server([Record(0, None, "a")], speed=None) as server:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.wait_done)
                async with open_websocket_url(f"{server.base_url}/ws") as ws:
                    assert await ws.get_message() == "a"
            stats = server.statistics()
            assert (stats.connections_accepted, stats.connections_finished,
                    stats.connections_open, stats.messages_sent) == (1, 1, 0, 1)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="speed"):
        open_replay_server([], speed=0)
    with pytest.raises(ValueError, match="speed"):
        open_replay_server([], speed=float("nan"))


async def test_leaving_the_server_closes_open_clients_with_1001() -> None:
    closes: list[ConnectionClosed] = []

    async def read_until_closed(conn: Connection) -> None:
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            closes.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with open_replay_server([Record(0, None, "a")], end=KeepOpen()) as server:
                conn = await open_connection(f"{server.base_url}/ws").__aenter__()
                assert await conn.receive() == "a"
                nursery.start_soon(read_until_closed, conn)
        await conn.aclose()
    assert [(c.code, c.reason) for c in closes] == [(1001, "replay server shutting down")]


# -- the pytest plugin ------------------------------------------------------------------


async def test_fixture_serves_a_local_exchange(local_exchange: LocalExchange) -> None:
    with trio.fail_after(10):
        async with open_feed(["btcusdt@trade"], base_url=local_exchange.base_url) as feed:
            recorder = EventRecorder()
            await recorder.consume(feed, limit=5)
    recorder.assert_sequence([Trade] * 5)
    recorder.assert_no_gaps()


@pytest.mark.local_exchange(seed=9, rate=None, symbols=["ethusdt"])
async def test_fixture_takes_options_from_the_marker(local_exchange: LocalExchange) -> None:
    assert (local_exchange.seed, local_exchange.rate, local_exchange.symbols) == \
        (9, None, ("ethusdt",))


def test_plugin_is_found_through_its_entry_point(tmp_path: Path) -> None:
    """In a project that knows nothing of trio_feed's tests: only the installed entry point."""
    (tmp_path / "test_strategy.py").write_text(textwrap.dedent("""
        import trio
        from trio_feed import Connection, ConnectionClosed, open_connection, open_feed

        async def test_strategy(local_exchange):
            with trio.fail_after(10):
                async with open_feed(["btcusdt@trade"], base_url=local_exchange.base_url) as f:
                    assert (await f.__anext__()).trade_id >= 0
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-p", "no:hypothesispytest"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
