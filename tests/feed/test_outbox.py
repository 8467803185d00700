"""Outbox: batches between connection tasks and the consumer, under a slow-consumer policy.

The rule checked throughout: every message put is, in the end, taken, dropped,
conflated, or counted by close().
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_feed import SlowConsumerError
from trio_feed.feed._outbox import (
    DEFAULT_MAX_BACKLOG_BYTES,
    DEFAULT_MAX_QUEUED,
    Outbox,
    SlowConsumerPolicy,
)

P = SlowConsumerPolicy


def _key(message: Any) -> object:
    return message[0]


def _drain(box: Outbox) -> list[list[Any]]:
    batches = []
    while True:
        try:
            batches.append(box.take_nowait()[0])
        except trio.WouldBlock:
            return batches


# -- basics ------------------------------------------------------------------------------


def test_constructor_validation_and_defaults() -> None:
    with pytest.raises(ValueError):
        Outbox(max_queued=0)
    with pytest.raises(ValueError):
        Outbox(policy=P.KEEP_LATEST)
    box = Outbox()
    assert box.policy is P.BLOCK
    assert box.max_queued == DEFAULT_MAX_QUEUED == 65_536
    assert box.max_backlog_bytes == DEFAULT_MAX_BACKLOG_BYTES == 64 * 1024 * 1024
    assert {p.value for p in P} == {"block", "drop_newest", "keep_latest", "disconnect"}


async def test_fifo_batches_with_received_time() -> None:
    with trio.fail_after(5):
        box = Outbox(max_queued=10)
        with pytest.raises(trio.WouldBlock):
            box.take_nowait()
        assert box.put([1, 2], 20, received=1.5)
        assert box.put([], 0)  # an empty batch is a no-op
        assert box.put([3], 10, received=2.5)
        assert (box.queued, box.queued_bytes, box.put_messages) == (3, 30, 3)
        assert box.take_nowait() == ([1, 2], 1.5)
        assert (box.queued, box.queued_bytes) == (1, 10)
        assert await box.take() == ([3], 2.5)
        assert (box.queued, box.queued_bytes, box.taken, box.peak_queued) == (0, 0, 3, 3)
        with pytest.raises(trio.WouldBlock):
            box.take_nowait()


async def test_take_waits_for_a_put(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        box = Outbox()
        got: list[Any] = []

        async def consumer() -> None:
            got.append(await box.take())
            got.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.sleep(2)
            assert got == []
            box.put(["m"], 1, received=9.0)
        assert got == [(["m"], 9.0), 2.0]


async def test_oversized_batch_into_empty_outbox_is_accepted_under_every_policy() -> None:
    for policy in P:
        box = Outbox(policy=policy, max_queued=2, key=_key)
        assert box.put([(i, i) for i in range(5)], 50)
        assert (box.queued, box.dropped, box.conflated, box.peak_queued) == (5, 0, 0, 5)
        assert box.take_nowait()[0] == [(i, i) for i in range(5)]


# -- block ---------------------------------------------------------------------------------


async def test_block_keeps_accepting_and_measures_stalls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        box = Outbox(policy=P.BLOCK, max_queued=4)
        assert box.put([1, 2, 3], 3)
        assert box.stalls == 0 and box.stall_time() == 0.0
        assert box.put([4, 5], 2)  # over max_queued: a stall begins
        assert box.put([6], 1)  # same stall
        assert (box.stalls, box.queued, box.dropped, box.peak_queued) == (1, 6, 0, 6)
        await trio.sleep(3)
        assert box.stall_time() == pytest.approx(3.0)
        assert box.take_nowait()[0] == [1, 2, 3]  # 3 queued <= 4: the stall ends
        assert box.stall_seconds == pytest.approx(3.0)
        await trio.sleep(10)
        assert box.stall_time() == pytest.approx(3.0)
        assert box.put([7, 8, 9], 3)  # 6 > 4: second stall
        assert box.stalls == 2
        await trio.sleep(2)
        assert box.stall_time() == pytest.approx(5.0)
        # Taking [4, 5] leaves 4 queued (<= max_queued): the stall ends.
        assert box.take_nowait()[0] == [4, 5]
        await trio.sleep(1)
        assert box.stall_seconds == pytest.approx(5.0)
        assert box.stall_time() == pytest.approx(5.0)
        assert [m for b in _drain(box) for m in b] == [6, 7, 8, 9]
        assert box.dropped == 0


async def test_block_backlog_full_refuses_then_wait_space(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        box = Outbox(policy=P.BLOCK, max_queued=2, max_backlog_bytes=100)
        assert box.put([1, 2], 60)
        assert box.put([3], 30)  # backlog 90 <= 100
        assert box.put([4], 20) is False  # 110 > 100: refused, nothing changed
        assert (box.queued, box.queued_bytes, box.put_messages, box.dropped) == (3, 90, 3, 0)
        assert box.put([4], 20, force=True)  # forced through
        assert (box.queued, box.queued_bytes) == (4, 110)
        assert box.put([5], 1) is False

        async def consumer() -> None:
            await trio.sleep(4)
            box.take_nowait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await box.wait_space()
            assert trio.current_time() == pytest.approx(4.0)
        assert box.blocked_seconds == pytest.approx(4.0)
        assert box.put([5], 1)
        assert [m for b in _drain(box) for m in b] == [3, 4, 5]


async def test_close_wakes_wait_space_and_take(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        box = Outbox(policy=P.BLOCK, max_queued=1, max_backlog_bytes=1)
        box.put([1], 1)
        box.put([2], 1, force=True)
        assert box.put([3], 1) is False
        done = []

        async def waiter() -> None:
            await box.wait_space()
            done.append("space")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(1)
            assert box.close() == 2
        assert done == ["space"]
        assert box.put([3], 1) is True  # after close: counted as dropped
        assert box.dropped == 1

        box2 = Outbox()
        got: list[BaseException] = []

        async def taker() -> None:
            try:
                await box2.take()
            except trio.EndOfChannel as exc:
                got.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(taker)
            await trio.sleep(1)
            assert box2.close() == 0
        assert len(got) == 1


# -- drop_newest ---------------------------------------------------------------------------


async def test_drop_newest_keeps_oldest_and_counts() -> None:
    box = Outbox(policy=P.DROP_NEWEST, max_queued=5)
    assert box.put([1, 2, 3], 30)
    assert box.put([4, 5, 6, 7], 40)  # room for 2: 4, 5 kept, 6, 7 dropped
    assert (box.queued, box.dropped, box.queued_bytes) == (5, 2, 50)
    assert box.put([8], 10)  # no room at all
    assert box.dropped == 3
    assert _drain(box) == [[1, 2, 3], [4, 5]]
    assert box.queued_bytes == 0
    assert box.put([9], 10)
    assert _drain(box) == [[9]]
    assert (box.taken, box.dropped, box.peak_queued, box.stalls) == (6, 3, 5, 0)


# -- keep_latest ---------------------------------------------------------------------------


async def test_keep_latest_conflates_per_stream() -> None:
    box = Outbox(policy=P.KEEP_LATEST, max_queued=2, key=_key)
    assert box.put([("a", 1), ("b", 1)])
    assert box.put([("a", 2), ("b", 2), ("a", 3), ("c", 1), ("a", 4)])
    # ("a", 2) and ("a", 3) were replaced by ("a", 4).
    assert (box.queued, box.conflated, box.dropped) == (5, 2, 0)
    batches = _drain(box)
    assert batches[0] == [("a", 1), ("b", 1)]
    assert sorted(batches[1]) == [("a", 4), ("b", 2), ("c", 1)]
    assert len(batches) == 2
    assert (box.queued, box.taken, box.put_messages) == (0, 5, 7)


async def test_keep_latest_received_time_of_conflated_batch() -> None:
    box = Outbox(policy=P.KEEP_LATEST, max_queued=1, key=_key)
    box.put([("a", 1)], received=1.0)
    box.put([("a", 2)], received=2.0)
    box.put([("a", 3)], received=3.0)
    assert box.take_nowait() == ([("a", 1)], 1.0)
    assert box.take_nowait() == ([("a", 3)], 3.0)
    assert box.conflated == 1


async def test_keep_latest_preserves_order_within_a_stream() -> None:
    """A stream's messages must reach the consumer oldest first: conflation may
    skip a message, never hand out an older snapshot after a newer one."""
    box = Outbox(policy=P.KEEP_LATEST, max_queued=2, key=_key)
    box.put([("a", 1), ("a", 2)])
    box.put([("a", 3)])  # does not fit: pending as the latest of "a"
    assert box.take_nowait()[0] == [("a", 1), ("a", 2)]
    box.put([("a", 4)])  # fits again (1 queued + 1 <= 2)
    seen = [m for b in _drain(box) for m in b]
    assert seen in ([("a", 3), ("a", 4)], [("a", 4)]), f"stream 'a' delivered {seen}"


# -- disconnect and fail -------------------------------------------------------------------


async def test_disconnect_queued_then_slow_consumer_error() -> None:
    with trio.fail_after(5):
        box = Outbox(policy=P.DISCONNECT, max_queued=3)
        calls = []
        box.on_overflow = lambda: calls.append(1)
        assert box.put([1, 2], 2)
        assert box.put([3, 4, 5], 3)  # room for one: 3 queued, 4 and 5 dropped
        assert calls == [1]
        assert (box.queued, box.dropped) == (3, 2)
        assert box.put([6, 7], 2)  # after the policy fired: dropped
        assert box.dropped == 4
        assert calls == [1]  # fires once
        assert box.take_nowait()[0] == [1, 2]
        assert (await box.take())[0] == [3]
        with pytest.raises(SlowConsumerError):
            box.take_nowait()
        with pytest.raises(SlowConsumerError):  # and again: the feed is over
            await box.take()
        assert box.taken + box.dropped == 7


async def test_fail_raises_after_queued_batches(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        box = Outbox(max_queued=10)

        class Boom(Exception):
            pass

        first = Boom("first")
        box.put([1], 1)
        box.put([2, 3], 2)
        box.fail(first)
        box.fail(Boom("second"))  # the first error wins
        assert box.put([4], 1)  # dropped: the feed is ending
        assert box.dropped == 1
        assert box.take_nowait()[0] == [1]
        assert (await box.take())[0] == [2, 3]
        with pytest.raises(Boom) as info:
            await box.take()
        assert info.value is first
        assert box.close() == 0

        # fail() wakes a consumer already waiting.
        box2 = Outbox()
        caught: list[BaseException] = []

        async def consumer() -> None:
            try:
                await box2.take()
            except Boom as exc:
                caught.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.sleep(1)
            box2.fail(first)
        assert caught == [first]


async def test_close_returns_queued_count_including_conflated_pending() -> None:
    box = Outbox(policy=P.KEEP_LATEST, max_queued=2, key=_key)
    box.put([("a", 1), ("b", 1)], 10)
    box.put([("a", 2), ("c", 1), ("a", 3)], 10)
    assert box.close() == 4  # 2 queued + ("a", 3) and ("c", 1) pending
    assert (box.queued, box.queued_bytes) == (0, 0)
    with pytest.raises(trio.EndOfChannel):
        box.take_nowait()
    assert box.put([("a", 9)]) is True
    assert box.dropped == 1


# -- the rule, for every policy --------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 9), st.integers(0, 40), st.booleans()),
        st.tuples(st.just("take"), st.just(0), st.just(0), st.just(False)),
    ),
    max_size=40,
)


@pytest.mark.parametrize("policy", list(P))
@given(ops=_OPS, max_queued=st.integers(1, 12), fail_at=st.one_of(st.none(), st.integers(0, 40)))
@settings(max_examples=50, deadline=None)
async def test_property_every_message_accounted_for(
    policy: SlowConsumerPolicy,
    ops: list[tuple[str, int, int, bool]],
    max_queued: int,
    fail_at: int | None,
) -> None:
    class Failed(Exception):
        pass

    box = Outbox(policy=policy, max_queued=max_queued, max_backlog_bytes=60, key=_key)
    counter = itertools.count()
    accepted = 0
    taken: list[Any] = []
    error: BaseException | None = None
    for step, (op, n, nbytes, force) in enumerate(ops):
        if step == fail_at:
            box.fail(Failed())
        if op == "put":
            batch = [(i % 3, next(counter)) for i in range(n)]  # (stream, seq)
            if box.put(batch, nbytes, force=force):
                accepted += n
            else:
                assert policy is P.BLOCK and not force
        else:
            try:
                taken.extend(box.take_nowait()[0])
            except trio.WouldBlock:
                assert box.queued == 0
            except (SlowConsumerError, Failed) as exc:
                assert box.queued == 0  # the error comes after every queued batch
                error = exc
        assert box.queued == accepted - box.taken - box.dropped - box.conflated
        assert box.queued <= box.peak_queued
    # The consumer drains, then the feed closes.
    while True:
        try:
            taken.extend(box.take_nowait()[0])
        except trio.WouldBlock:
            break
        except (SlowConsumerError, Failed) as exc:
            error = exc
            break
    assert box.queued == 0
    lost = box.close()
    assert lost == 0
    # The rule: taken + dropped + conflated + close() == every message put.
    assert box.taken == len(taken)
    assert accepted == box.taken + box.dropped + box.conflated + lost
    assert len(set(taken)) == len(taken)
    if policy is not P.KEEP_LATEST:
        assert box.conflated == 0
        assert taken == sorted(taken, key=lambda m: m[1])  # FIFO
    if policy is P.BLOCK or policy is P.KEEP_LATEST:
        if fail_at is None or fail_at >= len(ops):
            assert box.dropped == 0
    if policy is P.DISCONNECT and box.dropped and (fail_at is None or fail_at >= len(ops)):
        assert isinstance(error, SlowConsumerError)
    if isinstance(error, Failed):
        assert fail_at is not None and fail_at < len(ops)


@pytest.mark.parametrize("policy", list(P))
@given(sizes=st.lists(st.integers(1, 9), max_size=30), max_queued=st.integers(1, 12))
@settings(max_examples=30, deadline=None)
async def test_property_close_counts_what_is_left(
    policy: SlowConsumerPolicy, sizes: list[int], max_queued: int
) -> None:
    """Nothing taken at all: close() returns exactly what was neither dropped nor conflated."""
    box = Outbox(policy=policy, max_queued=max_queued, key=_key)
    counter = itertools.count()
    for n in sizes:
        assert box.put([(i % 4, next(counter)) for i in range(n)], n)
    queued = box.queued
    assert box.close() == queued == sum(sizes) - box.dropped - box.conflated
    assert box.queued == 0
