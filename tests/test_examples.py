"""The examples as a new user runs them: real processes against the embedded exchange."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trio_feed.testing import exchange_thread

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("example", ["inline.py", "channel.py"])
def test_example_prints_limit_events_and_a_summary(example: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), "--limit", "200"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 201
    assert all("@" in line for line in lines[:200]), lines[:3]
    mode = example.removesuffix(".py")
    assert lines[-1].startswith(f"-- {mode}: 200 events")
    assert (", 0 copies made" in lines[-1]) == (mode == "inline")
    assert "Traceback" not in result.stderr


def test_example_bad_stream_name_is_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "inline.py"), "BTCUSDT@trade", "--limit", "1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "lowercase" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("mode", ["channel", "inline"])
def test_resilient_example_recovers_from_every_fault_exactly(mode: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "resilient.py"), "--mode", mode,
         "--duration", "11"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for fault in ("reset the TCP connection", "end the TCP connection", "stop sending",
                  "send serverShutdown", "refuse the next 2 connections"):
        assert f"FAULT: {fault}" in out
    assert "MISMATCH" not in out
    assert out.count("(exact)") == 3  # both trade streams, and the accounting identity
    last = [line for line in out.splitlines() if "events" in line and "rotations" in line][-1]
    assert "rotations 1" in last and "'stale': 1" in last and "'server shutdown': 1" in last


@pytest.mark.parametrize("example", ["inline.py", "channel.py"])
def test_ctrl_c_ends_an_example_quietly(example: str) -> None:
    """Ctrl-C mid-run: status 0, no traceback (nor a KeyboardInterrupt group).

    The exchange runs here, in a thread, so that the signal reaches the example's feed only.
    (With the exchange inside the example, a Ctrl-C that lands in one of the exchange's tasks
    can end the feed with ConnectionClosed(1000) instead: a known race, not tested here.)
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with exchange_thread(seed=1, rate=200.0) as exchange, subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / example), "--url", exchange.base_url],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            for _ in range(3):  # running, printing: now interrupt it
                assert proc.stdout.readline(), proc.communicate(timeout=30)[1]
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    assert stderr == ""
