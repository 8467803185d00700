"""``record``, ``replay`` and ``stats``, chained as a user would chain them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import orjson

from trio_feed.testing import Scenario

from .helpers import ROOT, TIMEOUT, assert_error, command, run_cli, run_cli_async

STREAMS = ["btcusdt@trade", "btcusdt@depth@100ms", "ethusdt@bookTicker", "ethusdt@aggTrade"]


def lines_of(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def start_replay(path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(command("replay", str(path), *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("ws://127.0.0.1:"), (url, proc.stderr.read() if proc.stderr else "")
    return proc, url


def test_record_replay_record_is_byte_exact(tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    # 200 ticks/s: 300 messages span about half a second of the exchange's wall clock, so the
    # 100 ms depth stream is due several times among them.
    result = run_cli("record", *STREAMS, "-o", str(first), "--limit", "300", "--rate", "200")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("trio-feed: recorded 300 messages"), result.stderr
    recorded = lines_of(first)
    assert len(recorded) == 300
    assert {r["stream"] for r in recorded} == set(STREAMS)
    assert all(isinstance(r["t"], int) and r["t"] > 1_600_000_000 * 10**9 for r in recorded)
    assert all(orjson.loads(r["raw"])["stream"] == r["stream"] for r in recorded)  # type: ignore[arg-type]

    replay, url = start_replay(first, "--speed", "max", "--exit-when-done")
    try:
        again = run_cli("record", *STREAMS, "-o", str(second), "--url", url)
        assert again.returncode == 0, again.stderr
        assert "connection closed by peer with code 1000: end of recording" in again.stderr
        _, err = replay.communicate(timeout=TIMEOUT)
    finally:
        replay.kill()
    assert replay.returncode == 0, err
    assert "replaying 300 messages of 4 streams" in err
    assert "all clients finished (1 connections, 300 messages sent)" in err
    replayed = lines_of(second)
    assert [r["raw"] for r in replayed] == [r["raw"] for r in recorded]
    assert [r["stream"] for r in replayed] == [r["stream"] for r in recorded]


def test_stats_of_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    assert run_cli("record", *STREAMS, "-o", str(path), "--limit", "200").returncode == 0
    counts: dict[object, int] = {}
    for r in lines_of(path):
        counts[r["stream"]] = counts.get(r["stream"], 0) + 1
    result = run_cli("stats", str(path), "--json")
    assert result.returncode == 0, result.stderr
    stats = orjson.loads(result.stdout)
    assert stats["messages"] == 200 and not stats["torn_last_line"]
    assert {k: v["messages"] for k, v in stats["streams"].items()} == counts
    assert all(v["id_gaps"] == 0 for v in stats["streams"].values())
    assert stats["rate"]["buckets"] >= 1 and stats["rate"]["max"] >= stats["rate"]["min"]
    text = run_cli("stats", str(path))
    assert text.returncode == 0
    assert text.stdout.startswith(f"{path}: 200 messages on 4 streams")
    for name in STREAMS:
        assert name in text.stdout


def test_stats_finds_id_gaps_and_the_largest_pause(tmp_path: Path) -> None:
    def line(t: float, stream: str, data: dict[str, object]) -> bytes:
        raw = orjson.dumps({"stream": stream, "data": data}).decode()
        return orjson.dumps({"t": int(t * 1e9), "stream": stream, "raw": raw}) + b"\n"

    trade = "btcusdt@trade"
    depth = "btcusdt@depth@100ms"
    path = tmp_path / "gaps.jsonl"
    path.write_bytes(
        line(1.0, trade, {"e": "trade", "t": 1}) + line(1.1, trade, {"e": "trade", "t": 2})
        + line(1.2, depth, {"e": "depthUpdate", "U": 10, "u": 12})
        + line(3.7, trade, {"e": "trade", "t": 5})          # 3 and 4 missing; 2.5 s pause
        + line(3.8, depth, {"e": "depthUpdate", "U": 14, "u": 15})
        + line(3.9, depth, {"e": "depthUpdate", "U": 16, "u": 16})
        + b'{"t": 4000000000, "stre'                        # torn by a crash
    )
    stats = orjson.loads(run_cli("stats", str(path), "--json").stdout)
    assert stats["messages"] == 6 and stats["torn_last_line"]
    assert stats["largest_gap"] == {"seconds": 2.5, "index": 3, "stream": trade}
    assert stats["streams"][trade]["id_gaps"] == 1 and stats["streams"][trade]["missing_ids"] == 2
    assert stats["streams"][trade]["gap_examples"] == [
        {"kind": "trade id", "index": 3, "expected": 3, "got": 5}]
    assert stats["streams"][depth]["gap_examples"] == [
        {"kind": "update id", "index": 4, "expected": 13, "got": 14}]
    assert stats["rate"]["buckets"] == 3 and stats["rate"]["min"] == 0
    text = run_cli("stats", str(path)).stdout
    assert "trade id gap at message #3: expected 3, got 5" in text
    assert "the last line is torn" in text


def test_duration_append_and_raw(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    result = run_cli("record", "btcusdt@trade", "-o", str(path), "--duration", "0.3", "--raw")
    assert result.returncode == 0, result.stderr
    first = lines_of(path)
    assert first and all(r["stream"] is None for r in first)
    assert all(orjson.loads(r["raw"])["e"] == "trade" for r in first)  # type: ignore[arg-type]
    result = run_cli("record", "btcusdt@trade", "-o", str(path), "--limit", "5", "--raw",
                     "--append")
    assert result.returncode == 0, result.stderr
    assert len(lines_of(path)) == len(first) + 5
    # A raw recording replays to a raw client, which a feed decodes by its one stream.
    replay, url = start_replay(path, "--speed", "max", "--exit-when-done")
    try:
        shown = run_cli("stream", "--url", f"{url}/ws/btcusdt@trade")
        replay.communicate(timeout=TIMEOUT)
    finally:
        replay.kill()
    assert shown.returncode == 0, shown.stderr
    # A restarted exchange continues its ids forward (they start from its
    # clock), so the appended 5 are new to the feed's continuity filter.
    assert len(shown.stdout.splitlines()) == len(first) + 5
    ids = [orjson.loads(r["raw"])["t"] for r in lines_of(path)]  # type: ignore[arg-type]
    assert min(ids[len(first):]) > max(ids[:len(first)])
    assert ids[len(first):] == list(range(ids[len(first)], ids[len(first)] + 5))
    assert shown.stdout.startswith("btcusdt@trade  trade #")


def test_sigkill_leaves_a_readable_recording(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(command("record", "btcusdt@trade", "btcusdt@depth@100ms",
                                    "ethusdt@trade", "-o", str(path), "--rate", "5000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not path.exists() or path.stat().st_size < 200_000:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        proc.kill()
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    assert len(complete) > 100
    for line in complete:
        assert set(orjson.loads(line)) == {"t", "stream", "raw"}
    # At most the last line is partial, and stats (and replay) still read the file.
    stats = orjson.loads(run_cli("stats", str(path), "--json").stdout)
    assert stats["messages"] == len(complete) + (1 if tail and not stats["torn_last_line"] else 0)


def test_ctrl_c_ends_record_and_replay_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    proc = subprocess.Popen(command("record", "btcusdt@trade", "-o", str(path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not path.exists() or path.stat().st_size < 2_000:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.startswith("trio-feed: recorded ") and "Traceback" not in err
    count = len(lines_of(path))
    assert f"recorded {count:,} messages" in err
    replay, _url = start_replay(path)
    try:
        replay.send_signal(signal.SIGINT)
        _, err = replay.communicate(timeout=TIMEOUT)
    finally:
        replay.kill()
    assert replay.returncode == 0 and "Traceback" not in err, err


def test_an_existing_recording_is_never_lost(tmp_path: Path) -> None:
    path = tmp_path / "precious.jsonl"
    assert run_cli("record", "btcusdt@trade", "-o", str(path), "--limit", "50").returncode == 0
    before = path.read_bytes()
    assert before.count(b"\n") == 50
    # Without --force the command refuses, before connecting anywhere.
    refused = run_cli("record", "ethusdt@trade", "-o", str(path), "--limit", "5")
    assert_error(refused, 1, f"{path} already holds", "--force", "--append")
    assert path.read_bytes() == before
    # With --force, a connection that fails (refused, or upgraded and then closed
    # before any message) leaves the file exactly as it was.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failed = run_cli("record", "btcusdt@trade", "-o", str(path), "--force",
                     "--url", f"ws://127.0.0.1:{port}")
    assert_error(failed, 1, "cannot connect to", "Connection refused")
    assert path.read_bytes() == before
    # Once a message arrives, --force replaces it.
    replaced = run_cli("record", "ethusdt@trade", "-o", str(path), "--force", "--limit", "7")
    assert replaced.returncode == 0, replaced.stderr
    assert [r["stream"] for r in lines_of(path)] == ["ethusdt@trade"] * 7


async def test_force_keeps_the_file_when_the_connection_brings_nothing(tmp_path: Path) -> None:
    path = tmp_path / "precious.jsonl"
    path.write_bytes(b'{"t":1,"stream":"btcusdt@trade","raw":"{}"}\n')
    before = path.read_bytes()
    closing = Scenario().close(1011, "going away")
    async with closing.serve() as server:
        result = await run_cli_async("record", "btcusdt@trade", "-o", str(path), "--force",
                                     "--url", server.base_url)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith("connection closed by peer with code 1011: "
                                                   "going away")
    assert path.read_bytes() == before
    # A new file that got nothing is not left behind, empty, either.
    fresh = tmp_path / "fresh.jsonl"
    result = run_cli("record", "btcusdt@trade", "-o", str(fresh), "--url",
                     f"{server.base_url}/nowhere")
    assert result.returncode == 1 and not fresh.exists()
