"""The live status lines: on a terminal they never tear an event line; piped, they do not exist.

The command runs on a real pseudo-terminal, and the bytes it wrote are played
on a small terminal model (``helpers.render_screen``) to see the screen as a
user would: every row must be one whole event line (or one note), and the
status lines must have been shown while it ran and erased when it ended.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import orjson
import trio

from trio_feed.testing import Scenario, trade

from .helpers import run_in_terminal

EVENT = re.compile(r"^(btc|eth)usdt@trade  trade #(\d+)  (BUY|SELL) [\d.]+ @ [\d.]+$")


def rows(screen: list[str]) -> list[str]:
    while screen and not screen[-1]:
        screen = screen[:-1]
    return screen


def test_status_lines_never_tear_an_event_line() -> None:
    run = run_in_terminal("stream", "btcusdt@trade", "ethusdt@trade", "--limit", "600",
                          "--rate", "100")
    assert run.returncode == 0, run.output[-2000:]
    # Every row of the final screen is one whole event line: no status text
    # glued to one, none erased by a redraw, the status gone at the end ...
    screen = rows(run.screen)
    assert len(screen) == 600, screen[:5]
    ids: dict[str, list[int]] = {"btc": [], "eth": []}
    for line in screen:
        match = EVENT.match(line)
        assert match is not None, line
        ids[match.group(1)].append(int(match.group(2)))
    for seen in ids.values():
        assert seen == list(range(seen[0], seen[0] + len(seen)))
    # ... and the status was shown, and redrawn, while the events arrived.
    text = run.output.decode()
    assert "1/1 connection open" in text and "msg/s" in text, text[:500]
    assert re.search(r"btcusdt@trade \d+/s", text), text[:500]
    assert text.count("\x1b[2K") > 100


def test_piped_stdout_is_clean_while_the_terminal_shows_the_status() -> None:
    run = run_in_terminal("stream", "btcusdt@trade", "--limit", "300", "--rate", "100",
                          stdout_pipe=True)
    assert run.returncode == 0, run.output
    assert b"\x1b" not in run.stdout
    lines = run.stdout.decode().splitlines()
    assert len(lines) == 300 and all(EVENT.match(line) for line in lines), lines[:3]
    assert b"msg/s" in run.output  # on stderr, the terminal
    assert rows(run.screen) == []  # and erased at the end


def test_json_and_no_status_write_no_escape_codes_to_a_terminal() -> None:
    run = run_in_terminal("stream", "btcusdt@trade", "--limit", "50", "--json")
    assert run.returncode == 0, run.output
    assert b"\x1b" not in run.output and b"msg/s" not in run.output
    events = [orjson.loads(line) for line in run.output.splitlines()]
    assert len(events) == 50 and {e["type"] for e in events} == {"Trade"}
    run = run_in_terminal("stream", "btcusdt@trade", "--limit", "50", "--no-status")
    assert run.returncode == 0, run.output
    assert b"\x1b" not in run.output
    assert len(rows(run.screen)) == 50


def test_record_shows_its_size_and_ends_with_its_summary(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    run = run_in_terminal("record", "btcusdt@trade", "-o", str(path), "--duration", "1.5")
    assert run.returncode == 0, run.output
    text = run.output.decode()
    assert re.search(r"recording · \d+(\.\d)? (B|KiB|MiB) in " + re.escape(str(path)), text), text
    screen = rows(run.screen)
    assert len(screen) == 1 and screen[0].startswith("trio-feed: recorded "), screen


async def test_a_note_is_a_line_of_its_own() -> None:
    normal = (Scenario().send("btcusdt@trade", trade("btcusdt", 1)).pause(1.2)
              .send("btcusdt@trade", trade("btcusdt", 2)).close(1000, "bye"))
    async with normal.serve() as server:
        run = await trio.to_thread.run_sync(
            lambda: run_in_terminal("stream", "btcusdt@trade", "--url", server.base_url))
    assert run.returncode == 0, run.output
    assert b"msg/s" in run.output  # the status was up when the note came
    screen = rows(run.screen)
    assert len(screen) == 3, screen
    assert all(EVENT.match(line) for line in screen[:2]), screen
    assert screen[2] == "trio-feed: connection closed by peer with code 1000: bye (after 2 events)"


async def until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await trio.sleep(0.01)


async def test_stream_status_follows_the_connection_through_a_reconnect() -> None:
    from trio_feed import open_feed
    from trio_feed.cli._commands import stream_status
    from trio_feed.cli._status import Rates
    from trio_feed.exchange import open_exchange

    rates = Rates()
    names = ["btcusdt@trade", "ethusdt@trade"]
    with trio.fail_after(20):
        async with open_exchange(rate=100) as exchange, \
                open_feed(names, base_url=exchange.base_url, backoff_initial=0.3,
                          backoff_cap=0.3) as feed:
            seen: list[object] = []

            async def drain() -> None:
                async for event in feed:
                    seen.append(event)

            def status(seconds: float = 0.5) -> list[str]:
                return stream_status(feed.statistics(), expected=1, events=len(seen),
                                     limit=None, rates=rates, seconds=seconds, width=300)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                status()
                await trio.sleep(0.5)
                first, per_stream = status()
                assert first.startswith("1/1 connection open · ") and "reconnects 0" in first
                assert re.search(r" [1-9][\d,]* msg/s", first), first
                assert re.search(r"btcusdt@trade [1-9]\d*/s  ethusdt@trade [1-9]\d*/s", per_stream)
                await exchange.drop_connections(abrupt=True)
                await until(lambda: not feed.statistics().connections)
                assert status()[0].startswith("0/1 connection reconnecting · ")
                await until(lambda: feed.statistics().connections == 1)
                first = status()[0]
                assert first.startswith("1/1 connection open · ") and "reconnects 1" in first
                nursery.cancel_scope.cancel()
