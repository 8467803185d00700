"""The local exchange's faults and observability, each provoked against a real client.

The clients are trio_feed's own ``open_connection`` (what a supervised
client is built on) and, where a test needs unsolicited pongs or an exact
ping round trip, trio-websocket's.  Time-based faults run on an autojump
clock (``autojump_clock`` fixture), so an hour of connection lifetime takes
milliseconds, and every ``fail_after`` bound is in that clock's seconds.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import time
from typing import Any

import orjson
import pytest
import trio
import trio.testing
import trustme
from trio_websocket import ConnectionClosed as WebSocketClosed
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url

from trio_feed import ConnectionClosed, HandshakeError, open_connection
from trio_feed.exchange import ConnectionInfo, open_exchange
from trio_feed.exchange._hooks import check_hooks

from .many_streams import many_streams
from .test_server import task_count


def loads(message: str | bytes) -> Any:
    return orjson.loads(message)


async def control(conn: Any, method: str, request_id: int, params: list[Any] | None = None
                  ) -> Any:
    """Send a control request on a trio_feed connection; return its reply, skipping data."""
    request: dict[str, Any] = {"method": method, "id": request_id}
    if params is not None:
        request["params"] = params
    await conn.send(orjson.dumps(request).decode())
    while True:
        message = loads(await conn.receive())
        if isinstance(message, dict) and message.get("id") == request_id:
            return message


async def until_closed(conn: Any) -> tuple[list[Any], ConnectionClosed]:
    """Every message received until the connection ends, and how it ended."""
    received = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            received.append(loads(await conn.receive()))
    return received, closed.value


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete unmasked frames ``(opcode, payload)`` in ``data``, and the incomplete rest."""
    frames = []
    while len(data) >= 2:
        length, offset = data[1] & 0x7F, 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(data[2:10], "big"), 10
        if len(data) < offset + length:
            break
        frames.append((data[0] & 0x0F, data[offset:offset + length]))
        data = data[offset + length:]
    return frames, data


# -- trio-websocket's hooks -----------------------------------------------------------------


def test_the_hooks_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    check_hooks()

    async def reader_without_dispatch(self: Any) -> None:
        pass  # pragma: no cover

    monkeypatch.setattr(WebSocketConnection, "_reader_task", reader_without_dispatch)
    with pytest.raises(RuntimeError, match="_handle_ping_event"):
        check_hooks()
    monkeypatch.delattr(WebSocketConnection, "_handle_pong_event")
    with pytest.raises(RuntimeError, match="_handle_pong_event"):
        check_hooks()


async def test_client_messages_pings_and_pongs_are_counted() -> None:
    with trio.fail_after(10):
        async with open_exchange(max_messages=0) as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws") as ws:
            await ws.ping(b"a")  # returns once the pong is back: answered
            await ws.ping(b"b")
            await ws.pong(b"unsolicited")
            await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":1}')
            assert loads(await ws.get_message()) == {"result": [], "id": 1}
            stats = exchange.statistics()
            assert (stats.client_messages, stats.client_pings, stats.client_pongs) == (4, 2, 1)
            assert stats.client_pings_unanswered == 0
            [info] = exchange.open_connections()
            assert info.client_messages == 4
            assert exchange.max_client_rate() == 4


# -- the client message budget ------------------------------------------------------------


async def test_the_budget_closes_the_sixth_message_in_a_second(
        autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with open_exchange(max_messages=0, max_client_messages_per_second=5) as exchange, \
                open_connection(f"{exchange.base_url}/ws") as conn:
            for second in range(3):  # 5 per second, for 3 seconds: within the budget
                for i in range(5):
                    reply = await control(conn, "LIST_SUBSCRIPTIONS", 10 * second + i)
                    assert reply["result"] == []
                await trio.sleep(1.0)
            assert exchange.max_client_rate(1.0) == 5
            assert exchange.max_client_rate(1.5) == 10
            for i in range(5):
                await control(conn, "LIST_SUBSCRIPTIONS", 100 + i)
            await conn.send('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":999}')
            received, closed = await until_closed(conn)
            assert received == []  # the sixth is not acted on: no reply
            assert (closed.code, closed.reason) == (1008, "Too many requests")
            await exchange.wait_all_closed()
            stats = exchange.statistics()
            assert stats.rate_limit_closes == 1
            assert stats.control_requests == 20
            assert stats.client_messages == 21
            assert exchange.max_client_rate(1.0) == 6
            assert [r[2] for r in exchange.subscribe_requests] == []


async def test_pings_and_pongs_count_against_the_budget(
        autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with open_exchange(max_messages=0, max_client_messages_per_second=5) as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws") as ws:
            for payload in (b"1", b"2", b"3"):
                await ws.ping(payload)
            await ws.pong(b"")
            await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":1}')
            assert loads(await ws.get_message()) == {"result": [], "id": 1}
            await ws.pong(b"")  # the sixth message within the second
            with pytest.raises(WebSocketClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1008
            assert closed.value.reason.reason == "Too many requests"
            stats = exchange.statistics()
            assert (stats.client_pings, stats.client_pongs, stats.rate_limit_closes) == (3, 2, 1)


# -- lifetime -------------------------------------------------------------------------------


async def test_max_lifetime_closes_each_connection_on_its_own_schedule(
        autojump_clock: trio.testing.MockClock) -> None:
    ended: dict[str, tuple[float, ConnectionClosed]] = {}

    async def hold(name: str, url: str) -> None:
        async with open_connection(url) as conn:
            _, closed = await until_closed(conn)
            ended[name] = (trio.current_time(), closed)

    with trio.fail_after(10_000):
        async with open_exchange(max_lifetime=3600, ping_interval=20) as exchange:
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold, "first", f"{exchange.base_url}/ws")
                await trio.sleep(1000)
                nursery.start_soon(hold, "second", f"{exchange.base_url}/ws")
            stats = exchange.statistics()
    for name, opened in (("first", 0), ("second", 1000)):
        at, closed = ended[name]
        assert 3600 <= at - start - opened < 3601
        assert (closed.code, closed.reason) == (1001, "connection lifetime exceeded")
    assert stats.lifetime_closes == 2
    assert stats.pongs_missed == 0 and stats.pings_sent >= 300


# -- dropped and closed connections ---------------------------------------------------------


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize(("abrupt", "tls"), [(False, False), (True, False), (False, True),
                                             (True, True)])
async def test_drop_connections_ends_tcp_without_a_close_frame(abrupt: bool, tls: bool) -> None:
    server_context, client_context = tls_contexts() if tls else (None, None)
    before = task_count()
    with trio.fail_after(10):
        async with open_exchange(rate=200, ssl_context=server_context) as exchange:
            url = exchange.raw_url("btcusdt@depth@100ms")
            async with open_connection(url, ssl_context=client_context) as first, \
                    open_connection(url, ssl_context=client_context) as second:
                for conn in (first, second):
                    await conn.receive()
                assert await exchange.drop_connections(abrupt=abrupt) == 2
                assert exchange.open_connections() == []
                for conn in (first, second):
                    _, closed = await until_closed(conn)
                    assert closed.code == 1006
                await exchange.wait_all_closed()
                stats = exchange.statistics()
                assert stats.connections_dropped == 2 and stats.connections_open == 0
            async with open_connection(url, ssl_context=client_context) as again:
                assert loads(await again.receive())["e"] == "depthUpdate"
    assert task_count() == before


@pytest.mark.parametrize("abrupt", [False, True])
async def test_a_clean_drop_delivers_everything_written(abrupt: bool) -> None:
    streams = [f"{s}@depth20@100ms" for s in ("btcusdt", "ethusdt", "bnbusdt")]
    with trio.fail_after(10):
        # The simulated clock (clock=None): a 100 ms stream is due every few ticks, so the
        # socket buffers fill in milliseconds, not in the seconds of the wall clock.
        async with open_exchange(rate=None, clock=None) as exchange, \
                open_connection(exchange.combined_url(streams)) as conn:
            first = loads(await conn.receive())
            # Not reading: the sender blocks once both sockets' buffers are full.
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            assert await exchange.drop_connections(abrupt=abrupt) == 1
            received, closed = await until_closed(conn)
            await exchange.wait_all_closed()
            stats = exchange.statistics()
    assert closed.code == 1006
    assert stats.messages_sent > 20
    if abrupt:
        assert 1 + len(received) < stats.messages_sent  # the RST discarded what was in flight
    else:
        assert 1 + len(received) == stats.messages_sent  # the FIN came after all of it
        for name in streams:
            ids = [m["data"]["lastUpdateId"] for m in [first, *received] if m["stream"] == name]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_close_connections_sends_the_code_and_returns_promptly() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=100) as exchange:
            url = exchange.raw_url("btcusdt@trade")
            async with open_connection(url) as first, open_connection(url) as second:
                await first.receive()
                started = time.perf_counter()
                # Neither client reads during the call: it must not wait for their replies.
                assert await exchange.close_connections(4000, "rotate now") == 2
                assert time.perf_counter() - started < 0.5
                assert await exchange.close_connections() == 0  # already closing
                for conn in (first, second):
                    _, closed = await until_closed(conn)
                    assert (closed.code, closed.reason) == (4000, "rotate now")
            async with open_connection(url) as third:
                await third.receive()
                assert await exchange.close_connections() == 1
                _, closed = await until_closed(third)
                assert (closed.code, closed.reason) == (1011, "")
            await exchange.wait_all_closed()
            with pytest.raises(ValueError):
                await exchange.close_connections(1006)
            with pytest.raises(ValueError):
                await exchange.close_connections(1000, "x" * 124)


# -- pausing and pings ----------------------------------------------------------------------


async def test_pause_in_a_shared_market_loses_exactly_what_it_counts(
        autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        async with open_exchange(shared_market=True, rate=10, ping_interval=1.0) as exchange, \
                open_connection(exchange.raw_url("btcusdt@depth@100ms")) as conn:
            before = [loads(await conn.receive()) for _ in range(5)]
            exchange.pause_sending()
            pings = exchange.statistics().pings_sent
            await conn.send('{"method":"LIST_SUBSCRIPTIONS","id":7}')
            await conn.ping(b"rtt")
            with trio.move_on_after(30) as silent:
                await conn.receive()
            assert silent.cancelled_caught  # no data, no reply, no ping
            stats = exchange.statistics()
            assert stats.pings_sent == pings
            assert stats.client_pings_unanswered == 1
            assert stats.messages_dropped >= 290
            exchange.resume_sending()
            assert loads(await conn.receive()) == {"result": ["btcusdt@depth@100ms"], "id": 7}
            after = loads(await conn.receive())
            missed = (after["E"] - before[-1]["E"]) // 100 - 1
            assert missed == exchange.statistics().messages_dropped
            assert after["U"] > before[-1]["u"] + 1  # the gap a client can see
            [info] = exchange.open_connections()
            assert info.messages_dropped == missed
            await trio.sleep(3)
            assert exchange.statistics().pings_sent > pings


async def test_pause_with_per_connection_markets_only_delays(
        autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        async with open_exchange(rate=10) as exchange, \
                open_connection(exchange.raw_url("btcusdt@depth@100ms")) as conn:
            before = loads(await conn.receive())
            exchange.pause_sending()
            with trio.move_on_after(30) as silent:
                await conn.receive()
            assert silent.cancelled_caught
            exchange.resume_sending()
            after = loads(await conn.receive())
            assert after["U"] == before["u"] + 1
            assert exchange.statistics().messages_dropped == 0


async def test_ignore_client_pings(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        async with open_exchange(rate=10, max_messages=1) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@depth@100ms")) as ws:
            exchange.ignore_client_pings()
            with trio.move_on_after(60) as unanswered:
                await ws.ping(b"first")
            assert unanswered.cancelled_caught
            assert loads(await ws.get_message())["e"] == "depthUpdate"  # data still flows
            exchange.ignore_client_pings(False)
            await ws.ping(b"second")
            stats = exchange.statistics()
            assert (stats.client_pings, stats.client_pings_unanswered) == (2, 1)


# -- refusing and accepting -----------------------------------------------------------------


async def test_refuse_the_next_connections() -> None:
    with trio.fail_after(10):
        async with open_exchange(max_messages=0) as exchange:
            url = f"{exchange.base_url}/ws"
            exchange.refuse_connections(2)
            with pytest.raises(HandshakeError) as refused:
                async with open_connection(url):
                    pass  # pragma: no cover
            assert refused.value.status == 503
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(url):
                    pass  # pragma: no cover
            assert rejected.value.status_code == 503
            async with open_connection(url) as conn:
                assert (await control(conn, "LIST_SUBSCRIPTIONS", 1))["result"] == []
            exchange.refuse_connections()  # until told otherwise
            for _ in range(3):
                with pytest.raises(HandshakeError):
                    async with open_connection(url):
                        pass  # pragma: no cover
            exchange.refuse_connections(0)
            async with open_connection(url):
                pass
            stats = exchange.statistics()
            assert (stats.connection_attempts, stats.connections_refused,
                    stats.connections_accepted) == (7, 5, 2)
            assert len(exchange.attempt_times) == 7


async def test_refuse_connections_for_a_while(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        async with open_exchange(max_messages=0) as exchange:
            url = f"{exchange.base_url}/ws"
            start = trio.current_time()
            exchange.refuse_connections(seconds=30)
            for wait in (0, 29):
                await trio.sleep_until(start + wait)
                with pytest.raises(HandshakeError):
                    async with open_connection(url):
                        pass  # pragma: no cover
            await trio.sleep_until(start + 30)
            async with open_connection(url):
                pass
            assert [round(t - start, 6) for t in exchange.attempt_times] == [0, 29, 30]
            assert exchange.statistics().connections_refused == 2


async def test_accept_and_close(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        async with open_exchange(rate=10) as exchange:
            url = exchange.raw_url("btcusdt@depth@100ms")
            exchange.accept_and_close(2)
            for _ in range(2):
                async with open_connection(url) as conn:  # the upgrade succeeds
                    received, closed = await until_closed(conn)
                    assert received == [] and closed.code == 1006
            async with open_connection(url) as conn:
                assert loads(await conn.receive())["e"] == "depthUpdate"
            stats = exchange.statistics()
            assert (stats.connection_attempts, stats.connections_accepted,
                    stats.connections_dropped) == (3, 3, 2)
            with pytest.raises(ValueError):
                exchange.accept_and_close(-1)


# -- the shared market ----------------------------------------------------------------------


async def test_a_shared_market_continues_across_connections(
        autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        async with open_exchange(shared_market=True, rate=100, seed=3, clock=None) as exchange:
            url = exchange.combined_url(["btcusdt@trade"])
            async with open_connection(url) as old:
                olds = [loads(await old.receive())["data"] for _ in range(20)]
                # Make before break: the new connection is up before the old one goes.
                async with open_connection(f"{exchange.base_url}/stream") as new:
                    assert (await control(new, "SUBSCRIBE", 1, ["btcusdt@trade"]))["result"] \
                        is None
                    news = [loads(await new.receive())["data"] for _ in range(20)]
                    while olds[-1]["t"] < news[-1]["t"]:
                        olds.append(loads(await old.receive())["data"])
            by_id = {t["t"]: t for t in olds}
            shared = [t for t in news if t["t"] in by_id]
            assert shared and all(by_id[t["t"]] == t for t in shared)  # identical payloads
            ids = sorted(by_id.keys() | {t["t"] for t in news})
            assert ids == list(range(ids[0], ids[-1] + 1))  # nothing lost in the rotation
            # The shared market is the seed's market: replay it from tick 0.
            market, expected = exchange.market(), []
            while not expected or expected[-1]["t"] < ids[-1]:
                market.step()
                expected.extend(market.payloads("btcusdt@trade"))
            replay = {t["t"]: t for t in expected}
            assert all(replay[t["t"]] == t for t in olds)
            async with open_connection(exchange.raw_url("btcusdt@trade")) as later:
                assert loads(await later.receive())["t"] > ids[-1]


async def test_a_slow_client_is_closed_and_its_loss_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    streams = "/".join(f"{s}@depth20@100ms" for s in ("btcusdt", "ethusdt", "bnbusdt"))
    with trio.fail_after(1000):
        async with open_exchange(shared_market=True, rate=100, max_queued_messages=10) \
                as exchange:
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", exchange.port))
            stream = trio.SocketStream(sock)
            key = base64.b64encode(os.urandom(16)).decode()
            await stream.send_all(
                f"GET /stream?streams={streams} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode())
            received = b""
            while len(received.partition(b"\r\n\r\n")[2]) == 0:  # the 101 and some data
                received += await stream.receive_some()
            await exchange.wait_all_closed()  # now not reading: the queue overflows
            stats = exchange.statistics()
            while chunk := await stream.receive_some():
                received += chunk
    assert stats.slow_client_closes == 1 and stats.messages_dropped > 0
    head, _, data = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    frames, _ = server_frames(data)
    assert [opcode for opcode, _ in frames] == [1] * stats.messages_sent  # no Close got out


async def test_overflowing_the_queue_closes_with_1008() -> None:
    # Replies queue while sending is paused, and the Close is not held back by the pause.
    with trio.fail_after(10):
        async with open_exchange(max_messages=0, max_queued_messages=3) as exchange, \
                open_connection(f"{exchange.base_url}/ws") as conn:
            exchange.pause_sending()
            for request_id in range(4):
                await conn.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{request_id}}}')
            received, closed = await until_closed(conn)
            assert received == []
            assert (closed.code, closed.reason) == (1008, "slow client")
            assert exchange.statistics().slow_client_closes == 1


async def test_leaving_a_paused_exchange_closes_everything(
        autojump_clock: trio.testing.MockClock) -> None:
    before = task_count()
    with trio.fail_after(100):
        async with contextlib.AsyncExitStack() as clients:
            async with open_exchange(shared_market=True, rate=10, max_lifetime=60,
                                     ping_interval=1.0, max_queued_messages=10) as exchange:
                url = exchange.raw_url("btcusdt@depth@100ms")
                conns = [await clients.enter_async_context(open_connection(url))
                         for _ in range(3)]
                for conn in conns:
                    await conn.receive()
                exchange.pause_sending()
                await conns[0].send('{"method":"LIST_SUBSCRIPTIONS","id":1}')  # queued
            for conn in conns:  # the Close (1001) is not held back by the pause
                _, closed = await until_closed(conn)
                assert (closed.code, closed.reason) == (1001, "exchange shutting down")
    assert task_count() == before


# -- observability ----------------------------------------------------------------------------


async def test_subscriptions_are_logged_and_connections_listed() -> None:
    symbols, names = many_streams(1500)
    with trio.fail_after(10):
        async with open_exchange(max_messages=0, symbols=symbols) as exchange:
            start = trio.current_time()
            async with open_connection(f"{exchange.base_url}/stream") as first, \
                    open_connection(f"{exchange.base_url}/stream") as second:
                await subscribe_and_list(exchange, first, second, names, start)


async def subscribe_and_list(exchange: Any, first: Any, second: Any, names: list[str],
                             start: float) -> None:
    assert (await control(first, "SUBSCRIBE", 1, names[:1024]))["result"] is None
    assert (await control(second, "SUBSCRIBE", 2, names[1024:]))["result"] is None
    assert (await control(second, "UNSUBSCRIBE", 3, names[-1:]))["result"] is None
    infos = exchange.open_connections()
    assert all(isinstance(info, ConnectionInfo) for info in infos)
    assert [info.number for info in infos] == [0, 1]
    assert [len(info.subscriptions) for info in infos] == [1024, 475]
    assert set(infos[0].subscriptions) | set(infos[1].subscriptions) == set(names[:-1])
    assert all(start <= info.opened_at <= trio.current_time() and info.combined
               for info in infos)
    log = exchange.subscribe_requests
    assert [(n, method, len(params)) for n, _, method, params in log] == [
        (0, "SUBSCRIBE", 1024), (1, "SUBSCRIBE", 476), (1, "UNSUBSCRIBE", 1)]
    assert log[2][3] == names[-1:] and all(start <= t for _, t, _, _ in log)


def test_arguments_are_checked() -> None:
    for bad in (dict(shared_market=True, rate=None), dict(shared_market=True, rate=0),
                dict(max_queued_messages=0), dict(max_lifetime=0),
                dict(max_client_messages_per_second=0)):
        with pytest.raises(ValueError):
            open_exchange(**bad)  # type: ignore[arg-type]
