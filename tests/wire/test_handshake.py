"""The upgrade handshake, checked strictly."""

from __future__ import annotations

import pytest

from trio_feed import HandshakeError
from trio_feed.wire import MAX_HEADER_BYTES, accept_token, build_request, make_key, parse_response

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def response(accept: str | None = None, status: str = "101 Switching Protocols",
             extra: str = "") -> bytes:
    accept = accept_token(KEY) if accept is None else accept
    return (
        f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    ).encode()


def test_rfc_example_accept_token() -> None:
    assert accept_token(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_request_has_the_required_headers() -> None:
    request = build_request("example.com", 9443, "/ws/btcusdt@trade", KEY, secure=True)
    text = request.decode()
    assert text.startswith("GET /ws/btcusdt@trade HTTP/1.1\r\n")
    assert "Host: example.com:9443\r\n" in text
    assert f"Sec-WebSocket-Key: {KEY}\r\n" in text
    assert "Sec-WebSocket-Version: 13\r\n" in text
    assert text.endswith("\r\n\r\n")
    default_port = build_request("example.com", 443, "/", KEY, secure=True).decode()
    assert "Host: example.com\r\n" in default_port
    assert len(make_key()) == 24


def test_good_response_returns_leftover_frame_bytes() -> None:
    result = parse_response(response() + b"\x81\x02hi", KEY)
    assert result is not None
    parsed, rest = result
    assert parsed.status == 101
    assert rest == b"\x81\x02hi"


def test_incomplete_response_needs_more() -> None:
    assert parse_response(response()[:-3], KEY) is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (response(status="200 OK"), "HTTP 200"),
        (response(status="400 Bad Request"), "HTTP 400"),
        (response(accept="d3Jvbmc="), "Sec-WebSocket-Accept"),
        (b"garbage\r\n\r\n", "status line"),
        (b"HTTP/1.1 101 OK\r\nno colon here\r\n\r\n", "header line"),
        (response().replace(b"Upgrade: websocket\r\n", b""), "Upgrade"),
        (response(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"), "extension"),
    ],
)
def test_bad_responses(data: bytes, match: str) -> None:
    with pytest.raises(HandshakeError, match=match):
        parse_response(data, KEY)


def test_oversized_header_block_is_refused_without_waiting_for_its_end() -> None:
    with pytest.raises(HandshakeError, match="exceeds"):
        parse_response(b"HTTP/1.1 101 OK\r\nX: " + b"a" * (MAX_HEADER_BYTES + 10), KEY)


def test_sans_io_packages_import_no_trio() -> None:
    """The sans-I/O layers (frames, Binance vocabulary) must not import trio, even indirectly."""
    import ast
    from pathlib import Path

    import trio_feed

    root = Path(trio_feed.__file__).parent
    for package in ("wire", "binance"):
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                    if node.level and node.module in (None, "", "_connection", "_pipelines"):
                        names.append("trio (via a relative import of an I/O module)")
                for name in names:
                    assert not name.startswith("trio"), f"{path.name} imports {name}"
