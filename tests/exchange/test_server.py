"""The local exchange over real sockets, with trio-websocket's client as the peer."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import ssl
import time
from typing import Any

import orjson
import pytest
import trio
import trustme
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from trio_feed import open_feed
from trio_feed.exchange import EPOCH_MS, TICK_MS, ExchangeStatistics, Market, open_exchange

from .many_streams import many_streams


async def receive(ws: WebSocketConnection) -> Any:
    return orjson.loads(await ws.get_message())


async def request(ws: WebSocketConnection, message: dict[str, Any] | str) -> Any:
    await ws.send_message(message if isinstance(message, str) else orjson.dumps(message).decode())
    return await receive(ws)


async def reply_to(ws: WebSocketConnection, message: dict[str, Any]) -> Any:
    """Send a control request and return its reply, skipping data messages."""
    await ws.send_message(orjson.dumps(message).decode())
    while True:
        received = await receive(ws)
        if isinstance(received, dict) and ("result" in received or "code" in received):
            return received


async def collect(ws: WebSocketConnection, count: int) -> list[Any]:
    return [await receive(ws) for _ in range(count)]


async def silent_for(ws: WebSocketConnection, seconds: float) -> list[Any]:
    """Every message that arrives within ``seconds``."""
    got = []
    with trio.move_on_after(seconds):
        while True:
            got.append(await receive(ws))
    return got


async def upgrade(port: int, path: str) -> trio.SocketStream:
    """A bare TCP client that sends the upgrade request and then does nothing by itself."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    return stream


def task_count() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries
                       for child in nursery.child_tasks)
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


async def test_raw_path_delivers_bare_payloads() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=None) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@trade")) as ws:
            assert exchange.base_url == f"ws://127.0.0.1:{exchange.port}"
            trades = await collect(ws, 50)
            assert {t["e"] for t in trades} == {"trade"} and {t["s"] for t in trades} == {"BTCUSDT"}
            assert [t["t"] for t in trades] == list(range(trades[0]["t"], trades[0]["t"] + 50))
            assert await reply_to(ws, {"method": "GET_PROPERTY", "params": ["combined"],
                                       "id": 1}) == {"result": False, "id": 1}


async def test_raw_path_with_several_streams() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=None) as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws/ethusdt@trade/ethusdt@aggTrade") as ws:
            kinds = {m["e"] for m in await collect(ws, 40)}
            assert kinds == {"trade", "aggTrade"}


async def test_combined_path_delivers_envelopes() -> None:
    streams = ["btcusdt@trade", "ethusdt@depth@100ms", "bnbusdt@bookTicker",
               "btcusdt@kline_1m@+08:00"]
    with trio.fail_after(10):
        async with open_exchange(rate=None, clock=None) as exchange, \
                open_websocket_url(exchange.combined_url(streams)) as ws:
            assert "%2B08:00" in exchange.combined_url(streams)
            messages = await collect(ws, 300)
            assert {m["stream"] for m in messages} == set(streams)
            assert all(list(m) == ["stream", "data"] for m in messages)
            depth = [m["data"] for m in messages if m["stream"] == "ethusdt@depth@100ms"]
            assert all(b["U"] == a["u"] + 1 for a, b in itertools.pairwise(depth))


async def test_same_seed_same_messages() -> None:
    streams = ["btcusdt@trade", "btcusdt@depth@100ms", "ethusdt@bookTicker", "!miniTicker@arr"]
    with trio.fail_after(10):
        async with open_exchange(rate=None, seed=42, clock=None) as exchange:
            async with open_websocket_url(exchange.combined_url(streams)) as first, \
                    open_websocket_url(exchange.combined_url(streams)) as second:
                ours, theirs = await collect(first, 200), await collect(second, 200)
            assert ours == theirs
            market = exchange.market()
            expected: list[dict[str, Any]] = []
            while len(expected) < 200:
                market.step()
                expected.extend({"stream": n, "data": p} for n, p in market.events(streams))
            assert ours == expected[:200]
            async with open_websocket_url(f"{exchange.base_url}/stream") as late:
                await trio.sleep(0.05)
                assert await request(late, {"method": "SUBSCRIBE", "params": streams,
                                            "id": 1}) == {"result": None, "id": 1}
                assert await collect(late, 200) == ours


async def test_subscribe_list_unsubscribe() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=2000, clock=None) as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws") as ws:
            assert await silent_for(ws, 0.05) == []
            reply = await request(ws, {"method": "SUBSCRIBE",
                                       "params": ["btcusdt@aggTrade", "btcusdt@depth@100ms"],
                                       "id": 1})
            assert reply == {"result": None, "id": 1}
            seen = {m["e"] for m in await collect(ws, 20)}
            assert seen == {"aggTrade", "depthUpdate"}
            assert await reply_to(ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth@100ms"],
                                       "id": 312}) == {"result": None, "id": 312}
            after = await silent_for(ws, 0.2)
            assert after and {m["e"] for m in after} == {"aggTrade"}
            assert await reply_to(ws, {"method": "LIST_SUBSCRIPTIONS", "id": "abc3"}) \
                == {"result": ["btcusdt@aggTrade"], "id": "abc3"}
            assert exchange.statistics().control_requests == 3


async def test_set_property_switches_to_envelopes() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=None, max_messages=5) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@trade")) as ws:
            assert [m["e"] for m in await collect(ws, 5)] == ["trade"] * 5
            assert await request(ws, {"method": "SET_PROPERTY", "params": ["combined", True],
                                      "id": 5}) == {"result": None, "id": 5}
            assert await request(ws, {"method": "GET_PROPERTY", "params": ["combined"],
                                      "id": 2}) == {"result": True, "id": 2}
            await exchange.announce_shutdown()
            notice = await receive(ws)
            assert notice["stream"] == "!serverShutdown"
            assert list(notice["data"]) == ["e", "E"] and notice["data"]["e"] == "serverShutdown"


async def test_server_shutdown_notice_on_a_raw_connection() -> None:
    with trio.fail_after(10):
        async with open_exchange() as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws") as ws:
            await trio.sleep(0.01)
            await exchange.announce_shutdown()
            notice = await receive(ws)
            assert list(notice) == ["e", "E"] and notice["e"] == "serverShutdown"


ERRORS = [
    ('{"method": "SUBSCRIBE", "params": [', {"code": 3}),
    ("not json", {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}),
    ({"method": "SUBSCRIBES", "params": [], "id": 1},
     {"code": 2, "msg": "Invalid request: unknown variant `SUBSCRIBES`, expected one of "
      "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line "
      "1 column 22"}),
    ({"params": [], "id": 1}, {"code": 2}),
    ([1, 2], {"code": 2}),
    ({"method": "LIST_SUBSCRIPTIONS", "id": 1.5},
     {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}),
    ({"method": "LIST_SUBSCRIPTIONS", "id": "has space"}, {"code": 2}),
    ({"method": "LIST_SUBSCRIPTIONS", "id": "x" * 37}, {"code": 2}),
    ({"method": "LIST_SUBSCRIPTIONS", "id": True}, {"code": 2}),
    ({"method": "LIST_SUBSCRIPTIONS", "id": 2**63}, {"code": 2}),
    ({"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 1},
     {"code": 2, "msg": "Invalid request: too many parameters"}),
    ({"method": "GET_PROPERTY", "params": ["colour"], "id": 7},
     {"code": 0, "msg": "Unknown property", "id": 7}),
    ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 8},
     {"code": 1, "msg": "Invalid value type: expected Boolean"}),
    ({"method": "SET_PROPERTY", "params": [1, True], "id": 8},
     {"code": 2, "msg": "Invalid request: property name must be a string"}),
    ({"method": "GET_PROPERTY", "params": ["combined", True], "id": 8},
     {"code": 2, "msg": "Invalid request: too many parameters"}),
    ({"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 9}, {"code": 2}),
]


@pytest.mark.parametrize(("message", "expected"), ERRORS)
async def test_error_replies(message: dict[str, Any] | str, expected: dict[str, Any]) -> None:
    with trio.fail_after(10):
        async with open_exchange() as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws") as ws:
            reply = await request(ws, message if isinstance(message, str)
                                  else orjson.dumps(message).decode())
            assert {key: reply[key] for key in expected} == expected
            assert set(reply) <= {"code", "msg", "id"}
            assert ("id" in reply) == (reply["code"] == 0)
            assert exchange.statistics().control_errors == 1


async def test_good_ids_are_echoed() -> None:
    with trio.fail_after(10):
        async with open_exchange() as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws") as ws:
            for request_id in (None, -5, 2**63 - 1, "A1b2", ""):
                assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": request_id}) \
                    == {"result": [], "id": request_id}


async def test_invalid_stream_in_subscribe_changes_nothing() -> None:
    with trio.fail_after(10):
        async with open_exchange() as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws") as ws:
            reply = await request(ws, {"method": "SUBSCRIBE",
                                       "params": ["btcusdt@trade", "btcusdt@depth7"], "id": 4})
            assert reply["code"] == 2 and reply["id"] == 4
            assert "btcusdt@depth7" in reply["msg"]
            assert reply["msg"].startswith("Invalid request: invalid stream")
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 5}) \
                == {"result": [], "id": 5}


async def test_at_most_1024_streams() -> None:
    symbols, names = many_streams(1025)
    one_more = names.pop()
    with trio.fail_after(10):
        async with open_exchange(max_messages=0, symbols=symbols) as exchange, \
                open_websocket_url(f"{exchange.base_url}/stream") as ws:
            assert await request(ws, {"method": "SUBSCRIBE", "params": names, "id": 1}) \
                == {"result": None, "id": 1}
            reply = await request(ws, {"method": "SUBSCRIBE", "params": [one_more], "id": 2})
            assert reply["code"] == 2 and reply["id"] == 2 and "1024" in reply["msg"]
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(exchange.combined_url([*names, one_more])):
                    pass  # pragma: no cover
            assert rejected.value.status_code == 400
            assert rejected.value.body is not None
            assert b"too many streams" in rejected.value.body


async def test_unknown_symbol_is_refused_in_subscribe() -> None:
    with trio.fail_after(10):
        async with open_exchange(symbols=["btcusdt"]) as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws") as ws:
            reply = await request(ws, {"method": "SUBSCRIBE",
                                       "params": ["btcusdt@trade", "xyzusdt@trade"], "id": 7})
            assert reply["code"] == 2 and reply["id"] == 7
            assert reply["msg"].startswith("Invalid request: invalid stream 'xyzusdt@trade'")
            assert "Invalid symbol 'xyzusdt'" in reply["msg"]
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 8}) \
                == {"result": [], "id": 8}
            # All-market streams name no symbol; unsubscribing from nothing is harmless.
            assert await request(ws, {"method": "SUBSCRIBE", "params": ["!miniTicker@arr"],
                                      "id": 9}) == {"result": None, "id": 9}
            assert await reply_to(ws, {"method": "UNSUBSCRIBE", "params": ["xyzusdt@trade"],
                                       "id": 10}) == {"result": None, "id": 10}


async def test_unknown_symbol_is_refused_in_the_url() -> None:
    with trio.fail_after(10):
        async with open_exchange(symbols=["btcusdt", "ethusdt"]) as exchange:
            for url in (exchange.combined_url(["btcusdt@trade", "xyzusdt@depth@100ms"]),
                        exchange.raw_url("xyzusdt@trade")):
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(url):
                        pass  # pragma: no cover
                assert rejected.value.status_code == 400
                assert rejected.value.body is not None
                assert b"Invalid symbol 'xyzusdt'" in rejected.value.body
            assert exchange.statistics().handshakes_rejected == 2
            async with open_websocket_url(exchange.combined_url(["ethusdt@trade"])) as ws:
                assert (await receive(ws))["data"]["s"] == "ETHUSDT"


@pytest.mark.parametrize(("path", "status", "text"), [
    ("/ws/btcusdt@depth7", 400, b"btcusdt@depth7"),
    ("/stream?streams=btcusdt@trade/BTCUSDT@trade", 400, b"BTCUSDT@trade"),
    ("/stream?streams=btcusdt@kline_1m@+08:00", 400, b"btcusdt@kline_1m@ 08:00"),
    ("/stream?streams=btcusdt@trade&timeUnit=MICROSECOND", 400, b"MICROSECOND"),
    ("/api/v3/depth", 404, b"/api/v3/depth"),
])
async def test_bad_urls_are_rejected(path: str, status: int, text: bytes) -> None:
    with trio.fail_after(10):
        async with open_exchange() as exchange:
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(exchange.base_url + path):
                    pass  # pragma: no cover
            assert rejected.value.status_code == status
            assert rejected.value.body is not None and text in rejected.value.body
            assert exchange.statistics().handshakes_rejected == 1


async def test_percent_encoded_names_are_accepted() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=None) as exchange, \
                open_websocket_url(f"{exchange.base_url}/ws/btcusdt%40depth%40100ms") as ws:
            assert (await receive(ws))["e"] == "depthUpdate"


async def test_pacing() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=100, clock=None) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@depth@100ms")) as ws:
            start = trio.current_time()
            await collect(ws, 20)
            assert 0.15 < trio.current_time() - start < 1.0


async def test_max_messages_stops_data_but_not_control() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=None, max_messages=7) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@depth@100ms")) as ws:
            assert len(await collect(ws, 7)) == 7
            assert await silent_for(ws, 0.1) == []
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) \
                == {"result": ["btcusdt@depth@100ms"], "id": 1}
            assert exchange.statistics().messages_sent == 7


async def test_a_client_that_answers_pings_stays() -> None:
    with trio.fail_after(10):
        async with open_exchange(ping_interval=0.05, pong_timeout=0.1) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@trade")) as ws:
            assert len(await silent_for(ws, 0.3)) > 50  # reading, so pongs go out
            assert not ws.closed
            await reply_to(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})
            stats = exchange.statistics()
            assert stats.pings_sent >= 3 and stats.pongs_missed == 0


async def test_a_client_that_never_pongs_is_dropped() -> None:
    with trio.fail_after(10):
        async with open_exchange(ping_interval=0.05, pong_timeout=0.1) as exchange:
            stream = await upgrade(exchange.port, "/ws")
            received = b""
            while chunk := await stream.receive_some():
                received += chunk
            head, _, frames = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            opcodes = []
            while frames:
                length = frames[1] & 0x7F
                opcodes.append(frames[0] & 0x0F)
                payload, frames = frames[2:2 + length], frames[2 + length:]
            assert opcodes[0] == 0x9 and opcodes[-1] == 0x8  # pings, then one close
            assert payload == (1008).to_bytes(2, "big") + b"pong timeout"
            await stream.aclose()
            await exchange.wait_all_closed()
            assert exchange.statistics().pongs_missed == 1


async def test_wss_with_a_trusted_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(10):
        async with open_exchange(ssl_context=server_context, rate=None) as exchange:
            assert exchange.base_url.startswith("wss://127.0.0.1:")
            url = exchange.combined_url(["btcusdt@bookTicker"])
            async with open_websocket_url(url, ssl_context=client_context) as ws:
                message = await receive(ws)
                assert message["stream"] == "btcusdt@bookTicker"
                assert list(message["data"]) == ["u", "s", "b", "B", "a", "A"]


async def test_disconnects_are_quiet_and_counted(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(10):
        # The simulated clock: ten 100 ms depth updates take ten ticks, not a second.
        async with open_exchange(rate=None, clock=None) as exchange:
            for _ in range(3):
                async with open_websocket_url(exchange.raw_url("btcusdt@depth@100ms")) as ws:
                    await collect(ws, 10)
            stream = await trio.open_tcp_stream("127.0.0.1", exchange.port)
            await stream.aclose()
            stream = await upgrade(exchange.port, "/ws/btcusdt@trade")
            await stream.receive_some()
            await stream.aclose()  # mid-stream, without a Close frame
            await exchange.wait_all_closed()
            stats = exchange.statistics()
            assert isinstance(stats, ExchangeStatistics)
            assert stats.connections_accepted == 4 and stats.messages_sent >= 30
    assert capsys.readouterr() == ("", "")


async def test_leaving_closes_clients_and_leaves_no_task() -> None:
    before = task_count()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with open_exchange(rate=None) as exchange:
                ws = await nursery.start(_hold, f"{exchange.base_url}/ws")
                assert await reply_to(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})
                assert task_count() > before + 3
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason is not None and closed.value.reason.code == 1001
            nursery.cancel_scope.cancel()
    assert task_count() == before


async def _hold(url: str, *, task_status: trio.TaskStatus[WebSocketConnection]) -> None:
    async with open_websocket_url(url) as ws:
        task_status.started(ws)
        await trio.sleep_forever()


async def test_errors_in_the_body_are_not_wrapped() -> None:
    with pytest.raises(KeyError):
        async with open_exchange():
            raise KeyError("mine")


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        open_exchange(rate=-1)
    with pytest.raises(ValueError):
        open_exchange(pong_timeout=0)
    with pytest.raises(ValueError):
        open_exchange(symbols=["BTCUSDT"])
    assert Market(symbols=["btcusdt"]).symbols == ("btcusdt",)


# -- the clock and the ids ------------------------------------------------------------------


async def test_events_carry_the_wall_clock_by_default() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=200) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@aggTrade")) as ws:
            events = await collect(ws, 20)
            now_ms = time.time() * 1000
    assert all(abs(now_ms - e["E"]) < 5000 for e in events)
    assert all(e["T"] <= e["E"] for e in events)


async def test_a_pinned_clock_is_still_the_simulated_one() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=None, clock=None) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@depth@100ms")) as ws:
            events = await collect(ws, 3)
    assert [e["E"] for e in events] == [EPOCH_MS + k * TICK_MS for k in (1, 2, 3)]
    assert events[0]["U"] == 1_000_001  # the fixed first ids


async def test_a_custom_clock_stamps_events() -> None:
    with trio.fail_after(10):
        async with open_exchange(rate=None, clock=lambda: 1_800_000_000_000) as exchange, \
                open_websocket_url(exchange.raw_url("btcusdt@trade")) as ws:
            events = await collect(ws, 5)
    assert {e["E"] for e in events} == {1_800_000_000_000}
    assert events[0]["t"] == 1_800_000_000_000 * 1000 + 5_000_000


async def test_a_feed_on_the_embedded_exchange_sees_no_lag(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_feed")
    with trio.fail_after(10):
        async with open_exchange(rate=200) as exchange, \
                open_feed(["btcusdt@trade"], base_url=exchange.base_url) as feed:
            async for _ in feed:
                if feed.statistics().messages >= 50:
                    break
            stats = feed.statistics()
    assert stats.lag_p99 is not None and stats.lag_p99 < 5000
    assert stats.lagging == 0
    assert not [r for r in caplog.records if "exchange lag" in r.getMessage()]


async def test_a_restarted_exchange_continues_its_ids_forward() -> None:
    streams = ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@depth@100ms"]
    last: dict[str, int] = {}
    with trio.fail_after(10):
        for run in range(2):
            async with open_exchange(rate=None) as exchange, \
                    open_websocket_url(exchange.combined_url(streams)) as ws:
                got: dict[str, list[int]] = {name: [] for name in streams}
                while not all(got.values()):
                    message = await receive(ws)
                    data = message["data"]
                    got[message["stream"]].append(data.get("t", data.get("a", data.get("U"))))
                    if "u" in data:
                        got[message["stream"]][-1] = data["U"]
            firsts = {name: ids[0] for name, ids in got.items()}
            if run:
                assert all(firsts[name] > last[name] for name in streams)
            last = {name: max(ids) for name, ids in got.items()}
            await trio.sleep(0.002)  # a later start, by the wall clock
