"""Recording with back-fill: the filled lines, `trio-feed stats` on them, and replay."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import trio
import trio.testing

from trio_feed.binance import combined_url
from trio_feed.exchange import open_exchange
from trio_feed.exchange._replay import route
from trio_feed.recording import (
    RecordingBackfill,
    RecordingWriter,
    compute_stats,
    read_recording,
    record,
)

STREAMS = ["btcusdt@aggTrade", "ethusdt@trade"]


async def _record_with_a_gap(path: Path, *, refuse: bool = False) -> RecordingBackfill:
    async with open_exchange(shared_market=True, clock=None, rate=100.0) as exchange:
        if refuse:
            exchange.faults.refuse_history()
        backfill = RecordingBackfill(exchange.rest_url, timeout=10.0, retries=2)

        async def pause_once() -> None:
            await trio.sleep(1.0)
            exchange.pause_sending()  # the shared market goes on: the connection misses ticks
            await trio.sleep(2.0)
            exchange.resume_sending()

        with RecordingWriter(path) as writer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pause_once)
                await record(combined_url(STREAMS, exchange.base_url), writer, duration=5.0,
                             backfill=backfill)
    return backfill


async def test_recorded_gaps_are_filled_and_marked(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    path = tmp_path / "rec.jsonl"
    with trio.fail_after(60):
        backfill = await _record_with_a_gap(path)
    assert backfill.gaps == 2 and backfill.filled > 0 and backfill.left == 0
    records = list(read_recording(str(path)))
    filled = [r for r in records if r.backfilled]
    assert len(filled) == backfill.filled
    assert all(route(r, True, frozenset()) is None for r in filled)  # replay skips them
    stats = compute_stats(str(path))
    assert stats["backfilled"] == backfill.filled
    for stream in STREAMS:
        s = stats["streams"][stream]
        assert s["id_gaps"] == 1 and s["missing_ids"] > 0
        assert s["filled_ids"] == s["missing_ids"] and s["left_ids"] == 0
        assert s["messages"] == sum(1 for r in records if r.stream == stream and not r.backfilled)
    # A filled line is the stream's own payload, in its envelope.
    data = orjson.loads(filled[0].raw)["data"]
    assert data["e"] in ("aggTrade", "trade") and data["E"] == data["T"]


async def test_recorded_gaps_that_rest_refuses_are_left(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    path = tmp_path / "rec.jsonl"
    with trio.fail_after(60):
        backfill = await _record_with_a_gap(path, refuse=True)
    assert backfill.filled == 0 and backfill.left > 0
    stats = compute_stats(str(path))
    assert stats["backfilled"] == 0
    assert sum(s["left_ids"] for s in stats["streams"].values()) == backfill.left


async def test_trio_feed_stats_shows_gaps_filled_and_left(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    path = tmp_path / "rec.jsonl"
    with trio.fail_after(60):
        backfill = await _record_with_a_gap(path)
    done = await trio.run_process([sys.executable, "-m", "trio_feed", "stats", str(path)],
                                  capture_stdout=True)
    out = done.stdout.decode()
    assert f"{backfill.filled} back-filled lines" in out
    for stream in STREAMS:
        line = next(line for line in out.splitlines() if line.startswith(stream))
        assert "filled, 0 left)" in line, line
