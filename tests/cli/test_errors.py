"""Every error is one clear line on stderr, with a non-zero exit status, and no traceback."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
import trustme

from trio_feed import HandshakeError
from trio_feed.cli import describe
from trio_feed.exchange import open_exchange
from trio_feed.testing import Scenario, trade

from .helpers import ROOT, TIMEOUT, assert_error, command, run_cli, run_cli_async


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", ["stream", "record"])
def test_bad_stream_name_exits_2(command: str, tmp_path: Path) -> None:
    out = tmp_path / "never.jsonl"
    extra = ["-o", str(out)] if command == "record" else []
    result = run_cli(command, "btcusdt@trade", "BTCUSDT@trade", *extra)
    assert_error(result, 2, "invalid stream name", "'BTCUSDT@trade'", "lowercase")
    assert not out.exists()  # nothing was truncated or created
    assert_error(run_cli(command, "btcusdt@nonsense", *extra), 2, "unknown stream kind")


def test_unknown_symbol_on_the_embedded_exchange_fails_at_once() -> None:
    result = run_cli("stream", "xyzusdt@trade", "--limit", "1")
    assert_error(result, 1, "stream?streams=xyzusdt@trade refused the WebSocket upgrade",
                 "HTTP 400")


@pytest.mark.parametrize("args, fragment", [
    (["record", "btcusdt@trade"], "the following arguments are required: -o/--output"),
    (["stream", "btcusdt@trade", "--limit", "0"], "must be at least 1"),
    (["replay", "x.jsonl", "--speed", "fast"], "expected a number or 'max'"),
    (["record", "btcusdt@trade", "-o", "x", "--limit", "1", "--duration", "1"],
     "not allowed with argument"),
    (["stream"], "name at least one stream"),
    (["stream", "btcusdt@trade", "--url", "http://example.com"], "must start with ws://"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2(args: list[str], fragment: str) -> None:
    assert_error(run_cli(*args), 2, fragment)


@pytest.mark.parametrize("command", ["stream", "record"])
def test_unreachable_url(command: str, tmp_path: Path) -> None:
    port = closed_port()
    extra = ["-o", str(tmp_path / "r.jsonl")] if command == "record" else []
    result = run_cli(command, "btcusdt@trade", "--url", f"ws://127.0.0.1:{port}", *extra)
    assert_error(result, 1, f"cannot connect to ws://127.0.0.1:{port}/stream?streams=btcusdt@trade",
                 "Connection refused")


def test_debug_shows_the_traceback() -> None:
    result = run_cli("--debug", "stream", "btcusdt@trade", "--url",
                     f"ws://127.0.0.1:{closed_port()}")
    assert result.returncode == 1 and "Traceback" in result.stderr
    later = run_cli("stream", "btcusdt@trade", "--debug", "--url",
                    f"ws://127.0.0.1:{closed_port()}")
    assert later.returncode == 1 and "Traceback" in later.stderr


async def test_tls_failure() -> None:
    ca = trustme.CA()  # a CA the command does not trust
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with open_exchange(ssl_context=context) as exchange:
        assert exchange.base_url.startswith("wss://")
        result = await run_cli_async("stream", "btcusdt@trade", "--url", exchange.base_url,
                                     "--limit", "1")
    assert_error(result, 1, f"TLS failure with {exchange.base_url}/stream?streams=btcusdt@trade",
                 "certificate verify failed: unable to get local issuer certificate")


async def test_refused_upgrade() -> None:
    async with open_exchange() as exchange:
        result = await run_cli_async("stream", "--url", f"{exchange.base_url}/ws/btcusdt@depth7")
        assert_error(result, 2, "invalid stream name", "partial depth has 5, 10 or 20 levels")
        result = await run_cli_async("stream", "btcusdt@trade", "--url",
                                     f"{exchange.base_url}/somewhere")
    assert_error(result, 1, "refused the WebSocket upgrade", "404")


async def test_connection_ends() -> None:
    dropped = Scenario().send("btcusdt@trade", trade("btcusdt", 1)).drop()
    async with dropped.serve() as server:
        result = await run_cli_async("stream", "btcusdt@trade", "--url", server.base_url)
    assert result.stdout.startswith("btcusdt@trade  trade #1 ")
    assert_error(result, 1, "code 1006")
    normal = Scenario().send("btcusdt@trade", trade("btcusdt", 1)).close(1000, "bye")
    async with normal.serve() as server:
        result = await run_cli_async("stream", "btcusdt@trade", "--url", server.base_url)
    assert result.returncode == 0
    assert result.stderr == "trio-feed: connection closed by peer with code 1000: bye " \
                            "(after 1 events)\n"
    failing = Scenario().send("btcusdt@trade", trade("btcusdt", 1)).close(1011, "oops")
    async with failing.serve() as server:
        result = await run_cli_async("record", "btcusdt@trade", "--url", server.base_url,
                                     "-o", "/dev/null")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"trio-feed: error: {server.base_url}/stream?streams=btcusdt@trade: "
        "connection closed by peer with code 1011: oops")


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    assert_error(run_cli("replay", str(missing)), 1,
                 f"cannot read {missing}: No such file or directory")
    not_a_recording = tmp_path / "notes.txt"
    not_a_recording.write_text("hello\nworld\n")
    assert_error(run_cli("stats", str(not_a_recording)), 1,
                 f"{not_a_recording}:1: not a trio-feed recording line")
    assert_error(run_cli("record", "btcusdt@trade", "-o", str(tmp_path / "no" / "dir.jsonl")),
                 1, "cannot write", "No such file or directory")


def test_port_in_use(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"t":1,"stream":null,"raw":"x"}\n')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("replay", str(path), "--port", str(port))
    assert_error(result, 1, f"cannot listen on 127.0.0.1:{port}", "in use")


async def test_a_refused_upgrade_is_said_once() -> None:
    async with open_exchange() as exchange:
        result = await run_cli_async("stream", "btcusdt@trade", "--url",
                                     f"{exchange.base_url}/somewhere")
    line = assert_error(result, 1, f"error: {exchange.base_url}/somewhere/stream?streams="
                                   "btcusdt@trade refused the WebSocket upgrade: HTTP 404")
    assert line.count("refused") == 1, line


def test_describe_shows_the_refusing_servers_body() -> None:
    # The connection layer attaches what the server sent after its status line
    # as ``body`` (Binance explains a 451 there); describe() shows it, on one line.
    exc = HandshakeError("the server refused the WebSocket upgrade: HTTP 451", 451)
    exc.body = (b'{"code":0,"msg":"Service unavailable from a restricted location\\n'  # type: ignore[attr-defined]
                b'according to b. Eligibility"}')
    message, code = describe(exc, "wss://stream.binance.com:9443/ws/btcusdt@trade")
    assert code == 1
    assert message == ("wss://stream.binance.com:9443/ws/btcusdt@trade refused the WebSocket "
                       "upgrade: HTTP 451: Service unavailable from a restricted location "
                       "according to b. Eligibility")
    exc.body = b"<html>\r\n<h1>Forbidden</h1></html>" + b"x" * 1000  # type: ignore[attr-defined]
    message, _ = describe(exc, "ws://host")
    assert message.startswith("ws://host refused the WebSocket upgrade: HTTP 451: <html> <h1>")
    assert message.endswith("...") and len(message) < 400
    bare = HandshakeError("the server refused the WebSocket upgrade: HTTP 503 Busy", 503)
    assert describe(bare, "ws://h") == ("ws://h refused the WebSocket upgrade: HTTP 503 Busy", 1)
    group = BaseExceptionGroup("one", [bare])
    assert describe(group, "ws://h") == describe(bare, "ws://h")


async def test_reconnect_retries_the_first_connection() -> None:
    port = closed_port()
    url = f"ws://127.0.0.1:{port}"
    with trio.fail_after(TIMEOUT):
        proc = await trio.lowlevel.open_process(
            command("-v", "stream", "btcusdt@trade", "--url", url, "--reconnect",
                    "--limit", "5"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            seen = b""
            while b"connection failed" not in seen:  # nothing listens yet: it retries
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, seen
                seen += chunk
            assert proc.returncode is None
            async with open_exchange(port=port):
                out = b""
                while out.count(b"\n") < 5:
                    chunk = await proc.stdout.receive_some(4096)
                    assert chunk, out
                    out += chunk
                assert await proc.wait() == 0
        finally:
            proc.kill()
            await proc.wait()
    lines = out.decode().splitlines()
    assert len(lines) == 5 and all(line.startswith("btcusdt@trade  trade #") for line in lines)
    assert b"retrying in" in seen
    without = run_cli("stream", "btcusdt@trade", "--url", f"ws://127.0.0.1:{closed_port()}")
    assert_error(without, 1, "cannot connect to", "Connection refused")
