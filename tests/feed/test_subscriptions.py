"""Subscriptions (shards of at most per_connection streams) and Requests (ids, batches, replies)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_feed import InvalidStreamName, SubscriptionError
from trio_feed.binance import ControlError, ControlResponse, Stream, parse_stream
from trio_feed.feed._subscriptions import (
    MAX_PARAMS_PER_REQUEST,
    MAX_STREAMS_PER_CONNECTION,
    Requests,
    Subscriptions,
)


def _names(n: int, kind: str = "trade") -> list[str]:
    return [f"sym{i}usdt@{kind}" for i in range(n)]


def _snapshot(subs: Subscriptions) -> list[list[str]]:
    return [list(shard) for shard in subs.shards]


# -- Subscriptions ---------------------------------------------------------------------


def test_limits() -> None:
    assert MAX_STREAMS_PER_CONNECTION == 1024
    assert Subscriptions().per_connection == 1024


@pytest.mark.parametrize("bad", [0, -1, 1025])
def test_per_connection_validated(bad: int) -> None:
    with pytest.raises(ValueError):
        Subscriptions(bad)


def test_add_returns_new_streams_by_shard() -> None:
    subs = Subscriptions()
    placed = subs.add(["btcusdt@trade", "ethusdt@depth@100ms", "btcusdt@kline_1m"])
    assert list(placed) == [0]
    assert [s.name for s in placed[0]] == [
        "btcusdt@trade",
        "ethusdt@depth@100ms",
        "btcusdt@kline_1m",
    ]
    assert all(isinstance(s, Stream) for s in placed[0])
    assert placed[0][1] == parse_stream("ethusdt@depth@100ms")
    assert list(subs.streams) == ["btcusdt@trade", "ethusdt@depth@100ms", "btcusdt@kline_1m"]
    assert subs.streams["btcusdt@kline_1m"].kind == "kline"
    assert subs.shard_of("btcusdt@trade") == 0
    assert subs.shard_of("xrpusdt@trade") is None


def test_1500_streams_make_two_shards_1024_and_476() -> None:
    subs = Subscriptions()
    names = _names(1500)
    placed = subs.add(names)
    assert sorted(placed) == [0, 1]
    assert [len(placed[0]), len(placed[1])] == [1024, 476]
    assert [len(shard) for shard in subs.shards] == [1024, 476]
    # In order: the first 1024 names on shard 0, the rest on shard 1.
    assert [s.name for s in placed[0]] == names[:1024]
    assert [s.name for s in placed[1]] == names[1024:]
    assert subs.shard_of(names[1023]) == 0
    assert subs.shard_of(names[1024]) == 1
    assert len(subs.streams) == 1500


def test_small_shards_fill_in_order() -> None:
    subs = Subscriptions(per_connection=3)
    placed = subs.add(_names(7))
    assert {k: [s.name for s in v] for k, v in placed.items()} == {
        0: _names(7)[0:3],
        1: _names(7)[3:6],
        2: _names(7)[6:7],
    }
    # A later add fills the last shard first, then opens a new one.
    placed = subs.add(_names(10)[7:10])
    assert {k: [s.name for s in v] for k, v in placed.items()} == {
        2: _names(10)[7:9],
        3: _names(10)[9:10],
    }
    assert [len(s) for s in subs.shards] == [3, 3, 3, 1]


def test_duplicates_ignored_across_and_within_calls() -> None:
    subs = Subscriptions(per_connection=2)
    subs.add(["btcusdt@trade"])
    placed = subs.add(
        [
            "btcusdt@trade",
            "ethusdt@trade",
            "ethusdt@trade",
            parse_stream("btcusdt@trade"),
            parse_stream("ethusdt@trade"),
        ]
    )
    assert {k: [s.name for s in v] for k, v in placed.items()} == {0: ["ethusdt@trade"]}
    assert _snapshot(subs) == [["btcusdt@trade", "ethusdt@trade"]]
    assert subs.add(["btcusdt@trade", "ethusdt@trade"]) == {}
    assert len(subs.shards) == 1


def test_add_accepts_stream_objects() -> None:
    subs = Subscriptions()
    stream = parse_stream("btcusdt@bookTicker")
    placed = subs.add([stream])
    assert placed == {0: [stream]}


@pytest.mark.parametrize("bad", ["BTCUSDT@trade", "btcusdt@bogus", "nosep", "btcusdt@kline_7x"])
def test_invalid_name_raises_before_changing_anything(bad: str) -> None:
    subs = Subscriptions(per_connection=2)
    subs.add(["aaausdt@trade"])
    before = _snapshot(subs)
    with pytest.raises(InvalidStreamName):
        # Valid names first, invalid last: none of them may be added.
        subs.add(["bbbusdt@trade", "cccusdt@trade", "dddusdt@trade", bad])
    assert _snapshot(subs) == before
    assert len(subs.shards) == 1


def test_invalid_name_on_empty_subscriptions_leaves_no_shard() -> None:
    subs = Subscriptions()
    with pytest.raises(InvalidStreamName):
        subs.add(["btcusdt@trade", "Bad@trade"])
    assert subs.shards == []
    assert subs.streams == {}


def test_remove_returns_removed_by_shard_and_ignores_unknown() -> None:
    subs = Subscriptions(per_connection=2)
    subs.add(_names(5))
    removed = subs.remove(
        [_names(5)[0], _names(5)[3], "unknownusdt@trade", parse_stream(_names(5)[4])]
    )
    assert {k: [s.name for s in v] for k, v in removed.items()} == {
        0: [_names(5)[0]],
        1: [_names(5)[3]],
        2: [_names(5)[4]],
    }
    assert subs.shard_of(_names(5)[0]) is None
    assert sorted(subs.streams) == sorted([_names(5)[1], _names(5)[2]])
    assert subs.remove(["unknownusdt@trade"]) == {}


def test_remove_then_add_fills_first_shard_with_room_without_moving_others() -> None:
    subs = Subscriptions(per_connection=2)
    subs.add(_names(6))  # shards: [0,1] [2,3] [4,5]
    subs.remove([_names(6)[2]])  # shard 1 has room
    placed = subs.add(["newusdt@trade", "new2usdt@trade"])
    assert {k: [s.name for s in v] for k, v in placed.items()} == {
        1: ["newusdt@trade"],
        3: ["new2usdt@trade"],
    }
    # Shards are never rebalanced: the old streams stayed where they were.
    for i, name in enumerate(_names(6)):
        if i != 2:
            assert subs.shard_of(name) == i // 2


def test_remove_invalid_name_raises() -> None:
    subs = Subscriptions()
    subs.add(["btcusdt@trade"])
    with pytest.raises(InvalidStreamName):
        subs.remove(["BTCUSDT@trade"])


@given(
    ops=st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 40), max_size=12)), max_size=30),
    per=st.integers(1, 7),
)
@settings(max_examples=60, deadline=None)
def test_property_every_stream_on_exactly_one_shard_never_moved(
    ops: list[tuple[bool, list[int]]], per: int
) -> None:
    subs = Subscriptions(per_connection=per)
    desired: set[str] = set()
    home: dict[str, int] = {}
    for is_add, idx in ops:
        names = [f"s{i}usdt@trade" for i in idx]
        if is_add:
            placed = subs.add(names)
            new = [n for n in dict.fromkeys(names) if n not in desired]
            assert sorted(s.name for v in placed.values() for s in v) == sorted(new)
            for shard, streams in placed.items():
                for s in streams:
                    home[s.name] = shard
            desired.update(names)
        else:
            removed = subs.remove(names)
            gone = [n for n in dict.fromkeys(names) if n in desired]
            assert sorted(s.name for v in removed.values() for s in v) == sorted(gone)
            for shard, streams in removed.items():
                for s in streams:
                    assert home.pop(s.name) == shard
            desired.difference_update(names)
        seen: list[str] = [n for shard in subs.shards for n in shard]
        assert len(seen) == len(set(seen)) == len(desired)
        assert set(seen) == desired
        assert all(len(shard) <= per for shard in subs.shards)
        for name, shard in home.items():
            assert subs.shard_of(name) == shard


# -- Requests --------------------------------------------------------------------------


def test_encode_numbers_requests_from_one() -> None:
    req = Requests()
    ids = []
    for method in ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"):
        request_id, text = req.encode(
            method, ["btcusdt@trade"] if method != "LIST_SUBSCRIPTIONS" else []
        )
        ids.append(request_id)
        message = orjson.loads(text)
        assert message["id"] == request_id
        assert message["method"] == method
    assert ids == [1, 2, 3]
    assert list(req.pending) == [1, 2, 3]
    assert req.pending[1] == ("SUBSCRIBE", ["btcusdt@trade"])
    assert orjson.loads(req.encode("SUBSCRIBE", ["a@trade", "b@trade"])[1]) == {
        "method": "SUBSCRIBE",
        "params": ["a@trade", "b@trade"],
        "id": 4,
    }


def test_batches_split_at_max_params() -> None:
    assert MAX_PARAMS_PER_REQUEST == 200
    req = Requests()
    names = _names(450)
    batches = req.batches("SUBSCRIBE", names)
    assert [rid for rid, _ in batches] == [1, 2, 3]
    params = [orjson.loads(text)["params"] for _, text in batches]
    assert [len(p) for p in params] == [200, 200, 50]
    assert [n for p in params for n in p] == names
    assert all(orjson.loads(text)["method"] == "SUBSCRIBE" for _, text in batches)
    assert [req.pending[i][1] for i in (1, 2, 3)] == params


@pytest.mark.parametrize(
    ("n", "sizes"), [(0, []), (1, [1]), (200, [200]), (201, [200, 1]), (1024, [200] * 5 + [24])]
)
def test_batches_sizes(n: int, sizes: list[int]) -> None:
    batches = Requests().batches("UNSUBSCRIBE", _names(n))
    assert [len(orjson.loads(t)["params"]) for _, t in batches] == sizes


def test_answer_response_matches_and_clears_pending() -> None:
    req = Requests()
    req.encode("SUBSCRIBE", ["a@trade"])
    req.encode("SUBSCRIBE", ["b@trade"])
    assert req.answer(ControlResponse(id=2, result=None)) == (2, None)
    assert list(req.pending) == [1]
    assert req.answer(ControlResponse(id=1, result=[["x"]])) == (1, [["x"]])
    assert req.pending == {}
    # Answered twice: no longer pending.
    assert req.answer(ControlResponse(id=1, result=None)) == (None, None)


def test_answer_unknown_id_gives_none_and_keeps_pending() -> None:
    req = Requests()
    req.encode("SUBSCRIBE", ["a@trade"])
    assert req.answer(ControlResponse(id=99, result="r")) == (None, "r")
    assert req.answer(ControlResponse(id=None, result="r")) == (None, "r")
    assert list(req.pending) == [1]


def test_answer_error_with_id() -> None:
    req = Requests()
    req.encode("SUBSCRIBE", ["a@trade"])
    req.encode("SUBSCRIBE", ["b@trade"])
    request_id, result = req.answer(ControlError(code=2, msg="Invalid request", id=2))
    assert request_id == 2
    assert isinstance(result, SubscriptionError)
    assert (result.code, result.msg, result.request_id) == (2, "Invalid request", 2)
    assert list(req.pending) == [1]


def test_answer_error_without_id_matches_oldest_pending() -> None:
    req = Requests()
    for name in ("a@trade", "b@trade", "c@trade"):
        req.encode("SUBSCRIBE", [name])
    req.answer(ControlResponse(id=1, result=None))
    request_id, result = req.answer(ControlError(code=3, msg="bad", id=None))
    assert request_id == 2
    assert isinstance(result, SubscriptionError) and result.request_id == 2
    request_id, result = req.answer(ControlError(code=3, msg="bad"))
    assert request_id == 3
    assert req.pending == {}
    # Nothing pending: matched to nothing.
    request_id, result = req.answer(ControlError(code=3, msg="bad"))
    assert request_id is None
    assert isinstance(result, SubscriptionError) and result.request_id is None


def test_answer_error_with_unknown_id_does_not_steal_oldest() -> None:
    req = Requests()
    req.encode("SUBSCRIBE", ["a@trade"])
    request_id, result = req.answer(ControlError(code=1, msg="x", id=42))
    assert request_id is None
    assert isinstance(result, SubscriptionError)
    assert (result.code, result.msg) == (1, "x")
    assert list(req.pending) == [1]
