"""A hostile server, over real sockets: every fault ends typed, closed and bounded.

Each test runs a scripted raw-TCP (or TLS) server from ``scripted_server`` and
checks three things about the client:

- it ends with a clear typed error (``ProtocolError`` and its close code,
  ``MessageTooBig``, ``HandshakeError``, ``ConnectionClosed(1006)`` or
  ``ssl.SSLCertVerificationError`` that says why), and where the protocol
  asks for one, the Close frame it sends back carries the matching code (the
  server reads it with ``read_frame()``);
- it never hangs: everything runs under ``trio.fail_after``, and the client's
  own timeouts are set far above what the test allows whenever the point is
  that the fault is detected without them;
- the messages sent before the fault are delivered exactly once, in order,
  and nothing sent after it is delivered at all.

The frame-level faults run three ways: ``Connection.receive()``, and the two
pipelines (``run_inline`` lends views, ``run_channel`` copies across tasks),
which must surface the same error unwrapped, not inside an ExceptionGroup.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from trio_feed import (
    Connection,
    ConnectionClosed,
    HandshakeError,
    MessageTooBig,
    ProtocolError,
    open_connection,
    run_channel,
    run_inline,
)
from trio_feed.wire import Opcode

from .scripted_server import ServerSide, start_scripted_server
from .wire.server_frames import server_frame

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
PING, PONG, CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE

#: What the server sends before each fault, and what the client must deliver of it.
BEFORE = server_frame(TEXT, b"first") + server_frame(BINARY, b"\x00second")
DELIVERED = [b"first", b"\x00second"]
#: A valid message after the fault: it must never reach the application.
AFTER = server_frame(TEXT, b"after the fault")

MODES = ["receive", "inline", "channel"]


def close_payload(code: int) -> bytes:
    return code.to_bytes(2, "big")


FRAME_FAULTS: list[tuple[str, bytes, int]] = [
    ("masked frame", server_frame(TEXT, b"masked", mask=b"\x01\x02\x03\x04"), 1002),
    ("rsv1", server_frame(TEXT, b"x", rsv=4), 1002),
    ("rsv2", server_frame(BINARY, b"x", rsv=2), 1002),
    ("rsv3 on a ping", server_frame(PING, b"x", rsv=1), 1002),
    ("reserved data opcode 3", server_frame(3, b"x"), 1002),
    ("reserved data opcode 7", server_frame(7, b""), 1002),
    ("reserved control opcode 0xB", server_frame(0xB, b""), 1002),
    ("reserved control opcode 0xF", server_frame(0xF, b"x"), 1002),
    ("fragmented ping", server_frame(PING, b"x", fin=False), 1002),
    ("fragmented close", server_frame(CLOSE, close_payload(1000), fin=False), 1002),
    ("ping of 126 bytes", server_frame(PING, b"p" * 126), 1002),
    ("continuation without start", server_frame(CONT, b"orphan"), 1002),
    (
        "new message inside a fragmented one",
        server_frame(TEXT, b"part", fin=False) + server_frame(TEXT, b"whole"),
        1002,
    ),
    (
        "invalid UTF-8 split across fragments",  # each half alone is a valid prefix
        server_frame(TEXT, b"ok \xf4", fin=False) + server_frame(CONT, b"\x90\x80\x80"),
        1007,
    ),
    (
        "UTF-8 cut short at the last fragment",
        server_frame(TEXT, b"euro \xe2", fin=False) + server_frame(CONT, b"\x82"),
        1007,
    ),
    ("invalid UTF-8 in one frame", server_frame(TEXT, b"ok \xff"), 1007),
    ("close code 999", server_frame(CLOSE, close_payload(999)), 1002),
    ("close code 1005", server_frame(CLOSE, close_payload(1005)), 1002),
    ("close code 1006", server_frame(CLOSE, close_payload(1006)), 1002),
    ("close code 5000", server_frame(CLOSE, close_payload(5000)), 1002),
    ("close with a 1-byte payload", server_frame(CLOSE, b"\x03"), 1002),
    ("close reason not UTF-8", server_frame(CLOSE, close_payload(1000) + b"\xc3"), 1007),
    ("64-bit length with the top bit set", b"\x82\x7f" + (2**63 + 1).to_bytes(8, "big"), 1002),
    ("64-bit length 2^63 - 1", b"\x82\x7f" + (2**63 - 1).to_bytes(8, "big"), 1009),
]
FAULT_IDS = [f[0] for f in FRAME_FAULTS]


# -- helpers ----------------------------------------------------------------------------------


async def collect_client_frames(peer: ServerSide, into: list[tuple[int, bytes]]) -> None:
    """Read the client's frames until its Close (or EOF), then return (the server hangs up)."""
    while True:
        frame = await peer.read_frame()
        if frame is None:
            return
        into.append(frame)
        if frame[0] == CLOSE:
            return


def client_close_code(frames: list[tuple[int, bytes]]) -> int | None:
    closes = [payload for opcode, payload in frames if opcode == CLOSE]
    assert len(closes) <= 1, f"the client sent {len(closes)} Close frames"
    if not closes:
        return None
    return int.from_bytes(closes[0][:2], "big")


async def consume(conn: Connection, mode: str) -> tuple[list[bytes], Exception]:
    """Deliver messages one of three ways until something is raised; return both."""
    got: list[bytes] = []
    try:
        if mode == "receive":
            while True:
                message = await conn.receive()
                got.append(message.encode() if isinstance(message, str) else message)
        elif mode == "inline":
            await run_inline(conn, lambda view: got.append(bytes(view)))
        else:
            await run_channel(conn, got.append)
    except Exception as exc:  # the test inspects exactly what came out
        return got, exc
    raise AssertionError("unreachable: the consumers only end by raising")


def sender(data: bytes, frames: list[tuple[int, bytes]]) -> Callable[[ServerSide],
                                                                     Awaitable[None]]:
    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(data)
        await collect_client_frames(peer, frames)

    return script


# -- frame-level faults -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "fault", "code"), FRAME_FAULTS, ids=FAULT_IDS)
async def test_frame_fault_fails_the_connection_with_its_code(
    nursery: trio.Nursery, name: str, fault: bytes, code: int, mode: str
) -> None:
    frames: list[tuple[int, bytes]] = []
    port = await start_scripted_server(nursery, sender(BEFORE + fault + AFTER, frames))
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=2) as conn:
            got, exc = await consume(conn, mode)
    assert got == DELIVERED
    assert type(exc) is (MessageTooBig if code == 1009 else ProtocolError), repr(exc)
    assert isinstance(exc, ProtocolError) and exc.close_code == code
    assert client_close_code(frames) == code
    assert conn.closed is not None and conn.closed.code == code
    assert not conn.closed.initiated_by_peer


@pytest.mark.parametrize(("name", "fault", "code"), FRAME_FAULTS, ids=FAULT_IDS)
async def test_nothing_after_a_fault_is_delivered(
    nursery: trio.Nursery, name: str, fault: bytes, code: int
) -> None:
    """Once receive() has failed the connection, it never returns a later message.

    The connection is closed by then (its Close sent, the transport shut), so
    the only honest answers are ConnectionClosed with the code it closed
    with, or the same protocol error again; never the message that followed
    the fault, and never a different violation found by parsing on past it.
    """
    frames: list[tuple[int, bytes]] = []
    port = await start_scripted_server(nursery, sender(BEFORE + fault + AFTER + AFTER, frames))
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=2) as conn:
            got, first = await consume(conn, "receive")
            assert got == DELIVERED and isinstance(first, ProtocolError)
            later = []
            for _ in range(3):
                try:
                    later.append(await conn.receive())
                except (ConnectionClosed, ProtocolError) as exc:
                    again = exc.code if isinstance(exc, ConnectionClosed) else exc.close_code
                    assert again == code, f"after a {code} fault, receive() raised {exc!r}"
    assert later == [], f"receive() delivered {later!r} after the fault"
    assert client_close_code(frames) == code


async def test_huge_length_is_refused_from_the_header_without_buffering(
    nursery: trio.Nursery,
) -> None:
    """A 2^63 - 1 length is refused as soon as its 10-byte header is in, whatever follows."""
    frames: list[tuple[int, bytes]] = []
    header = b"\x82\x7f" + (2**63 - 1).to_bytes(8, "big")

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(BEFORE + header)
        # The client must not wait for any payload: it answers the header alone.
        await collect_client_frames(peer, frames)

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=2) as conn:
            got, exc = await consume(conn, "receive")
    assert got == DELIVERED
    assert isinstance(exc, MessageTooBig) and exc.close_code == 1009
    assert "9223372036854775807-byte frame" in str(exc)
    assert client_close_code(frames) == 1009
    assert conn.parser.buffered == len(header)  # nothing was reserved or awaited for the payload


# -- stalls, resets -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_slowloris_frame_trips_receive_timeout(
    nursery: trio.Nursery, mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A frame trickling one byte a second: receive_timeout (0.5 s) drops the connection.

    (Seconds of the autojump clock, on which the trickle and the timeout both run.)
    """

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(BEFORE)
        for byte in server_frame(TEXT, b"never finished in time"):
            await peer.stream.send_all(bytes([byte]))
            await trio.sleep(1)

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", receive_timeout=0.5,
                                   close_timeout=0.2) as conn:
            got, exc = await consume(conn, mode)
    assert got == DELIVERED
    assert type(exc) is ConnectionClosed, repr(exc)
    assert exc.code == 1006
    assert "receive_timeout" in str(exc)


@pytest.mark.parametrize("mode", MODES)
async def test_tcp_reset_in_the_middle_of_a_frame(nursery: trio.Nursery, mode: str) -> None:
    """RST (SO_LINGER 0) half-way through a frame: ConnectionClosed(1006), earlier messages kept."""
    half_frame = server_frame(TEXT, b"cut off " * 20)[:60]

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(BEFORE + half_frame)
        sock = peer.stream.socket  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=2) as conn:
            got, exc = await consume(conn, mode)
    assert got == DELIVERED
    assert type(exc) is ConnectionClosed, repr(exc)
    assert exc.code == 1006
    assert "transport failed" in str(exc) or "without a Close frame" in str(exc)


# -- the handshake ------------------------------------------------------------------------------


def raw_reply(reply: bytes, *, then_wait: bool = True) -> Callable[[ServerSide], Awaitable[None]]:
    async def script(peer: ServerSide) -> None:
        await peer.read_request()
        await peer.stream.send_all(reply)
        if then_wait:
            await trio.sleep_forever()

    return script


async def accept_with(peer: ServerSide, status: bytes, accept: str | None = None) -> None:
    await peer.accept(status=status, accept=accept)
    await trio.sleep_forever()


HANDSHAKE_FAULTS = [
    ("200 instead of 101", lambda p: accept_with(p, b"200 OK"), "HTTP 200", 200),
    ("302 redirect", lambda p: accept_with(p, b"302 Found"), "HTTP 302", 302),
    ("wrong Sec-WebSocket-Accept",
     lambda p: accept_with(p, b"101 Switching Protocols", "bm9wZQ=="),
     "Sec-WebSocket-Accept", 101),
    ("garbage status line", raw_reply(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), "malformed HTTP status",
     None),
    ("binary garbage", raw_reply(bytes(range(256)) + b"\r\n\r\n"), "malformed HTTP status", None),
    ("status without a code", raw_reply(b"HTTP/1.1 Switching\r\n\r\n"), "malformed HTTP status",
     None),
    ("101 without Upgrade",
     raw_reply(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"),
     "Upgrade: websocket", 101),
    ("header block over 16 KiB, never terminated",
     raw_reply(b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Junk: " + b"j" * 20_000),
     "exceeds 16384 bytes", None),
    ("1 MiB of headers in one burst, never terminated",
     raw_reply(b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Junk: jjjj\r\n" * 75_000),
     "exceeds 16384 bytes", None),
    ("connection closed during the handshake",
     raw_reply(b"HTTP/1.1 101 Switching", then_wait=False),
     "closed the connection during the handshake", None),
]


@pytest.mark.parametrize(("name", "script", "match", "status"), HANDSHAKE_FAULTS,
                         ids=[h[0] for h in HANDSHAKE_FAULTS])
async def test_handshake_fault_raises_handshake_error(
    nursery: trio.Nursery, name: str, script: Callable[[ServerSide], Awaitable[None]],
    match: str, status: int | None,
) -> None:
    port = await start_scripted_server(nursery, script)
    # connect_timeout is far beyond fail_after: the fault itself must end the handshake.
    with trio.fail_after(5), pytest.raises(HandshakeError, match=match) as info:
        async with open_connection(f"ws://127.0.0.1:{port}/", connect_timeout=60):
            pass
    assert info.value.status == status


async def test_slowloris_handshake_is_bounded_by_connect_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(peer: ServerSide) -> None:
        await peer.read_request()
        for byte in b"HTTP/1.1 101 Switching Protocols\r\n":
            await peer.stream.send_all(bytes([byte]))
            await trio.sleep(0.2)

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5), pytest.raises(trio.TooSlowError):
        async with open_connection(f"ws://127.0.0.1:{port}/", connect_timeout=0.5):
            pass


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


def server_context_for(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def self_signed_server_context(ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    """A server presenting a self-signed certificate: a CA's own root, with its key."""
    pem = tmp_path / "self-signed.pem"
    pem.write_bytes(ca.private_key_pem.bytes() + ca.cert_pem.bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem)
    return context


def days(n: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=n)


def tls_case(name: str, ca: trustme.CA, other_ca: trustme.CA, tmp_path: Path
             ) -> ssl.SSLContext:
    if name == "wrong host":
        return server_context_for(ca.issue_cert("example.org"))
    if name == "expired":
        return server_context_for(ca.issue_cert("127.0.0.1", not_before=days(-30),
                                                not_after=days(-1)))
    if name == "not yet valid":
        return server_context_for(ca.issue_cert("127.0.0.1", not_before=days(1),
                                                not_after=days(30)))
    if name == "untrusted CA":
        return server_context_for(other_ca.issue_cert("127.0.0.1"))
    assert name == "self-signed"
    return self_signed_server_context(other_ca, tmp_path)


TLS_FAULTS = [
    ("wrong host", r"IP address mismatch, certificate is not valid for '127\.0\.0\.1'"),
    ("expired", "certificate has expired"),
    ("not yet valid", "certificate is not yet valid"),
    ("untrusted CA", "unable to get local issuer certificate"),
    ("self-signed", "self.signed certificate"),
]


async def greet(peer: ServerSide) -> None:
    await peer.accept()
    await peer.stream.send_all(server_frame(TEXT, b"hello over tls"))
    await collect_client_frames(peer, [])


@pytest.mark.parametrize(("name", "why"), TLS_FAULTS, ids=[t[0] for t in TLS_FAULTS])
async def test_bad_certificate_is_refused_and_says_why(
    nursery: trio.Nursery, ca: trustme.CA, other_ca: trustme.CA, tmp_path: Path,
    name: str, why: str,
) -> None:
    port = await start_scripted_server(nursery, greet,
                                       ssl_context=tls_case(name, ca, other_ca, tmp_path))
    url = f"wss://127.0.0.1:{port}/"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    # Verification on, trusting our CA: refused, and the message names the reason.
    with trio.fail_after(5), pytest.raises(ssl.SSLCertVerificationError, match=why) as info:
        async with open_connection(url, ssl_context=trusting):
            pass
    assert "certificate verify failed" in str(info.value)
    # Verification on with the system's CAs (the default): refused too.
    with trio.fail_after(5), pytest.raises(ssl.SSLCertVerificationError):
        async with open_connection(url):
            pass
    # Only the loudly named switch lets it through.
    with trio.fail_after(5):
        async with open_connection(url, dangerously_disable_tls_verification=True) as conn:
            assert await conn.receive() == "hello over tls"


async def test_frame_fault_over_tls_closes_with_its_code(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    """The same fault handling behind TLS: the Close travels inside the TLS stream."""
    frames: list[tuple[int, bytes]] = []
    fault = server_frame(TEXT, b"ok \xf4", fin=False) + server_frame(CONT, b"\x90\x80\x80")
    server_context = server_context_for(ca.issue_cert("127.0.0.1"))
    port = await start_scripted_server(nursery, sender(BEFORE + fault + AFTER, frames),
                                       ssl_context=server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    with trio.fail_after(5):
        async with open_connection(f"wss://127.0.0.1:{port}/", ssl_context=trusting,
                                   close_timeout=2) as conn:
            got, exc = await consume(conn, "inline")
    assert got == DELIVERED
    assert type(exc) is ProtocolError and exc.close_code == 1007
    assert client_close_code(frames) == 1007


# -- a ping flood: reads never wait for a pong, pongs never exceed the gate ------------------


class TokenGate:
    """A send gate like the feed's: ``rate`` tokens a second, ``burst`` stored, awaited per frame.

    Records the moment each token is granted, so a test can check that every
    pong went through it.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp: float | None = None
        self.granted: list[float] = []

    async def __call__(self) -> None:
        now = trio.current_time()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        if self._tokens < 0:
            await trio.sleep(-self._tokens / self.rate)
        self.granted.append(trio.current_time())


#: Long enough at 5 pings a second for pongs answered oldest first, one per token (4 a
#: second), to fall a second behind; 50 a second overwhelms them at once.
FLOOD_SECONDS = {5: 4.0, 50: 2.0}
TAIL_SECONDS = 1.0  # data goes on, pings stopped: the last ping must be answered meanwhile
DATA_RATE = 200  # messages a second
GATE_RATE = 4.0  # what the feed allows itself: 4 a second, burst 1
#: How late the pong for the latest ping may be: one token interval, plus scheduling slack
#: on a loaded machine.
PONG_BOUND = 1 / GATE_RATE + 0.5


@pytest.mark.parametrize("mode", ["inline", "channel"])
@pytest.mark.parametrize("ping_rate", [5, 50])
async def test_a_ping_flood_never_slows_the_reads_and_pongs_stay_within_the_gate(
    nursery: trio.Nursery, ping_rate: int, mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    # On the autojump clock every figure below is in virtual time, in which loopback I/O
    # takes none: a lag, a late pong or a rate above the gate's is the client waiting (for a
    # token, a task, a read), never the machine's load.
    flood_seconds = FLOOD_SECONDS[ping_rate]
    n_data = int(DATA_RATE * (flood_seconds + TAIL_SECONDS))
    n_pings = int(ping_rate * flood_seconds)
    ping_times: list[float] = []
    client_frames: list[tuple[float, int, bytes]] = []

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        lock = trio.Lock()

        async def send(frame: bytes) -> None:
            async with lock:
                await peer.stream.send_all(frame)

        async def data() -> None:
            start = trio.current_time()
            for i in range(n_data):
                await send(server_frame(TEXT, b"%d %.6f" % (i, trio.current_time())))
                await trio.sleep_until(start + (i + 1) / DATA_RATE)

        async def pings() -> None:
            start = trio.current_time()
            for j in range(n_pings):
                ping_times.append(trio.current_time())
                await send(server_frame(PING, b"%d" % j))
                await trio.sleep_until(start + (j + 1) / ping_rate)

        async def read() -> None:
            while (frame := await peer.read_frame()) is not None:
                client_frames.append((trio.current_time(), *frame))
                if frame[0] == CLOSE:
                    return

        async with trio.open_nursery() as inner:
            inner.start_soon(read)
            async with trio.open_nursery() as senders:
                senders.start_soon(data)
                senders.start_soon(pings)
            await send(server_frame(CLOSE, close_payload(1000)))

    port = await start_scripted_server(nursery, script)
    gate = TokenGate(GATE_RATE)
    got: list[tuple[float, int, float]] = []  # (received, index, sent)

    def handler(payload: bytes | memoryview) -> None:
        index, sent = bytes(payload).split()
        got.append((trio.current_time(), int(index), float(sent)))

    with trio.fail_after(flood_seconds + TAIL_SECONDS + 10):
        async with open_connection(f"ws://127.0.0.1:{port}/", send_gate=gate,
                                   close_timeout=2) as conn:
            with pytest.raises(ConnectionClosed) as info:
                if mode == "inline":
                    await run_inline(conn, handler)
                else:
                    await run_channel(conn, handler)
    assert info.value.code == 1000

    # Data flowed at full rate: every message, in order, none of them held up.
    assert [index for _, index, _ in got] == list(range(n_data))
    lags = sorted(received - sent for received, _, sent in got)
    assert lags[-1] < 0.5, f"a message waited {lags[-1]:.3f} s to be read"
    # A reader that waited for a token before reading would hold up most messages
    # by a good part of a token interval (0.25 s); one that never waits, by nothing.
    assert lags[len(lags) // 2] < 0.05, f"median lag {lags[len(lags) // 2]:.3f} s"

    pongs = [(at, int(payload)) for at, opcode, payload in client_frames if opcode == PONG]
    # Never more than the gate allows: every pong took a token...
    stats = conn.statistics()
    assert stats.pongs_sent == len(pongs) <= len(gate.granted)
    # ...so, as the server saw them, at most burst + rate * T in any T (one frame of
    # slack for the network bunching two of them).
    for i, (first, _) in enumerate(pongs):
        for k in range(i + 1, len(pongs)):
            assert k - i + 1 <= 1 + GATE_RATE * (pongs[k][0] - first) + 1
    # Always the most recent ping: the answers only move forward.
    answered = [j for _, j in pongs]
    assert answered == sorted(set(answered)) and set(answered) <= set(range(n_pings))
    # The latest ping is answered within a bound: each ping is covered by a pong for
    # it or a later one, soon after it was sent.
    for j, sent_at in enumerate(ping_times):
        covered = [at for at, k in pongs if k >= j]
        assert covered and covered[0] - sent_at <= PONG_BOUND, (j, covered[:1], sent_at)
    assert answered[-1] == n_pings - 1
    # Every ping is accounted for: answered, coalesced into a later one, or (at the
    # end) not answered.
    assert stats.pings_received == n_pings
    assert stats.pings_received == stats.pongs_sent + stats.pings_coalesced + stats.pings_unanswered
    assert stats.pings_unanswered == 0
    if ping_rate > GATE_RATE:
        assert stats.pings_coalesced > 0
