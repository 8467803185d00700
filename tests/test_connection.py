"""The trio connection against real sockets: scripted peers, trio-websocket, and TLS."""

from __future__ import annotations

import ssl
import traceback

import pytest
import trio
import trio.testing
import trustme
from trio_websocket import serve_websocket

from trio_feed import (
    BorrowError,
    ConnectionClosed,
    HandshakeError,
    ProtocolError,
    open_connection,
    run_inline,
)
from trio_feed._connection import connect
from trio_feed._tls_stream import TLSStream
from trio_feed.wire import Opcode

from .scripted_server import ServerSide, start_scripted_server
from .wire.server_frames import server_frame


async def test_messages_pings_and_peer_close(nursery: trio.Nursery) -> None:
    pongs: list[tuple[int, bytes] | None] = []

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(
            server_frame(Opcode.TEXT, b"hello")
            + server_frame(Opcode.PING, b"are you there")
            + server_frame(Opcode.BINARY, b"\x00\x01")
        )
        pongs.append(await peer.read_frame())
        await peer.stream.send_all(server_frame(Opcode.CLOSE, b"\x03\xe9going away"))
        pongs.append(await peer.read_frame())  # the echoed Close

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/ws/x") as conn:
            assert await conn.receive() == "hello"
            assert await conn.receive() == b"\x00\x01"
            with pytest.raises(ConnectionClosed) as info:
                await conn.receive()
    assert info.value.code == 1001
    assert info.value.reason == "going away"
    assert info.value.initiated_by_peer
    assert pongs[0] == (Opcode.PONG, b"are you there")
    assert pongs[1] == (Opcode.CLOSE, b"\x03\xe9")
    assert conn.statistics().pongs_sent == 1


async def test_client_close_handshake(nursery: trio.Nursery) -> None:
    seen: list[tuple[int, bytes] | None] = []

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        frame = await peer.read_frame()
        seen.append(frame)
        await peer.stream.send_all(server_frame(Opcode.CLOSE, b"\x03\xe8"))

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/") as conn:
            await conn.send("hi")
    assert seen == [(Opcode.TEXT, b"hi")]
    assert conn.closed is not None and not conn.closed.initiated_by_peer


async def test_client_close_is_bounded_when_the_peer_never_answers(nursery: trio.Nursery) -> None:
    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await trio.sleep_forever()

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=0.2):
            pass


async def test_peer_vanishing_gives_1006(nursery: trio.Nursery) -> None:
    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(server_frame(Opcode.TEXT, b"one") + b"\x81\x05he")

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/") as conn:
            assert await conn.receive() == "one"
            with pytest.raises(ConnectionClosed) as info:
                await conn.receive()
    assert info.value.code == 1006


async def test_protocol_error_sends_its_close_code(nursery: trio.Nursery) -> None:
    closes: list[tuple[int, bytes] | None] = []

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(server_frame(Opcode.TEXT, b"\xff\xfe"))
        closes.append(await peer.read_frame())

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=0.5) as conn:
            with pytest.raises(ProtocolError) as info:
                await conn.receive()
    assert info.value.close_code == 1007
    assert closes[0] is not None
    assert closes[0][0] == Opcode.CLOSE and closes[0][1][:2] == (1007).to_bytes(2, "big")


@pytest.mark.parametrize(
    ("status", "accept", "match"),
    [
        (b"403 Forbidden", None, "HTTP 403"),
        (b"101 Switching Protocols", "bm9wZQ==", "Sec-WebSocket-Accept"),
    ],
)
async def test_handshake_refusals(nursery: trio.Nursery, status: bytes, accept: str | None,
                                  match: str) -> None:
    async def script(peer: ServerSide) -> None:
        await peer.accept(status=status, accept=accept)

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5), pytest.raises(HandshakeError, match=match):
        async with open_connection(f"ws://127.0.0.1:{port}/"):
            pass


async def test_connect_timeout_is_a_named_parameter(nursery: trio.Nursery) -> None:
    async def script(peer: ServerSide) -> None:
        await trio.sleep_forever()  # never answers the upgrade

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5), pytest.raises(trio.TooSlowError):
        async with open_connection(f"ws://127.0.0.1:{port}/", connect_timeout=0.2):
            pass


async def test_concurrent_senders_never_interleave(nursery: trio.Nursery) -> None:
    received: list[tuple[int, bytes]] = []
    done = trio.Event()

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        while len(received) < 40:
            frame = await peer.read_frame()
            assert frame is not None
            received.append(frame)
        done.set()
        await peer.stream.send_all(server_frame(Opcode.CLOSE, b"\x03\xe8"))

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/") as conn:
            async with trio.open_nursery() as senders:
                for i in range(20):
                    senders.start_soon(conn.send, f"text-{i}-" + "x" * 70000)
                    senders.start_soon(conn.ping, f"p{i}".encode())
            await done.wait()
    texts = sorted(p.decode()[:8] for op, p in received if op == Opcode.TEXT)
    assert len(texts) == 20
    assert all(len(p) == len(f"text-{p.decode().split('-')[1]}-") + 70000
               for op, p in received if op == Opcode.TEXT)
    assert sum(1 for op, _ in received if op == Opcode.PING) == 20


# -- an independent peer: trio-websocket's server ---------------------------------------


async def echo_handler(request: object) -> None:
    ws = await request.accept()  # type: ignore[attr-defined]
    try:
        while True:
            message = await ws.get_message()
            await ws.send_message(message)
    except Exception:
        pass


async def test_against_trio_websocket_server(nursery: trio.Nursery) -> None:
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, None)
    port = server.port
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/echo") as conn:
            for message in ["short", "x" * 200, "y" * 70000, b"\x00binary\xff"]:
                await conn.send(message)
                assert await conn.receive() == message
            await conn.ping(b"rtt")
            await conn.send("after ping")
            assert await conn.receive() == "after ping"


# -- TLS with trustme certificates ----------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_wss_with_a_trusted_certificate(nursery: trio.Nursery, ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, server_context)
    with trio.fail_after(5):
        async with open_connection(f"wss://127.0.0.1:{server.port}/",
                                   ssl_context=client_context) as conn:
            await conn.send("over tls")
            assert await conn.receive() == "over tls"


async def test_wss_refuses_an_untrusted_certificate_by_default(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server = await nursery.start(serve_websocket, echo_handler, "127.0.0.1", 0, server_context)
    with trio.fail_after(5), pytest.raises(ssl.SSLCertVerificationError):
        async with open_connection(f"wss://127.0.0.1:{server.port}/"):
            pass
    # ... unless verification is turned off by the loudly named option.
    with trio.fail_after(5):
        async with open_connection(
            f"wss://127.0.0.1:{server.port}/", dangerously_disable_tls_verification=True
        ) as conn:
            await conn.send("insecure")
            assert await conn.receive() == "insecure"


async def test_bad_urls() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        async with open_connection("http://example.com/"):
            pass


async def test_receive_timeout_drops_a_slowloris_peer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(peer: ServerSide) -> None:
        await peer.accept()
        frame = server_frame(Opcode.TEXT, b"never finished")
        for byte in frame:  # one byte per second: the frame never completes in time
            await peer.stream.send_all(bytes([byte]))
            await trio.sleep(1)

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", receive_timeout=0.3,
                                   close_timeout=0.2) as conn:
            with pytest.raises(ConnectionClosed, match="receive_timeout") as info:
                await conn.receive()
    assert info.value.code == 1006


async def test_pong_leaves_before_the_message_that_followed_the_ping(nursery: trio.Nursery) -> None:
    """A ping inside a fragmented message is answered before receive() returns the message."""
    order: list[tuple[int, bytes] | None] = []

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(  # all in one write, so one read on the client
            server_frame(Opcode.TEXT, b"frag", fin=False)
            + server_frame(Opcode.PING, b"p1")
            + server_frame(Opcode.CONTINUATION, b"ment")
        )
        order.append(await peer.read_frame())
        order.append(await peer.read_frame())
        await peer.stream.send_all(server_frame(Opcode.CLOSE, b"\x03\xe8"))

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/") as conn:
            message = await conn.receive()
            await conn.send(message)
            with pytest.raises(ConnectionClosed):
                await conn.receive()
    assert order == [(Opcode.PONG, b"p1"), (Opcode.TEXT, b"fragment")]
    assert conn.statistics().pings_received == 1


async def test_frame_bytes_that_arrive_with_the_handshake_are_counted(
    nursery: trio.Nursery,
) -> None:
    async def script(peer: ServerSide) -> None:
        headers = await peer.read_request()
        from trio_feed.wire import accept_token

        await peer.stream.send_all(  # the reply and the first frame in one write
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_token(headers["sec-websocket-key"]).encode()
            + b"\r\n\r\n" + server_frame(Opcode.TEXT, b"early")
        )
        await peer.read_frame()

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=0.2) as conn:
            assert await conn.receive() == "early"
            assert conn.statistics().bytes_received == 7


# -- TLSStream: the connection's own TLS transport -------------------------------------------


def tls_contexts(ca: trustme.CA, host: str = "127.0.0.1") -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


async def tls_pair(ca: trustme.CA, nursery: trio.Nursery, *, hostname: str = "127.0.0.1",
                   server_host: str = "127.0.0.1",
                   ) -> tuple[TLSStream, trio.SSLStream[trio.abc.Stream]]:
    """Our client TLSStream against trio's server SSLStream, over an in-memory pair."""
    server_context, client_context = tls_contexts(ca, server_host)
    client_raw, server_raw = trio.testing.memory_stream_pair()
    client = TLSStream(client_raw, client_context, server_hostname=hostname)
    server = trio.SSLStream(server_raw, server_context, server_side=True)
    nursery.start_soon(server.do_handshake)
    await client.do_handshake()
    return client, server


async def test_tls_stream_returns_every_record_that_arrived_in_one_call(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    """trio.SSLStream returns one record (<= 16 KiB) per call; TLSStream returns them all."""
    with trio.fail_after(5):
        client, server = await tls_pair(ca, nursery)
        payload = bytes(range(256)) * 400  # 100 KiB: at least 7 TLS records
        await server.send_all(payload)
        got = await client.receive_some(256 * 1024)
        assert got == payload
        await client.send_all(b"and back")
        assert await server.receive_some(100) == b"and back"


async def test_tls_stream_respects_max_bytes_and_keeps_the_rest(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    with trio.fail_after(5):
        client, server = await tls_pair(ca, nursery)
        await server.send_all(b"a" * 20000 + b"b" * 20000)
        parts = []
        while sum(map(len, parts)) < 40000:
            parts.append(await client.receive_some(15000))
        assert max(map(len, parts)) == 15000
        assert b"".join(parts) == b"a" * 20000 + b"b" * 20000


async def test_tls_stream_end_of_stream_with_and_without_close_notify(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    with trio.fail_after(5):
        client, server = await tls_pair(ca, nursery)
        await server.send_all(b"last words")
        await server.aclose()  # sends close_notify (https_compatible=False)
        assert await client.receive_some() == b"last words"
        assert await client.receive_some() == b""
        assert await client.receive_some() == b""  # and stays ended
        # A peer that ends TCP without close_notify ("ragged EOF") reads as the end too.
        client, server = await tls_pair(ca, nursery)
        await server.send_all(b"no goodbye")
        await server.transport_stream.aclose()
        assert await client.receive_some() == b"no goodbye"
        assert await client.receive_some() == b""


async def test_tls_stream_refuses_a_tampered_record_after_the_good_ones(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    with trio.fail_after(5):
        server_context, client_context = tls_contexts(ca)
        client_raw, server_raw = trio.testing.memory_stream_pair()
        tamper = False  # flip a bit in the server's next write of ciphertext
        real_send = server_raw.send_all

        async def send_all(data: bytes | bytearray | memoryview) -> None:
            nonlocal tamper
            data = bytearray(data)
            if tamper:
                data[-1] ^= 1
                tamper = False
            await real_send(data)

        server_raw.send_all = send_all  # type: ignore[method-assign]
        client = TLSStream(client_raw, client_context, server_hostname="127.0.0.1")
        server = trio.SSLStream(server_raw, server_context, server_side=True)
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
        await server.send_all(b"good")
        tamper = True
        await server.send_all(b"tampered")
        # Both records are in one read: the good one is delivered, then the failure.
        assert await client.receive_some() == b"good"
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.receive_some()
        assert isinstance(info.value.__cause__, ssl.SSLError)
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")  # broken for good


async def test_tls_stream_verifies_the_hostname(nursery: trio.Nursery, ca: trustme.CA) -> None:
    with trio.fail_after(5):
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            await tls_pair(ca, nursery, hostname="example.org", server_host="example.com")
        client, _ = await tls_pair(ca, nursery, hostname="example.org",
                                   server_host="example.org")
        await client.aclose()


async def test_tls_stream_close_and_busy_rules(nursery: trio.Nursery, ca: trustme.CA) -> None:
    with trio.fail_after(5):
        client, server = await tls_pair(ca, nursery)
        async with trio.open_nursery() as inner:
            inner.start_soon(client.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await client.receive_some()
            await server.send_all(b"wake")
        await client.aclose()
        await client.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")
        # The TCP connection was closed, without close_notify (as https_compatible=True):
        # a strict peer calls that a ragged EOF.
        with pytest.raises(trio.BrokenResourceError) as info:
            await server.receive_some()
        assert isinstance(info.value.__cause__, ssl.SSLEOFError)


async def test_wss_messages_pings_and_close_over_the_tls_stream(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    """The whole connection over TLS: large chunks in, pongs and the closing handshake out."""
    frames: list[tuple[int, bytes] | None] = []
    messages = [b'{"e":"trade","t":%d}' % i for i in range(5000)]  # about 100 KB

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(
            b"".join(server_frame(Opcode.TEXT, m) for m in messages)
            + server_frame(Opcode.PING, b"still there?")
        )
        frames.append(await peer.read_frame())
        await peer.stream.send_all(server_frame(Opcode.CLOSE, b"\x03\xe8bye"))
        frames.append(await peer.read_frame())

    server_context, client_context = tls_contexts(ca)
    port = await start_scripted_server(nursery, script, ssl_context=server_context)
    got: list[bytes] = []
    with trio.fail_after(5):
        async with open_connection(f"wss://127.0.0.1:{port}/", ssl_context=client_context) as conn:
            assert isinstance(conn._stream, TLSStream)
            with pytest.raises(ConnectionClosed) as info:
                await run_inline(conn, lambda view: got.append(bytes(view)))
    assert got == messages
    assert info.value.code == 1000 and info.value.reason == "bye"
    assert frames == [(Opcode.PONG, b"still there?"), (Opcode.CLOSE, b"\x03\xe8")]
    stats = conn.statistics()
    # Far fewer reads than the 7+ TLS records the messages travelled in.
    assert stats.chunks_received < stats.bytes_received // 16384


async def test_concurrent_senders_never_interleave_over_tls(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    received: list[tuple[int, bytes]] = []
    done = trio.Event()

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        while len(received) < 20:
            frame = await peer.read_frame()
            assert frame is not None
            received.append(frame)
        done.set()
        await peer.stream.send_all(server_frame(Opcode.CLOSE, b"\x03\xe8"))

    server_context, client_context = tls_contexts(ca)
    port = await start_scripted_server(nursery, script, ssl_context=server_context)
    with trio.fail_after(5):
        async with open_connection(f"wss://127.0.0.1:{port}/", ssl_context=client_context) as conn:
            async with trio.open_nursery() as senders:
                for i in range(10):
                    senders.start_soon(conn.send, f"text-{i}-" + "x" * 70000)
                    senders.start_soon(conn.ping, f"p{i}".encode())
            await done.wait()
    assert sorted(p for op, p in received if op == Opcode.PING) == sorted(
        f"p{i}".encode() for i in range(10))
    assert sorted(p.decode().split("-")[1] for op, p in received if op == Opcode.TEXT) == sorted(
        str(i) for i in range(10))
    assert all(len(p) == len(p.decode().rsplit("-", 1)[0]) + 1 + 70000
               for op, p in received if op == Opcode.TEXT)


# -- pongs: only the latest ping, never holding up the reads --------------------------------


async def test_only_the_latest_of_several_pending_pings_is_answered(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    frames: list[tuple[int, bytes]] = []
    more = trio.Event()

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(b"".join(server_frame(Opcode.PING, b"ping-%d" % i)
                                            for i in range(3)) + server_frame(Opcode.TEXT, b"x"))
        frame = await peer.read_frame()
        assert frame is not None
        frames.append(frame)
        await more.wait()
        await peer.stream.send_all(server_frame(Opcode.TEXT, b"y"))
        while (frame := await peer.read_frame()) is not None:
            frames.append(frame)

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        # With a send gate (a frame budget to keep), only the latest ping is answered.
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=1,
                                   send_gate=trio.lowlevel.checkpoint) as conn:
            assert await conn.receive() == "x"
            more.set()
            assert await conn.receive() == "y"
            stats = conn.statistics()
    assert frames[0] == (Opcode.PONG, b"ping-2")  # RFC 6455 5.5.3: the most recent one
    assert [f for f in frames if f[0] == Opcode.PONG] == [(Opcode.PONG, b"ping-2")]
    assert stats.pings_received == 3 and stats.pongs_sent == 1
    assert stats.pings_coalesced == 2 and stats.pings_unanswered == 0


class HeldGate:
    """A send gate that grants nothing until ``open`` is set, then everything."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.waiting = 0
        self.granted = 0

    async def __call__(self) -> None:
        self.waiting += 1
        await self.open.wait()
        self.waiting -= 1
        self.granted += 1


async def test_reads_go_on_while_the_gate_holds_the_pong_which_leaves_once_it_opens(
    nursery: trio.Nursery,
) -> None:
    pongs: list[tuple[float, tuple[int, bytes] | None]] = []
    ponged = trio.Event()
    gate = HeldGate()

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        for i in range(5):
            await peer.stream.send_all(server_frame(Opcode.PING, b"ping-%d" % i)
                                       + server_frame(Opcode.TEXT, b"data-%d" % i))
            await trio.sleep(0.02)
        frame = await peer.read_frame()
        pongs.append((trio.current_time(), frame))
        ponged.set()
        await trio.sleep_forever()

    port = await start_scripted_server(nursery, script)
    got: list[bytes] = []
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", send_gate=gate,
                                   close_timeout=0.5) as conn:
            async with trio.open_nursery() as inner:
                inner.start_soon(conn.answer_pings)
                await trio.testing.wait_all_tasks_blocked()
                assert conn.answering_pings
                with pytest.raises(trio.BusyResourceError):
                    await conn.answer_pings()  # one pong task per connection
                while len(got) < 5:  # no pong can leave, yet every message is read
                    await conn.receive_more()
                    got += conn.parser.copy_messages()
                assert gate.waiting == 1 and gate.granted == 0
                assert conn.statistics().pongs_sent == 0
                opened = trio.current_time()
                gate.open.set()
                await ponged.wait()
                inner.cancel_scope.cancel()
            stats = conn.statistics()
    assert got == [b"data-%d" % i for i in range(5)]
    assert pongs[0][1] == (Opcode.PONG, b"ping-4")  # the latest when the token came
    assert pongs[0][0] - opened < 0.5  # promptly once the gate let it through
    assert stats.pongs_sent == 1 and gate.granted == 1
    assert stats.pings_received == stats.pongs_sent + stats.pings_coalesced + stats.pings_unanswered


# -- closing with a view still lent ---------------------------------------------------------


async def test_aclose_closes_the_transport_even_with_a_view_pinned(nursery: trio.Nursery) -> None:
    ended = trio.Event()
    frames: list[tuple[int, bytes]] = []

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(server_frame(Opcode.TEXT, b"pinned"))
        while (frame := await peer.read_frame()) is not None:
            frames.append(frame)
        ended.set()  # EOF: the client closed its end

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        conn = await connect(f"ws://127.0.0.1:{port}/", close_timeout=3)
        while conn.parser.buffered == 0:
            await conn.receive_more()
        kept: list[memoryview] = []
        conn.parser.deliver(lambda view: kept.append(view[:]))
        started = trio.current_time()
        with pytest.raises(BorrowError, match="message #1"):
            await conn.aclose()
        # Long before close_timeout: no wait for an answer the buffer cannot take.
        assert trio.current_time() - started < 1
        with trio.fail_after(1):  # and the transport is closed: the server sees EOF
            await ended.wait()
    assert frames == [(Opcode.CLOSE, b"\x03\xe8")]
    assert bytes(kept[0]) == b"pinned"


async def test_a_handler_failure_with_a_pinned_view_reaches_the_caller_as_itself(
    nursery: trio.Nursery,
) -> None:
    ended = trio.Event()

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(server_frame(Opcode.TEXT, b"first"))
        while await peer.read_frame() is not None:
            pass
        ended.set()

    port = await start_scripted_server(nursery, script)
    failure = ValueError("the handler's own")
    kept: list[memoryview] = []

    def handler(view: memoryview) -> None:
        kept.append(view[1:])  # a slice survives the view's release...
        raise failure  # ...and then the handler fails

    with trio.fail_after(5):
        with pytest.raises(ValueError) as info:
            async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=30) as conn:
                await run_inline(conn, handler)
        with trio.fail_after(1):
            await ended.wait()  # the socket was closed all the same
    assert info.value is failure
    shown = "".join(traceback.format_exception(info.value))
    assert "ValueError: the handler's own" in shown
    assert "BorrowError: a view lent for one message outlived it" in shown
    assert "message #1" in shown
    assert bytes(kept[0]) == b"irst"


async def test_a_refused_upgrade_carries_the_servers_body() -> None:
    """Binance explains a 451 in the body: it reaches the caller, even when it comes late."""
    body = b'{"code":0,"msg":"Service unavailable from a restricted location."}'

    async def script(side: ServerSide) -> None:
        await side.read_request()
        await side.stream.send_all(
            b"HTTP/1.1 451 Unavailable For Legal Reasons\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        await trio.sleep(0.05)  # the rest of the body in a later segment
        await side.stream.send_all(body[10:])
        await trio.sleep(1)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_scripted_server(nursery, script)
            with pytest.raises(HandshakeError) as info:
                async with open_connection(f"ws://127.0.0.1:{port}/ws/btcusdt@trade"):
                    pass
            nursery.cancel_scope.cancel()
    assert info.value.status == 451
    assert info.value.body == body


async def test_without_a_gate_every_ping_gets_its_pong_in_order(nursery: trio.Nursery) -> None:
    """No frame budget to keep: each ping is answered (Autobahn cases 2.10 and 2.11)."""
    frames: list[tuple[int, bytes]] = []

    async def script(peer: ServerSide) -> None:
        await peer.accept()
        await peer.stream.send_all(b"".join(server_frame(Opcode.PING, b"ping-%d" % i)
                                            for i in range(10)) + server_frame(Opcode.TEXT, b"x"))
        while len(frames) < 10 and (frame := await peer.read_frame()) is not None:
            frames.append(frame)
        await peer.stream.send_all(server_frame(Opcode.TEXT, b"y"))

    port = await start_scripted_server(nursery, script)
    with trio.fail_after(5):
        async with open_connection(f"ws://127.0.0.1:{port}/", close_timeout=1) as conn:
            assert await conn.receive() == "x"
            assert await conn.receive() == "y"
            stats = conn.statistics()
    assert frames == [(Opcode.PONG, b"ping-%d" % i) for i in range(10)]
    assert stats.pings_received == 10 and stats.pongs_sent == 10 and stats.pings_coalesced == 0
