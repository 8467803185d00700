"""The identity helper itself must be able to fail: each promise, broken on purpose."""

from __future__ import annotations

import attrs
import pytest

from .identity import assert_accounted


@attrs.frozen
class _Stream:
    missing: int


@attrs.frozen
class _Stats:
    streams: dict[str, _Stream]
    messages: int = 10
    events: int = 10
    duplicates: int = 0
    dropped: int = 0
    conflated: int = 0
    discarded: int = 0


def test_accepts_an_exact_account() -> None:
    stats = _Stats({"s": _Stream(missing=2)}, messages=5, events=5)
    assert_accounted(stats, {"s": [1, 2, 5, 6, 7]}, received=5)


@pytest.mark.parametrize(
    ("stats", "delivered", "sent", "message"),
    [
        (_Stats({"s": _Stream(0)}), {"s": [1, 2, 2, 3]}, None, "duplicate or out of order"),
        (_Stats({"s": _Stream(0)}), {"s": [1, 3, 2]}, None, "out of order"),
        (_Stats({"s": _Stream(0)}), {"s": [1, 2, 4]}, None, "1 ids sent but not delivered"),
        (_Stats({"s": _Stream(1)}), {"s": [1, 2, 3]}, None, "reported 1 missing"),
        (_Stats({"s": _Stream(0)}), {"s": [1, 9]}, {"s": [1, 2]}, "never sent"),
        (_Stats({"s": _Stream(0)}, messages=11), {"s": [1]}, None, "messages 11"),
    ],
)
def test_each_broken_promise_fails(stats: _Stats, delivered: dict[str, list[int]],
                                   sent: dict[str, list[int]] | None, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        assert_accounted(stats, delivered, sent)


def test_events_must_match_what_the_consumer_received() -> None:
    with pytest.raises(AssertionError, match="consumer got 9"):
        assert_accounted(_Stats({}), {}, received=9)
