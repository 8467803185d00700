"""``trio-feed stream``, as a user runs it, against the embedded exchange."""

from __future__ import annotations

import signal
import subprocess

import orjson
import pytest

from .helpers import ENTRY_POINT, ROOT, command, run_cli


@pytest.mark.parametrize("entry_point", [False, True], ids=["python -m", "console script"])
def test_limit_prints_that_many_lines(entry_point: bool) -> None:
    if entry_point:
        assert ENTRY_POINT.exists(), "run 'pip install -e .' to install the console script"
    result = run_cli("stream", "btcusdt@trade", "--limit", "20", entry_point=entry_point)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no status line
    lines = result.stdout.splitlines()
    assert len(lines) == 20
    assert all(line.startswith("btcusdt@trade  trade #") for line in lines), lines[:2]
    ids = [int(line.split("#")[1].split()[0]) for line in lines]
    assert ids == list(range(ids[0], ids[0] + 20))


def test_json_lines_in_channel_mode() -> None:
    result = run_cli("stream", "btcusdt@trade", "ethusdt@bookTicker", "btcusdt@depth@100ms",
                     "--mode", "channel", "--json", "--limit", "200")
    assert result.returncode == 0, result.stderr
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 200  # enough for the 100 ms depth stream on the wall clock
    assert {e["type"] for e in events} == {"Trade", "BookTicker", "DepthUpdate"}
    trade = next(e for e in events if e["type"] == "Trade")
    assert list(trade)[:2] == ["type", "event_time"] and trade["stream"] == "btcusdt@trade"
    assert isinstance(trade["price"], str) and isinstance(trade["trade_id"], int)
    depth = next(e for e in events if e["type"] == "DepthUpdate")
    assert all(isinstance(x, str) for level in depth["bids"] for x in level)


def test_raw_connection() -> None:
    result = run_cli("stream", "ethusdt@aggTrade", "--raw", "--limit", "3", "--seed", "5")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ethusdt@aggTrade"] * 3


def test_a_closed_pipe_ends_quietly() -> None:
    with subprocess.Popen(command("stream", "btcusdt@trade", "btcusdt@depth@100ms",
                                  "--rate", "2000"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"btcusdt@")
        proc.stdout.close()
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == b""


def test_ctrl_c_ends_stream_quietly() -> None:
    with subprocess.Popen(command("stream", "btcusdt@trade", "ethusdt@bookTicker"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"btcusdt@")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert err == b""  # no traceback, no ExceptionGroup
    assert all(line.startswith((b"btcusdt@", b"ethusdt@")) for line in out.splitlines())
