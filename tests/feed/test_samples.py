"""Samples: a ring of the last `size` values, nearest-rank percentiles, lifetime count, maximum."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_feed.feed._samples import Samples


def nearest_rank(values: list[float], p: float) -> float:
    """The textbook nearest-rank percentile: the ceil(p/100 * N)-th smallest (1-based),
    the smallest for p == 0; computed exactly."""
    ordered = sorted(values)
    rank = math.ceil(Fraction(p) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


def test_empty() -> None:
    s = Samples(8)
    assert s.percentile(50) is None
    assert s.percentile(0) is None
    assert (s.count, s.maximum, s.size) == (0, None, 8)


def test_default_size() -> None:
    assert Samples().size == 4096


def test_single_value() -> None:
    s = Samples(4)
    s.add(3.5)
    assert [s.percentile(p) for p in (0, 1, 50, 99, 100)] == [3.5] * 5
    assert (s.count, s.maximum) == (1, 3.5)


def test_extremes_are_min_and_max_of_window() -> None:
    s = Samples(100)
    for v in [5.0, -2.0, 9.0, 0.5]:
        s.add(v)
    assert s.percentile(0) == -2.0
    assert s.percentile(100) == 9.0


@pytest.mark.parametrize(
    ("n", "p", "expected"),
    [
        (100, 50, 50.0),
        (100, 99, 99.0),
        (100, 95, 95.0),
        (100, 99.9, 100.0),
        (100, 0.5, 1.0),
        (10, 25, 3.0),  # ceil(2.5) = 3
        (10, 95, 10.0),
        (10, 10, 1.0),  # ceil(1.0) = 1: the 1st of 10
        (10, 30, 3.0),  # ceil(3.0) = 3
        (10, 50, 5.0),  # ceil(5.0) = 5: the median of 1..10 by nearest rank is 5
        (2, 50, 1.0),  # ceil(1.0) = 1
        (4, 75, 3.0),  # ceil(3.0) = 3
        (100, 7, 7.0),  # ceil(7.0) = 7
    ],
)
def test_percentile_nearest_rank(n: int, p: float, expected: float) -> None:
    s = Samples(1000)
    for v in range(n, 0, -1):  # insertion order must not matter
        s.add(float(v))
    assert nearest_rank([float(v) for v in range(1, n + 1)], p) == expected
    assert s.percentile(p) == expected


def test_window_replacement_keeps_last_size_values() -> None:
    s = Samples(3)
    for v in [1.0, 2.0, 3.0, 4.0, 5.0]:
        s.add(v)
    assert s.percentile(0) == 3.0  # 1 and 2 were replaced
    assert s.percentile(100) == 5.0
    assert s.count == 5
    assert s.maximum == 5.0


def test_maximum_is_lifetime_even_after_eviction() -> None:
    s = Samples(2)
    s.add(100.0)
    for _ in range(5):
        s.add(1.0)
    assert s.maximum == 100.0
    assert s.percentile(100) == 1.0
    assert s.count == 6


def test_negative_maximum() -> None:
    s = Samples(4)
    s.add(-5.0)
    s.add(-7.0)
    assert s.maximum == -5.0


@given(
    size=st.integers(1, 20),
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=80),
    ps=st.lists(st.floats(0, 100), min_size=1, max_size=5),
)
@settings(max_examples=80, deadline=None)
def test_property_window_count_maximum(size: int, values: list[float], ps: list[float]) -> None:
    s = Samples(size)
    for v in values:
        s.add(v)
    window = values[-size:]
    assert s.count == len(values)
    assert s.maximum == max(values)
    assert s.percentile(0) == min(window)
    assert s.percentile(100) == max(window)
    results = [s.percentile(p) for p in sorted(ps)]
    assert all(r in window for r in results)
    assert results == sorted(results)  # monotone in p
