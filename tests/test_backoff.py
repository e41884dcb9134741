"""Retry delays (conveyor.backoff): exponential ceilings with a cap, full jitter below them."""

from __future__ import annotations

import math
import random

import pytest

from conveyor import Backoff, ConfigurationError


def test_ceilings_double_then_stay_at_the_cap() -> None:
    b = Backoff(base=0.5, cap=10.0)
    assert [b.ceiling(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_first_ceiling_is_the_base_and_zero_failures_do_not_go_below_it() -> None:
    b = Backoff(base=2.0, cap=100.0)
    assert b.ceiling(1) == 2.0
    assert b.ceiling(0) == 2.0
    assert b.ceiling(-5) == 2.0


def test_huge_failure_counts_stay_at_the_cap_without_overflow() -> None:
    b = Backoff(base=1.0, cap=300.0)
    for n in (63, 64, 100, 1000, 10**9):
        assert b.ceiling(n) == 300.0
        assert b.delay(n, random.Random(n)) <= 300.0


def test_cap_equal_to_base_gives_a_constant_ceiling() -> None:
    b = Backoff(base=0.2, cap=0.2)
    assert {b.ceiling(n) for n in range(1, 20)} == {0.2}


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 8, 20])
def test_jitter_delays_stay_within_zero_and_the_ceiling(failures: int) -> None:
    b = Backoff(base=0.1, cap=5.0, jitter=True)
    rng = random.Random(1234 + failures)
    ceiling = b.ceiling(failures)
    delays = [b.delay(failures, rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # full jitter: spread over the whole window, not bunched at the ceiling
    assert min(delays) < ceiling * 0.1
    assert max(delays) > ceiling * 0.9
    assert 0.4 * ceiling < sum(delays) / len(delays) < 0.6 * ceiling


def test_jitter_uses_the_global_random_when_no_rng_is_given() -> None:
    b = Backoff(base=1.0, cap=1.0, jitter=True)
    delays = {b.delay(1) for _ in range(50)}
    assert all(0.0 <= d <= 1.0 for d in delays)
    assert len(delays) > 1


def test_without_jitter_the_delay_is_the_ceiling() -> None:
    b = Backoff(base=0.25, cap=3.0, jitter=False)
    for n in range(1, 12):
        assert b.delay(n) == b.ceiling(n)
        assert b.delay(n, random.Random(n)) == b.ceiling(n)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [0.25, 0.5, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("base", "cap", "field"),
    [
        pytest.param(0, 10, "base", id="zero-base"),
        pytest.param(-1, 10, "base", id="negative-base"),
        pytest.param(5, 1, "cap", id="cap-below-base"),
        pytest.param(1, 0, "cap", id="zero-cap"),
        pytest.param(1, -1, "cap", id="negative-cap"),
    ],
)
def test_bad_base_or_cap_is_rejected(base: float, cap: float, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Backoff(base=base, cap=cap)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("base", "cap"),
    [
        pytest.param(math.nan, 10.0, id="nan-base"),
        pytest.param(1.0, math.nan, id="nan-cap"),
        pytest.param(math.inf, math.inf, id="inf-base"),
    ],
)
def test_non_finite_base_or_cap_is_rejected(base: float, cap: float) -> None:
    # A NaN base gives NaN delays, which the worker turns into int(nan * 1000): a crash
    # while handling a failed job instead of a retry.
    with pytest.raises(ConfigurationError):
        Backoff(base=base, cap=cap)
