"""Pure policy of the limits (conveyor.limits.policy), without Redis."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigurationError
from conveyor.limits import (
    ConcurrencyLimit,
    Limits,
    Rate,
    RateLimit,
    gcra_step,
    key_part,
    parse_rate,
)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/s", Rate(100, 1000)),
        ("20/m", Rate(20, 60_000)),
        ("5/h", Rate(5, 3_600_000)),
        ("1/d", Rate(1, 86_400_000)),
        ("100/2s", Rate(100, 2000)),
        ("3/500ms", Rate(3, 500)),
        (" 7 / 10m ", Rate(7, 600_000)),
    ],
)
def test_rates_parse_to_count_per_period(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


def test_interval_is_period_over_count() -> None:
    assert Rate(50, 1000).interval_ms == 20.0
    assert Rate(3, 1000).interval_ms == pytest.approx(333.333, abs=0.001)


@pytest.mark.parametrize("text", ["fast", "", "10", "10/", "/s", "10/y", "-1/s", "1.5/s", 10])
def test_a_rate_that_is_not_one_names_the_option(text: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^rate=.*not a rate"):
        parse_rate(text)


@pytest.mark.parametrize("text", ["0/s", "5/0s"])
def test_a_rate_of_nothing_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^rate=.*allows no job"):
        RateLimit.parse(text)


@pytest.mark.parametrize("value", [0, -2, 1.5, "3", True, None])
def test_concurrency_must_be_a_whole_number_of_at_least_one(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^concurrency="):
        ConcurrencyLimit.parse(value)


def test_burst_is_validated_under_its_own_name() -> None:
    with pytest.raises(ConfigurationError, match=r"^rate_burst=0"):
        RateLimit.parse("10/s", burst=0)


def test_plain_keys_stay_readable_and_others_are_hashed() -> None:
    assert key_part("tenant-1", "rate_key") == "tenant-1"
    assert key_part(42, "rate_key") == "42"
    hashed = key_part("a}b:{c}*", "rate_key")
    assert hashed.startswith("#") and len(hashed) == 33
    assert not set("{}:*?[] ") & set(hashed)
    assert key_part("x" * 65, "rate_key") != key_part("x" * 66, "rate_key")
    assert key_part("a}b:{c}*", "rate_key") == hashed  # stable: same key, same limiter


def test_a_key_function_giving_another_type_names_the_option() -> None:
    with pytest.raises(ConfigurationError, match=r"^rate_key must give a str or int"):
        key_part(["t"], "rate_key")


def test_gcra_runs_at_once_then_reserves_evenly_spaced_slots() -> None:
    step = gcra_step(1000, None, 20.0, 1)
    assert (step.decision, step.at_ms, step.tat_ms) == ("run", 1000, 1020.0)
    slots = []
    tat = step.tat_ms
    for _ in range(3):
        s = gcra_step(1000, tat, 20.0, 1)
        slots.append((s.decision, s.at_ms))
        tat = s.tat_ms
    assert slots == [("wait", 1020), ("wait", 1040), ("wait", 1060)]


def test_gcra_burst_lets_that_many_run_back_to_back() -> None:
    tat = None
    decisions = []
    for _ in range(4):
        s = gcra_step(5000, tat, 100.0, 3)
        decisions.append((s.decision, s.at_ms))
        tat = s.tat_ms
    assert decisions == [("run", 5000), ("run", 5000), ("run", 5000), ("wait", 5100)]


def test_gcra_forgets_an_idle_past() -> None:
    assert gcra_step(10_000, 500.0, 20.0, 1).decision == "run"


def test_gcra_above_1000_per_second_admits_several_jobs_within_one_millisecond() -> None:
    tat = None
    runs = 0
    for i in range(5):
        s = gcra_step(1000 + i * 0.02, tat, 0.01, 1)  # 100,000/s, a call every 20 us
        runs += s.decision == "run"
        tat = s.tat_ms
    assert runs == 5


def test_gcra_waits_for_the_first_whole_millisecond_that_conforms() -> None:
    s = gcra_step(1333, 1333.4, 333.3, 1)
    assert (s.decision, s.at_ms) == ("wait", 1334)


def test_limits_of_a_task_without_options_is_none_so_it_has_no_gate() -> None:
    assert Limits.of() is None


def test_limits_of_options_are_validated_naming_the_option() -> None:
    limits = Limits.of(rate="100/2s", concurrency=2)
    assert limits is not None and limits.rate is not None and limits.concurrency is not None
    assert limits.rate.rate == Rate(100, 2000) and limits.concurrency.limit == 2
    with pytest.raises(ConfigurationError, match=r"^rate='fast'"):
        Limits.of(rate="fast")
    with pytest.raises(ConfigurationError, match=r"^rate='0/s'"):
        Limits.of(rate="0/s")
    with pytest.raises(ConfigurationError, match=r"^concurrency=0"):
        Limits.of(concurrency=0)
