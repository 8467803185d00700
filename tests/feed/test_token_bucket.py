"""TokenBucket: at most burst + rate*T messages in any interval of length T."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_feed.feed._token_bucket import TokenBucket


def _sends(bucket: TokenBucket, arrivals: list[float]) -> list[float]:
    return [now + bucket.reserve(now) for now in arrivals]


def _max_in_closed_window(sends: list[float], length: float) -> int:
    ordered = sorted(sends)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] <= start + length:
            j += 1
        best = max(best, j - i)
    return best


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (4, 0.5), (4, 0)])
def test_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_starts_full_and_spaces_a_burst_at_the_rate() -> None:
    bucket = TokenBucket()  # rate 4, burst 1
    delays = [bucket.reserve(0.0) for _ in range(10)]
    assert delays == [0.25 * i for i in range(10)]
    assert bucket.taken == 10
    assert bucket.waited == pytest.approx(sum(delays))


def test_defaults_allow_five_in_closed_second_and_not_six() -> None:
    bucket = TokenBucket()
    sends = _sends(bucket, [0.0] * 6)
    assert sends[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert sends[5] == 1.25
    assert _max_in_closed_window(sends, 1.0) == 5


def test_sustained_rate_never_waits() -> None:
    bucket = TokenBucket(rate=4.0, burst=1.0)
    for i in range(100):
        assert bucket.reserve(i * 0.25) == 0.0
    assert bucket.waited == 0.0
    assert bucket.taken == 100


def test_idle_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(rate=4.0, burst=2.0)
    assert bucket.reserve(0.0) == 0.0
    # A long idle refills only up to burst (2), not 400 tokens.
    assert [bucket.reserve(100.0) for _ in range(4)] == [0.0, 0.0, 0.25, 0.5]


def test_burst_allows_that_many_at_once() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0)
    assert [bucket.reserve(5.0) for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_partial_refill_between_calls() -> None:
    bucket = TokenBucket(rate=4.0, burst=1.0)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(0.125) == 0.125  # half a token refilled: wait for the other half
    assert bucket.reserve(0.125) == 0.375  # queued behind it, 0.25 later
    assert bucket.reserve(1.0) == 0.0  # debt paid at 0.5; refilled to 1 by 0.75
    assert bucket.waited == 0.5


def test_waiting_callers_keep_call_order_even_when_later_caller_arrives_later() -> None:
    bucket = TokenBucket()
    sends = _sends(bucket, [0.0, 0.0, 0.0, 0.1, 0.2, 0.3])
    assert sends == sorted(sends)
    assert sends == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]


def _check_rule(
    arrivals: list[float], sends: list[float], rate: float, burst: float, eps: float = 0.0
) -> None:
    # Nobody is told to send before they asked.
    assert all(s >= a - eps for a, s in zip(arrivals, sends, strict=True))
    # Reservation order is send order.
    assert all(x <= y + eps for x, y in pairwise(sends))
    # For every interval [s_i, s_j] (any interval's count is maximal when its ends
    # are sends), the number of sends in it is at most burst + rate * length.
    n = len(sends)
    for i in range(n):
        for j in range(i, n):
            count = j - i + 1
            assert count <= burst + rate * (sends[j] - sends[i]) + eps, (i, j, sends[i], sends[j])


@given(
    rate=st.sampled_from([1.0, 2.0, 4.0, 8.0, 0.5]),
    burst=st.sampled_from([1.0, 2.0, 3.0, 5.0]),
    ticks=st.lists(st.integers(0, 2048), min_size=1, max_size=60),
)
@settings(max_examples=100, deadline=None)
def test_property_send_times_obey_rule_exact(rate: float, burst: float, ticks: list[int]) -> None:
    """Dyadic times and power-of-two rates: the float arithmetic is exact, so the
    rule is checked with no tolerance."""
    arrivals = [t / 1024 for t in sorted(ticks)]
    bucket = TokenBucket(rate, burst)
    sends = _sends(bucket, arrivals)
    _check_rule(arrivals, sends, rate, burst)
    assert bucket.taken == len(arrivals)
    assert bucket.waited == pytest.approx(sum(s - a for a, s in zip(arrivals, sends, strict=True)))


@given(ticks=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60))
@settings(max_examples=120, deadline=None)
def test_property_defaults_at_most_five_in_any_closed_second(ticks: list[float]) -> None:
    arrivals = sorted(ticks)
    sends = _sends(TokenBucket(), arrivals)
    _check_rule(arrivals, sends, 4.0, 1.0, eps=1e-9)
    assert _max_in_closed_window(sends, 1.0 - 1e-9) <= 5


@given(
    rate=st.floats(0.5, 20),
    burst=st.integers(1, 6),
    ticks=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=40),
)
@settings(max_examples=100, deadline=None)
def test_property_arbitrary_rates(rate: float, burst: int, ticks: list[float]) -> None:
    arrivals = sorted(ticks)
    sends = _sends(TokenBucket(rate, float(burst)), arrivals)
    _check_rule(arrivals, sends, rate, float(burst), eps=1e-7)


@given(ticks=st.lists(st.integers(0, 4096), min_size=1, max_size=60))
@settings(max_examples=100, deadline=None)
def test_property_no_needless_waiting(ticks: list[int]) -> None:
    """Tight: a caller waits only when sending at once would break the rule, i.e.
    each delay is the smallest that keeps every interval ending at its send legal."""
    rate, burst = 4.0, 1.0
    arrivals = [t / 1024 for t in sorted(ticks)]
    sends = _sends(TokenBucket(rate, burst), arrivals)
    for j, s in enumerate(sends):
        # Earliest legal time for send j given the sends before it.
        earliest = arrivals[j]
        for i in range(j):
            earliest = max(earliest, sends[i] + (j - i + 1 - burst) / rate)
        assert s == earliest, (j, s, earliest)
