"""The local exchange's REST endpoint over real HTTP/1.1, and its fault hooks."""

from __future__ import annotations

import h11
import orjson
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from trio_feed.binance import parse_stream
from trio_feed.exchange import Market, open_exchange
from trio_feed.exchange._rest import Faults, RestEndpoint, _Counters, depth_weight, split_session

Response = tuple[int, dict[str, str], bytes]


async def http(port: int, *targets: str, method: str = "GET") -> list[Response]:
    """GET each target in turn on one keep-alive connection (the last asks to close)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    responses: list[Response] = []
    async with stream:
        for index, target in enumerate(targets):
            headers = [("Host", "x")]
            if index == len(targets) - 1:
                headers.append(("Connection", "close"))
            body = b"hi" if method == "POST" else b""
            if body:
                headers.append(("Content-Length", str(len(body))))
            await stream.send_all(conn.send(h11.Request(method=method, target=target,
                                                        headers=headers)))
            if body:
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            status, received, data = 0, {}, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    received = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    data += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            responses.append((status, received, data))
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
    return responses


def test_split_session() -> None:
    assert split_session("/s/abc/stream?streams=a") == ("abc", "/stream?streams=a")
    assert split_session("/s/a-b_9") == ("a-b_9", "/")
    assert split_session("/stream?streams=a") == ("", "/stream?streams=a")
    assert split_session("/s/bad name/ws") == ("", "/s/bad name/ws")
    assert split_session("/ws/btcusdt@trade?x=/s/a/") == ("", "/ws/btcusdt@trade?x=/s/a/")


def test_depth_weight_table() -> None:
    assert [depth_weight(n) for n in (1, 100, 101, 500, 501, 1000, 1001, 5000, 9999)] == [
        5, 5, 25, 25, 50, 50, 250, 250, 250]


async def test_depth_answers_the_connection_book_with_weights() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=4, rate=None, max_messages=3, clock=None) as exchange:
            port = exchange.rest.port
            (status, _, body), = await http(port, "/api/v3/depth?symbol=BTCUSDT")
            assert status == 503 and b"no stream connection" in body
            async with open_websocket_url(exchange.raw_url("btcusdt@depth@100ms")) as ws:
                events = [orjson.loads(await ws.get_message()) for _ in range(3)]
                responses = await http(port, "/api/v3/depth?symbol=BTCUSDT&limit=5",
                                       "/api/v3/depth?symbol=btcusdt&limit=6000",
                                       "/api/v3/ping")
            (s1, h1, b1), (s2, h2, b2), (s3, h3, b3) = responses
            assert (s1, s2, s3) == (200, 200, 200) and b3 == b"{}"
            used = [int(h["x-mbx-used-weight-1m"]) for h in (h1, h2, h3)]
            # 5, +250 (limit capped at 5000), +1; a new minute may restart the count.
            assert used[0] == 5
            assert used[1] in (used[0] + 250, 250) and used[2] in (used[1] + 1, 1)
            snap1, snap2 = orjson.loads(b1), orjson.loads(b2)
            market = Market(4, exchange.symbols)
            for _ in range(3):
                market.step()
            assert snap1 == market.depth_snapshot("btcusdt", 5)
            assert snap2 == market.depth_snapshot("btcusdt", 5000)
            assert snap1["lastUpdateId"] == events[-1]["u"]
            assert exchange.rest.statistics().snapshots == 2


async def test_errors_are_json_with_binance_codes() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=4, rate=None, max_messages=1) as exchange:
            async with open_websocket_url(exchange.raw_url("btcusdt@trade")) as ws:
                await ws.get_message()
                responses = await http(
                    exchange.rest.port, "/api/v3/depth", "/api/v3/depth?symbol=NOPE",
                    "/api/v3/depth?symbol=BTCUSDT&limit=-1",
                    "/api/v3/depth?symbol=BTCUSDT&limit=x", "/api/v3/ticker/24hr",
                    "/s/other/api/v3/depth?symbol=BTCUSDT")
                responses += await http(exchange.rest.port, "/api/v3/depth", method="POST")
    codes = [(status, orjson.loads(body).get("code")) for status, _, body in responses]
    assert codes == [(400, -1102), (400, -1121), (400, -1100), (400, -1100), (404, -1),
                     (503, -1), (405, -1)]


async def test_unknown_symbol_is_refused_before_any_connection_opens() -> None:
    with trio.fail_after(10):
        async with open_exchange(symbols=["btcusdt"]) as exchange:
            responses = await http(exchange.rest.port, "/api/v3/depth?symbol=XYZUSDT",
                                   "/api/v3/depth?symbol=ethusdt", "/api/v3/depth?symbol=BTCUSDT")
    assert [(status, orjson.loads(body)) for status, _, body in responses[:2]] == [
        (400, {"code": -1121, "msg": "Invalid symbol."})] * 2
    assert responses[2][0] == 503  # a listed symbol, but no connection's market to read


async def test_malformed_request_gets_400_and_close() -> None:
    with trio.fail_after(10):
        async with open_exchange() as exchange:
            stream = await trio.open_tcp_stream("127.0.0.1", exchange.rest.port)
            async with stream:
                await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 400 ")


async def test_weight_limit_gives_429_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    endpoint = RestEndpoint("127.0.0.1", weight_limit=300)
    market = Market(1, ["btcusdt"])
    endpoint.register("", market)
    with trio.fail_after(120):
        await trio.sleep(10)  # 10 s into the first minute of the mock clock

        def request(target: str) -> h11.Request:
            return h11.Request(method="GET", target=target, headers=[("Host", "x")])

        status, _, _ = endpoint.respond(request("/api/v3/depth?symbol=BTCUSDT&limit=5000"))
        assert status == 200
        status, headers, body = endpoint.respond(
            request("/api/v3/depth?symbol=BTCUSDT&limit=5000"))
        assert status == 429 and orjson.loads(body)["code"] == -1003
        header = dict(headers)
        assert header[b"retry-after"] == b"50" and header[b"x-mbx-used-weight-1m"] == b"250"
        status, _, _ = endpoint.respond(request("/api/v3/depth?symbol=BTCUSDT&limit=100"))
        assert status == 200  # 255 still fits
        await trio.sleep(50)  # the next minute
        status, headers, _ = endpoint.respond(request("/api/v3/depth?symbol=BTCUSDT&limit=5000"))
        assert status == 200 and dict(headers)[b"x-mbx-used-weight-1m"] == b"250"
        stats = endpoint.statistics()
        assert stats.rate_limited == 1 and stats.snapshots == 3 and stats.requests == 4


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def test_faults_drop_and_reorder_on_the_send_path() -> None:
    market = Market(2, ["btcusdt"])
    faults = Faults(lambda session: market, _Counters())
    depth = parse_stream("btcusdt@depth@100ms")
    trade = parse_stream("btcusdt@trade")
    assert not faults.armed
    faults.drop_depth("BTCUSDT", 2, session="a")
    assert faults.armed
    assert faults.filter("", depth, [b"e1"]) == [b"e1"]  # another session
    assert faults.filter("a", trade, [b"t1"]) == [b"t1"]  # not a depth stream
    assert faults.filter("a", depth, [b"e1"]) == []
    assert faults.filter("a", depth, [b"e2"]) == []
    assert faults.filter("a", depth, [b"e3"]) == [b"e3"] and not faults.armed
    faults.reorder_depth("btcusdt", session="a")
    assert faults.filter("a", depth, [b"e4"]) == []
    assert faults.filter("a", depth, [b"e5"]) == [b"e5", b"e4"] and not faults.armed
    # Ticks that emit no event of the stream (its cadence is slower than the
    # ticks) neither take the held event nor release it.
    faults.reorder_depth("btcusdt", session="a")
    assert faults.filter("a", depth, []) == []
    assert faults.filter("a", depth, [b"e6"]) == []
    assert faults.filter("a", depth, []) == [] and faults.armed
    assert faults.filter("a", depth, [b"e7"]) == [b"e7", b"e6"] and not faults.armed
    with pytest.raises(ValueError):
        faults.drop_depth("btcusdt", 0)


def test_stale_snapshot_is_captured_when_armed() -> None:
    market = Market(3, ["btcusdt"])
    counters = _Counters()
    faults = Faults(lambda session: market if session == "" else None, counters)
    with pytest.raises(LookupError):
        faults.stale_snapshot("btcusdt", session="x")
    faults.stale_snapshot("btcusdt")
    captured = market.depth_snapshot("btcusdt", 5000)
    market.step()
    assert faults.take_stale("", "BTCUSDT") == captured
    assert faults.take_stale("", "BTCUSDT") is None and counters.stale_served == 1


async def test_session_urls_route_to_their_own_connection() -> None:
    with trio.fail_after(10):
        async with open_exchange(seed=5, rate=None, max_messages=2) as exchange:
            with pytest.raises(ValueError):
                exchange.session_urls("no spaces")
            base_a, rest_a = exchange.session_urls("a")
            assert base_a == f"{exchange.base_url}/s/a"
            assert rest_a == f"{exchange.rest_url}/s/a"
            url = f"{base_a}/ws/btcusdt@depth@100ms"
            async with open_websocket_url(url) as ws:
                last = [orjson.loads(await ws.get_message()) for _ in range(2)][-1]
                (status, _, body), = await http(exchange.rest.port,
                                                "/s/a/api/v3/depth?symbol=BTCUSDT&limit=1")
                assert status == 200 and orjson.loads(body)["lastUpdateId"] == last["u"]
                (status, _, _), = await http(exchange.rest.port, "/api/v3/depth?symbol=BTCUSDT")
                assert status == 503  # the default session has no connection
