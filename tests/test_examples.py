"""The examples as a new user runs them: real processes against the embedded exchange."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


def example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "examples" / name), *args]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("example", ["inline.py", "channel.py"])
def test_example_prints_limit_events_and_a_summary(example: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), "--limit", "200"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 202
    assert all("@" in line for line in lines[:200]), lines[:3]
    mode = example.removesuffix(".py")
    assert lines[200].startswith(f"-- {mode}: 200 events")
    assert (", 0 copies made" in lines[200]) == (mode == "inline")
    # The legend says what the figures measure.
    legend = lines[201]
    assert legend.startswith("   (events/s: the embedded exchange's pace, 200 market ticks/s, "
                             "each can give an event on every stream"), legend
    assert "discarded: read but not handed out" in legend and "copies:" in legend
    assert "Traceback" not in result.stderr


def test_example_bad_stream_name_is_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "inline.py"), "BTCUSDT@trade", "--limit", "1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "lowercase" in result.stderr
    assert "Traceback" not in result.stderr


def load_example(name: str) -> ModuleType:
    """An example as a module, its ``__main__`` block not run."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # it puts examples/ on sys.path, for _common
    finally:
        sys.path[:] = path
    return module


@pytest.mark.parametrize("mode", ["channel", "inline"])
async def test_resilient_example_recovers_from_every_fault_exactly(
    mode: str, autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example's whole fault schedule, on the autojump clock.

    Its faults, its watchdog, its backoff and its statistics lines all run on trio's clock
    (the embedded exchange too), so its 11 seconds take a fraction of one here; the test
    below runs it as a process, in real time.
    """
    args = argparse.Namespace(mode=mode, duration=11.0, live=False, verbose=False,
                              backfill=False)
    with trio.fail_after(60):
        status = await load_example("resilient.py").main(args)
    out = capsys.readouterr().out
    assert status == 0, out
    for fault in ("reset the TCP connection", "end the TCP connection", "stop sending",
                  "send serverShutdown", "refuse the next 2 connections"):
        assert f"FAULT: {fault}" in out
    assert "MISMATCH" not in out
    assert out.count("(exact)") == 3  # both trade streams, and the accounting identity
    last = [line for line in out.splitlines() if "events" in line and "rotations" in line][-1]
    assert "rotations 1" in last and "'stale': 1" in last and "'server shutdown': 1" in last
    legend = out.splitlines()[-1]
    assert legend.startswith("   (missing: ids the exchange sent that never arrived")
    assert "duplicates: messages that arrived twice" in legend


async def test_resilient_example_with_backfill_heals_every_gap(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same fault schedule with ``--backfill``: every trade id delivered, none missing."""
    args = argparse.Namespace(mode="channel", duration=11.0, live=False, verbose=False,
                              backfill=True)
    with trio.fail_after(60):
        status = await load_example("resilient.py").main(args)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "MISMATCH" not in out
    for stream in ("btcusdt@trade", "ethusdt@trade"):
        line = next(line for line in out.splitlines() if f"] {stream}: " in line)
        assert "+ 0 reported missing" in line and line.endswith("(exact)"), line
    fill = next(line for line in out.splitlines() if "back-fill: " in line)
    assert "; 0 ranges left" in fill and " 0 trades fetched" not in fill, fill
    assert out.splitlines()[-1].startswith("   (back-filled: ")


def test_resilient_example_runs_as_a_program() -> None:
    """As a user starts it, in real time, until its first fault (at 1.5 s) and past it."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "resilient.py"), "--duration", "2"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "FAULT: reset the TCP connection (abrupt)" in out and "MISMATCH" not in out
    assert out.count("(exact)") == 3
    assert out.splitlines()[-1].startswith("   (missing: ")


@pytest.mark.parametrize("name", ["inline.py", "channel.py", "orderbook.py"])
def test_examples_report_errors_as_the_cli_does(name: str) -> None:
    port = closed_port()
    args = ["--url", f"ws://127.0.0.1:{port}"] if name != "orderbook.py" else ["btc/usdt"]
    result = subprocess.run(example(name, *args, "--limit", "1"), capture_output=True,
                            text=True, timeout=TIMEOUT, cwd=ROOT)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    if name == "orderbook.py":
        assert result.returncode == 2
        assert lines[0].startswith("error: invalid stream name: 'btc/usdt@depth"), lines[0]
        assert "forbidden character" in lines[0]
    else:
        assert result.returncode == 1
        assert lines[0] == f"error: cannot connect to ws://127.0.0.1:{port}: Connection refused"
    hint = subprocess.run(example(name, "btcusdt@aggtrade" if name != "orderbook.py"
                                  else "btcusdt@x", "--limit", "1"),
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert hint.returncode == 2 and hint.stderr.startswith("error: invalid stream name"), hint
    if name != "orderbook.py":
        assert "did you mean 'btcusdt@aggTrade'?" in hint.stderr


@pytest.mark.parametrize("name", ["inline.py", "channel.py"])
def test_ctrl_c_ends_an_example_quietly(name: str) -> None:
    """Ctrl-C mid-run, on the embedded exchange in the same process, as users run it:
    status 0, no traceback (nor a KeyboardInterrupt group), the summary.

    (tests/test_ctrl_c.py interrupts at many more moments.)
    """
    proc = subprocess.Popen(example(name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        while "@" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err == "", err  # no traceback, no ExceptionGroup
    lines = out.splitlines()
    # The summary still comes, with what Ctrl-C left unread.
    summary = [line for line in lines if line.startswith("-- ")]
    assert len(summary) == 1 and " discarded" in summary[0], lines[-3:]
    assert lines[-1].startswith("   (events/s")


def test_orderbook_example_explains_its_weight() -> None:
    result = subprocess.run(example("orderbook.py", "--limit", "20", "--quiet"),
                            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    summary, legend = result.stdout.splitlines()
    assert summary.startswith("-- ") and "weight 750/min" in summary  # 3 snapshots of 250
    assert "250 per 5000-level snapshot, of the 6000 an IP may use" in legend
