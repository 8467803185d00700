"""Faults in what the server says: every payload is delivered, refused or counted, in order.

Each test runs a feed against :mod:`payload_server` (the exact payloads the
test chooses, one receive chunk at a time, one script per connection) on
trio's autojump clock, in both modes, and ends with the fault matrix's
identity (:func:`~tests.faults.identity.assert_accounted`).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from trio_feed import DecodeError, ProtocolError, SubscriptionError, open_feed
from trio_feed.feed import Feed
from trio_feed.feed._continuity import RESET_THRESHOLD

from .identity import assert_accounted
from .payload_server import Script, book, start_payload_server, trade

T = "btcusdt@trade"
MODES = ["inline", "channel"]

#: Not UTF-8: a lone continuation byte inside the event.
BAD_UTF8 = b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"\x80"}}'
#: Not a Binance message, in two shapes: one the link's fast check takes for data
#: (the consumer decodes it in channel mode), one it does not.
NOT_JSON = b'{"stream":"btcusdt@trade","data":{"e":"trade",'
NOT_AN_EVENT = b"garbage, not JSON at all"
UNDECODABLE = {"cut_envelope": NOT_JSON, "not_json": NOT_AN_EVENT}


def ids_by_stream(events: Sequence[Any]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for event in events:
        found[event.stream].append(getattr(event, "trade_id", None) or event.update_id)
    return dict(found)


async def take(feed: Feed, n: int) -> list[Any]:
    got = []
    async for event in feed:
        got.append(event)
        if len(got) == n:
            break
    return got


def feed_options(mode: str, **more: Any) -> dict[str, Any]:
    return dict(mode=mode, ping_interval=None, backoff_initial=0.1, rng=None, **more)


# -- B: invalid UTF-8 ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_utf8_closes_with_1007_and_counts_what_came_before(
    mode: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_payload_server(nursery, [
        Script([trade(T, 1), trade(T, 2), BAD_UTF8, trade(T, 3)]),
        Script([trade(T, 4), trade(T, 5)]),
    ])
    with trio.fail_after(60):
        async with open_feed([T], url=server.url([T]), **feed_options(mode)) as feed:
            got = await take(feed, 4)
    stats = feed.statistics()
    assert [e.trade_id for e in got] == [1, 2, 4, 5]
    assert server.client_close_codes[0] == 1007  # not 1000: the client says why it left
    assert stats.reconnects == {"protocol error": 1}
    assert stats.messages >= 3  # trades 1 and 2, and the bad one, all read and accounted
    assert_accounted(stats, ids_by_stream(got), {T: range(1, 6)}, received=4)


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_utf8_without_reconnect_ends_the_feed_with_1007(
    mode: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_payload_server(nursery, [Script([trade(T, 1), BAD_UTF8, trade(T, 2)])])
    got: list[Any] = []
    with trio.fail_after(60):
        async with open_feed([T], url=server.url([T]), **feed_options(mode, reconnect=False)
                             ) as feed:
            with pytest.raises(ProtocolError) as raised:
                async for event in feed:
                    got.append(event)
    assert raised.value.close_code == 1007
    assert [e.trade_id for e in got] == [1]
    assert server.client_close_codes == [1007]
    assert_accounted(feed.statistics(), ids_by_stream(got), {T: [1, 2]}, received=1)


# -- C: undecodable payloads --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", list(UNDECODABLE.values()), ids=list(UNDECODABLE))
async def test_undecodable_payload_raises_after_the_events_before_it(
    mode: str, bad: bytes, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_payload_server(nursery, [
        Script([trade(T, 1), trade(T, 2), bad, trade(T, 3), 0.5, trade(T, 4)]),
    ])
    got: list[Any] = []
    with trio.fail_after(60):
        async with open_feed([T], url=server.url([T]), **feed_options(mode)) as feed:
            with pytest.raises(DecodeError) as raised:
                async for event in feed:
                    got.append(event)
    assert type(raised.value) is DecodeError  # itself, not in a group, not wrapped
    assert raised.value.payload == bad[:200]
    assert [e.trade_id for e in got] == [1, 2]  # nothing from after it, and nothing lost
    stats = feed.statistics()
    assert stats.skipped == 0 and stats.discarded >= 2  # the bad payload and trade 3 at least
    assert_accounted(stats, ids_by_stream(got), {T: range(1, 5)}, received=2)


@pytest.mark.parametrize("mode", MODES)
async def test_skip_counts_undecodable_payloads_per_stream_and_keeps_their_start(
    mode: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_payload_server(nursery, [
        Script([trade(T, 1), NOT_JSON, trade(T, 2), NOT_AN_EVENT, trade(T, 3),
                NOT_JSON + b"x" * 500, 0.5, trade(T, 4)]),
    ])
    with trio.fail_after(60):
        async with open_feed([T], url=server.url([T]), **feed_options(mode),
                             on_decode_error="skip") as feed:
            got = await take(feed, 4)
    stats = feed.statistics()
    assert [e.trade_id for e in got] == [1, 2, 3, 4]
    assert stats.skipped == 3
    assert stats.streams[T].skipped == 2  # the two that name their stream
    assert stats.streams["None"].skipped == 1  # the one that does not
    assert stats.skipped_payloads == (NOT_JSON, NOT_AN_EVENT, (NOT_JSON + b"x" * 500)[:128])
    assert_accounted(stats, ids_by_stream(got), {T: range(1, 5)}, received=4)


def test_on_decode_error_is_checked() -> None:
    with pytest.raises(ValueError, match="on_decode_error"):
        open_feed([T], on_decode_error="ignore")  # type: ignore[arg-type]


# -- D: keep_latest keys by stream name ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_keep_latest_keys_by_stream_whatever_the_key_order(
    mode: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = "aaausdt@bookTicker", "bbbusdt@bookTicker"
    later = [book(s, uid, data_first=True) for uid in (1, 2, 3) for s in (a, b)]
    server = await start_payload_server(nursery, [
        Script([book(a, 0, data_first=True), 0.1, *later]),
    ])
    with trio.fail_after(60):
        async with open_feed([a, b], url=server.url([a, b]),
                             **feed_options(mode, policy="keep_latest", max_queued=1)) as feed:
            await trio.sleep(1)  # both chunks arrive while the consumer is away
            got = await take(feed, 3)
    stats = feed.statistics()
    assert [(e.stream, e.update_id) for e in got] == [(a, 0), (a, 3), (b, 3)]
    assert stats.conflated == 4  # a1, a2 replaced by a3; b1, b2 by b3: never across streams
    # Conflation replaces snapshots by design, so only the counting half applies here.
    assert_accounted(stats, {}, received=3)


# -- E: ids that restart ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_trade_ids_that_restart_on_a_new_connection_are_a_reset_not_duplicates(
    mode: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    top = RESET_THRESHOLD + 500
    first = list(range(top - 20, top + 1))
    second = list(range(1, 31))  # a restarted exchange: ids from 1, times moving on
    server = await start_payload_server(nursery, [
        Script([trade(T, i, time=1_000 + i) for i in first], end=("drop",)),
        Script([trade(T, i, time=10_000 + i) for i in second]),
    ])
    caplog.set_level(logging.WARNING, "trio_feed")
    with trio.fail_after(60):
        async with open_feed([T], url=server.url([T]), **feed_options(mode)) as feed:
            got = await take(feed, len(first) + len(second))
    stats = feed.statistics()
    ids = [e.trade_id for e in got]
    assert ids == first + second  # delivered, not dropped as duplicates
    assert stats.resets == 1 and stats.streams[T].resets == 1 and stats.duplicates == 0
    assert any("restarted" in r.getMessage() and "RESET_THRESHOLD" in r.getMessage()
               for r in caplog.records)
    assert_accounted(stats, {T: ids[len(first):]}, {T: second}, received=len(ids))


@pytest.mark.parametrize("mode", MODES)
async def test_a_reconnect_that_repeats_old_trades_is_not_a_reset(
    mode: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A replay of old events (older times) on a new connection stays a run of duplicates."""
    top = RESET_THRESHOLD + 500
    old = [trade(T, i, time=1_000 + i) for i in range(1, top + 1)]
    server = await start_payload_server(nursery, [
        Script(old, end=("drop",)),
        Script([*old[:10], trade(T, top + 1, time=1_000 + top + 1)]),
    ])
    with trio.fail_after(60):
        async with open_feed([T], url=server.url([T]), **feed_options(mode)) as feed:
            got = await take(feed, top + 1)
    stats = feed.statistics()
    assert [e.trade_id for e in got] == list(range(1, top + 2))
    assert stats.resets == 0 and stats.duplicates == 10
    assert_accounted(stats, ids_by_stream(got), None, received=top + 1)


# -- F: a failed open ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_failed_open_accounts_for_what_it_read(
    mode: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_payload_server(nursery, [
        Script(before_reply=[trade(T, 1), trade(T, 2), trade(T, 3)], reply="error"),
    ])
    feed = open_feed([T], base_url=server.base_url, max_url_length=0, **feed_options(mode))
    with trio.fail_after(60), pytest.raises(SubscriptionError):
        async with feed:
            raise AssertionError("the open must fail")
    stats = feed.statistics()
    assert stats.messages == 3  # read while the SUBSCRIBE waited for its answer
    assert stats.discarded == 3
    assert_accounted(stats, {}, received=0)


# -- G: a cancel while opening -------------------------------------------------------------


class _CancelAtStep(trio.abc.Instrument):
    """Cancel ``scope`` after the ``step``-th task step from now, whichever task it is.

    A step runs one task from one checkpoint to the next, so stepping
    ``step`` through 1, 2, 3... cancels the open between each pair of its
    checkpoints, in the feed's own tasks (supervisor, shards, links) as well
    as the caller's: as a deadline would, between two scheduler batches.
    """

    def __init__(self, scope: trio.CancelScope, step: int) -> None:
        self.scope, self.step, self.steps = scope, step, 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.steps == self.step:
            self.scope.cancel()


def _task_count() -> int:
    stack, count = [trio.lowlevel.current_root_task()], 0
    while stack:
        task = stack.pop()
        count += 1
        for child in task.child_nurseries:
            stack.extend(child.child_tasks)
    return count


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_at_every_checkpoint_of_opening_is_only_cancelled(
    mode: str, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    streams = ["btcusdt@trade", "ethusdt@trade", "bnbusdt@trade"]
    data = [trade(T, i) for i in range(1, 4)]
    server = await start_payload_server(nursery, [
        Script(before_reply=data, reply="ok", payloads=data),
    ])
    await trio.sleep(1)
    baseline = _task_count()
    cancelled_while_opening = 0
    with trio.fail_after(6000):
        # Each step three times: which task runs first after the cancel varies
        # (trio shuffles each batch), and the race needs one particular order.
        for step, _ in itertools.product(range(1, 2000), range(3)):
            feed = open_feed(streams, base_url=server.base_url, max_url_length=0,
                             streams_per_connection=1, **feed_options(mode))
            opened = False
            with trio.CancelScope() as scope:
                instrument: _CancelAtStep | None = _CancelAtStep(scope, step)
                trio.lowlevel.add_instrument(instrument)
                try:
                    async with feed:
                        opened = not scope.cancel_called
                        trio.lowlevel.remove_instrument(instrument)
                        instrument = None
                finally:
                    if instrument is not None:
                        trio.lowlevel.remove_instrument(instrument)
            # Only Cancelled could have escaped (the scope absorbed it); no task is left,
            # and whatever was read is accounted for.
            assert scope.cancelled_caught or opened
            await trio.sleep(1)  # the server's side of the connections ends
            assert _task_count() == baseline, f"tasks left after a cancel at step {step}"
            assert_accounted(feed.statistics(), {}, received=0)
            if opened:
                break
            cancelled_while_opening += 1
    assert opened, "opening never completed"
    assert cancelled_while_opening >= 90  # a three-shard open has 30 checkpoints and more
