"""Backoff (equal jitter, reset by healthy()) and AttemptLimiter (sliding window)."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_feed.feed._backoff import AttemptLimiter, Backoff


class _FixedRng(random.Random):
    """A Random whose random() always returns ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def _ceiling(initial: float, cap: float, n: int) -> float:
    return min(cap, initial * 2**n)


# -- Backoff -----------------------------------------------------------------------


@pytest.mark.parametrize(("initial", "cap"), [(0, 1), (-1, 1), (2.0, 1.0)])
def test_backoff_rejects_bad_parameters(initial: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial=initial, cap=cap)


def test_backoff_defaults() -> None:
    b = Backoff()
    assert (b.initial, b.cap, b.failures) == (0.5, 30.0, 0)
    first = b.next_delay()
    assert 0.25 <= first <= 0.5


def test_backoff_matches_equal_jitter_formula_exactly_with_seeded_rng() -> None:
    initial, cap = 0.5, 30.0
    b = Backoff(initial=initial, cap=cap, rng=random.Random(1234))
    twin = random.Random(1234)
    for n in range(20):
        d = _ceiling(initial, cap, n)
        expected = d / 2 + twin.random() * d / 2
        assert b.next_delay() == pytest.approx(expected, rel=1e-12)
        assert b.failures == n + 1


def test_backoff_same_seed_same_schedule_different_seed_different() -> None:
    a = [Backoff(rng=random.Random(7)).next_delay() for _ in range(1)]
    b1, b2, b3 = (Backoff(rng=random.Random(s)) for s in (7, 7, 8))
    s1 = [b1.next_delay() for _ in range(10)]
    s2 = [b2.next_delay() for _ in range(10)]
    s3 = [b3.next_delay() for _ in range(10)]
    assert s1 == s2
    assert s1 != s3
    assert s1[0] == a[0]


@pytest.mark.parametrize("seed", range(5))
def test_backoff_delays_stay_in_equal_jitter_interval(seed: int) -> None:
    initial, cap = 0.1, 7.0
    b = Backoff(initial=initial, cap=cap, rng=random.Random(seed))
    for n in range(40):
        d = _ceiling(initial, cap, n)
        delay = b.next_delay()
        assert d / 2 <= delay <= d, (n, delay, d)


def test_backoff_interval_endpoints_are_reached_by_the_rng_extremes() -> None:
    low = Backoff(initial=1.0, cap=8.0, rng=_FixedRng(0.0))
    high = Backoff(initial=1.0, cap=8.0, rng=_FixedRng(1.0))
    assert [low.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [high.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_floor_grows_so_accept_and_drop_cannot_tight_loop() -> None:
    # Rule 1: a server that accepts and drops at once; healthy() is never called.
    b = Backoff(initial=0.5, cap=30.0, rng=_FixedRng(0.0))
    delays = [b.next_delay() for _ in range(100)]
    assert delays == sorted(delays)
    assert delays[0] == 0.25
    assert min(delays[6:]) >= 15.0  # at the cap, never below cap/2
    assert sum(delays) > 100 * 10  # a hundred failures take many minutes, not a tight loop


def test_backoff_huge_failure_count_does_not_overflow() -> None:
    b = Backoff(initial=0.5, cap=30.0, rng=random.Random(3))
    for _ in range(5000):
        delay = b.next_delay()
        assert 15.0 <= delay <= 30.0 or b.failures <= 7
    assert b.failures == 5000
    assert 15.0 <= b.next_delay() <= 30.0


def test_backoff_healthy_resets_schedule_to_initial() -> None:
    b = Backoff(initial=1.0, cap=64.0, rng=_FixedRng(1.0))
    assert [b.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    b.healthy()
    assert b.failures == 0
    assert [b.next_delay() for _ in range(3)] == [1.0, 2.0, 4.0]
    assert b.failures == 3


def test_backoff_jitter_spreads_clients_dropped_together() -> None:
    # A thousand clients, same attempt number: not in lockstep, and all in range.
    delays = []
    for seed in range(1000):
        b = Backoff(initial=1.0, cap=30.0, rng=random.Random(seed))
        for _ in range(3):
            b.next_delay()
        delays.append(b.next_delay())  # attempt n = 3: d = 8
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 990
    assert statistics.pstdev(delays) > 0.9  # uniform on [4, 8]: ~1.15
    assert 5.8 < statistics.mean(delays) < 6.2


@given(
    initial=st.floats(0.001, 10.0),
    factor=st.floats(1.0, 1000.0),
    seed=st.integers(0, 2**32),
    n=st.integers(0, 80),
)
@settings(max_examples=60, deadline=None)
def test_backoff_property_equal_jitter(initial: float, factor: float, seed: int, n: int) -> None:
    cap = initial * factor
    b = Backoff(initial=initial, cap=cap, rng=random.Random(seed))
    for k in range(n + 1):
        d = _ceiling(initial, cap, k)
        delay = b.next_delay()
        assert d / 2 * (1 - 1e-12) <= delay <= d * (1 + 1e-12)


# -- AttemptLimiter ------------------------------------------------------------------


@pytest.mark.parametrize(("max_attempts", "window"), [(0, 1.0), (1, 0.0), (5, -1.0)])
def test_limiter_rejects_bad_parameters(max_attempts: int, window: float) -> None:
    with pytest.raises(ValueError):
        AttemptLimiter(max_attempts, window)


def test_limiter_defaults() -> None:
    lim = AttemptLimiter()
    assert (lim.max_attempts, lim.window, lim.attempts) == (250, 300.0, 0)
    for _ in range(250):
        assert lim.wait_time(0.0) == 0.0
        lim.record(0.0)
    assert lim.wait_time(0.0) == 300.0


def test_limiter_budget_then_exact_wait_time() -> None:
    lim = AttemptLimiter(3, 10.0)
    for t in (0.0, 1.0, 2.0):
        assert lim.wait_time(t) == 0.0
        lim.record(t)
    assert lim.attempts == 3
    assert lim.wait_time(2.5) == pytest.approx(7.5)  # oldest (0) + 10 - 2.5
    assert lim.wait_time(9.0) == pytest.approx(1.0)
    # The oldest attempt leaves the window exactly at 0 + 10.
    assert lim.wait_time(10.0) == 0.0
    lim.record(10.0)
    assert lim.wait_time(10.0) == pytest.approx(1.0)  # next oldest is 1.0
    assert lim.wait_time(11.0) == 0.0


def test_limiter_record_over_budget_raises_and_changes_nothing() -> None:
    lim = AttemptLimiter(2, 5.0)
    lim.record(0.0)
    lim.record(0.0)
    with pytest.raises(RuntimeError):
        lim.record(4.999)
    assert lim.attempts == 2
    assert lim.wait_time(4.0) == pytest.approx(1.0)
    lim.record(5.0)
    assert lim.attempts == 3


def test_limiter_greedy_caller_is_paced_at_budget_rate() -> None:
    # A caller that always waits exactly wait_time() and tries again.
    lim = AttemptLimiter(5, 60.0)
    now = 0.0
    times = []
    for _ in range(23):
        now += lim.wait_time(now)
        lim.record(now)
        times.append(now)
    assert times == [60.0 * (i // 5) for i in range(23)]


def test_limiter_shared_by_several_callers() -> None:
    lim = AttemptLimiter(4, 10.0)
    for caller in range(4):
        assert lim.wait_time(float(caller)) == 0.0
        lim.record(float(caller))
    # A fifth caller (any connection of any feed sharing it) has to wait.
    assert lim.wait_time(4.0) == pytest.approx(6.0)


@given(
    max_attempts=st.integers(1, 6),
    window=st.integers(1, 40),
    steps=st.lists(st.tuples(st.integers(0, 15), st.booleans()), max_size=150),
)
@settings(max_examples=100, deadline=None)
def test_limiter_property_no_window_exceeds_budget(
    max_attempts: int, window: int, steps: list[tuple[int, bool]]
) -> None:
    """Records made only when wait_time()==0: no window of `window` seconds holds more
    than max_attempts of them; and wait_time() is exactly as strict as needed."""
    lim = AttemptLimiter(max_attempts, float(window))
    now = 0
    recorded: list[int] = []
    for gap, greedy in steps:
        now += gap
        wait = lim.wait_time(float(now))
        recent = [t for t in recorded if now - window < t <= now]
        # Oracle: allowed iff fewer than max_attempts in the half-open window ending now.
        if len(recent) < max_attempts:
            assert wait == 0.0
        else:
            assert wait == recent[-max_attempts] + window - now > 0
            with pytest.raises(RuntimeError):
                lim.record(float(now))
            if not greedy:
                continue
            now = recent[-max_attempts] + window  # sleep exactly wait_time
            assert lim.wait_time(float(now)) == 0.0
        lim.record(float(now))
        recorded.append(now)
    assert lim.attempts == len(recorded)
    for start in recorded:
        in_window = [t for t in recorded if start <= t < start + window]
        assert len(in_window) <= max_attempts, (start, in_window)


def test_the_first_rotation_since_a_reset_goes_at_once_later_ones_back_off() -> None:
    backoff = Backoff(initial=0.5, cap=30.0, rng=random.Random(1))
    assert backoff.next_rotation_delay() == 0.0
    second = backoff.next_rotation_delay()
    assert 0.5 <= second <= 1.0  # d = 0.5 * 2**1, equal jitter
    backoff.healthy()
    assert backoff.next_rotation_delay() == 0.0
