"""Cron policy, pure: misfire skip/once/all with a cap, time zones across DST, validation."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from conveyor.errors import ConfigurationError
from conveyor.schedules import (
    COUNT_LIMIT,
    SchedulePolicy,
    last_tick,
    mark_ttl_ms,
    next_ticks,
    period_ms,
    to_fire,
)

PARIS = ZoneInfo("Europe/Paris")
MIN = 60_000


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc).timestamp() * 1000)


def paris(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, fold: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=PARIS, fold=fold).timestamp() * 1000)


# -- misfire ---------------------------------------------------------------------------------


def test_skip_fires_the_latest_tick_within_grace_and_nothing_older() -> None:
    now = utc(2026, 1, 1, 12, 5, 30)
    assert to_fire("*/5 * * * *", "UTC", "skip", None, now).ticks == (utc(2026, 1, 1, 12, 5),)
    late = utc(2026, 1, 1, 12, 7)
    assert to_fire("*/5 * * * *", "UTC", "skip", utc(2026, 1, 1, 11, 0), late).ticks == ()


def test_a_tick_at_or_below_the_mark_is_not_fired_again() -> None:
    now = utc(2026, 1, 1, 12, 5, 30)
    for policy in ("skip", "once", "all"):
        firing = to_fire("*/5 * * * *", "UTC", policy, utc(2026, 1, 1, 12, 5), now)
        assert firing.ticks == (), policy


def test_once_fires_the_latest_missed_tick_even_past_grace() -> None:
    mark = utc(2026, 1, 1, 9, 0)
    now = utc(2026, 1, 1, 12, 7)  # 2 minutes after the 12:05 tick, grace 60 s
    firing = to_fire("*/5 * * * *", "UTC", "once", mark, now, grace=60)
    assert firing.ticks == (utc(2026, 1, 1, 12, 5),)
    assert to_fire("*/5 * * * *", "UTC", "skip", mark, now, grace=60).ticks == ()


def test_all_fires_every_missed_tick_oldest_first() -> None:
    mark = utc(2026, 1, 1, 12, 0)
    now = utc(2026, 1, 1, 12, 21)
    firing = to_fire("*/5 * * * *", "UTC", "all", mark, now)
    assert firing.ticks == tuple(utc(2026, 1, 1, 12, m) for m in (5, 10, 15, 20))
    assert firing.dropped == 0 and not firing.dropped_more


def test_all_keeps_the_newest_cap_ticks_and_counts_the_dropped() -> None:
    mark = utc(2026, 1, 1, 0, 0)
    now = utc(2026, 1, 1, 1, 0, 30)  # 60 missed minute ticks: 00:01 .. 01:00
    firing = to_fire("* * * * *", "UTC", "all", mark, now, cap=10)
    assert firing.ticks == tuple(utc(2026, 1, 1, 0, 51) + i * MIN for i in range(10))
    assert firing.dropped == 50 and not firing.dropped_more


def test_all_stops_counting_dropped_ticks_at_the_limit() -> None:
    mark = utc(2026, 1, 1)
    now = mark + (COUNT_LIMIT + 500) * 1000  # a per-second schedule, hours behind
    firing = to_fire("* * * * * *", "UTC", "all", mark, now, cap=5)
    assert len(firing.ticks) == 5 and firing.ticks[-1] == now
    assert firing.dropped == COUNT_LIMIT and firing.dropped_more


@pytest.mark.parametrize("policy", ["once", "all"])
def test_a_new_schedule_has_no_history_so_every_policy_acts_as_skip(policy: str) -> None:
    old = utc(2026, 1, 1, 12, 7)
    assert to_fire("*/5 * * * *", "UTC", policy, None, old, grace=60).ticks == ()  # type: ignore[arg-type]
    fresh = utc(2026, 1, 1, 12, 5, 10)
    firing = to_fire("*/5 * * * *", "UTC", policy, None, fresh, grace=60)  # type: ignore[arg-type]
    assert firing.ticks == (utc(2026, 1, 1, 12, 5),)


# -- time zones ------------------------------------------------------------------------------


def test_a_zone_reads_the_expression_in_wall_clock_time() -> None:
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert next_ticks("0 9 * * *", "Europe/Paris", utc(2026, 1, 10), 1) == [utc(2026, 1, 10, 8)]
    assert next_ticks("0 9 * * *", "Europe/Paris", utc(2026, 7, 10), 1) == [utc(2026, 7, 10, 7)]


def test_a_tick_in_the_skipped_hour_fires_once_at_the_transition() -> None:
    # 2026-03-29: Paris jumps from 02:00 CET to 03:00 CEST (01:00 UTC).
    day = utc(2026, 3, 28, 12)
    assert next_ticks("30 2 * * *", "Europe/Paris", day, 2) == [
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist that day: fired at 03:00 CEST
        paris(2026, 3, 30, 2, 30),
    ]
    # Every 15 minutes: 02:00..02:45 and 03:00 collapse into one tick at the transition.
    ticks = next_ticks("*/15 * * * *", "Europe/Paris", utc(2026, 3, 29, 0, 40), 4)
    assert ticks == [
        utc(2026, 3, 29, 0, 45),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 15),
        utc(2026, 3, 29, 1, 30),
    ]


def test_a_repeated_hour_fires_once_not_twice() -> None:
    # 2026-10-25: Paris goes back from 03:00 CEST to 02:00 CET at 01:00 UTC.
    ticks = next_ticks("*/30 * * * *", "Europe/Paris", utc(2026, 10, 24, 23, 45), 5)
    assert ticks == [
        paris(2026, 10, 25, 2, 0),  # first pass of 02:00 (00:00 UTC)
        paris(2026, 10, 25, 2, 30),
        paris(2026, 10, 25, 3, 0),  # 02:00 and 02:30 of the second pass are not fired
        paris(2026, 10, 25, 3, 30),
        paris(2026, 10, 25, 4, 0),
    ]
    assert len(set(ticks)) == len(ticks)
    # Asked during the second pass (02:10 CET), the next tick is 03:00 CET, not a past one.
    second_pass = paris(2026, 10, 25, 2, 10, fold=1)
    assert next_ticks("*/30 * * * *", "Europe/Paris", second_pass, 1) == [paris(2026, 10, 25, 3)]
    once_a_day = next_ticks("30 2 * * *", "Europe/Paris", utc(2026, 10, 24, 12), 2)
    assert once_a_day == [paris(2026, 10, 25, 2, 30), paris(2026, 10, 26, 2, 30)]


def test_during_the_repeated_hour_the_last_tick_is_the_first_pass_one() -> None:
    second_pass = paris(2026, 10, 25, 2, 40, fold=1)  # 01:40 UTC
    assert last_tick("*/30 * * * *", "Europe/Paris", second_pass) == paris(2026, 10, 25, 2, 30)
    # and nothing fires there for a schedule that fired 02:30 on the first pass
    mark = paris(2026, 10, 25, 2, 30)
    assert to_fire("*/30 * * * *", "Europe/Paris", "all", mark, second_pass).ticks == ()


def test_all_across_the_spring_gap_fires_each_utc_tick_once() -> None:
    mark = utc(2026, 3, 29, 0, 0)  # 01:00 CET
    now = utc(2026, 3, 29, 2, 0)  # 04:00 CEST
    firing = to_fire("*/30 * * * *", "Europe/Paris", "all", mark, now)
    assert firing.ticks == (
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1, 0),  # 02:00, 02:30 and 03:00 local: one tick
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2, 0),
    )


def test_six_fields_tick_on_seconds_in_a_zone() -> None:
    now = paris(2026, 1, 1, 12, 5, 40)
    assert last_tick("*/5 * * * * 30", "Europe/Paris", now) == paris(2026, 1, 1, 12, 5, 30)


def test_period_and_mark_ttl_outlive_a_tick() -> None:
    assert period_ms("*/5 * * * *", "UTC", utc(2026, 1, 1, 12, 5)) == 5 * MIN
    assert mark_ttl_ms(5 * MIN) == 7 * 24 * 60 * MIN
    yearly = period_ms("0 0 1 1 *", "UTC", utc(2026, 1, 1))
    assert mark_ttl_ms(yearly) == 3 * yearly


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["Mars/Olympus", "Europe/../etc", "", 5])
def test_an_unknown_time_zone_is_refused_naming_tz(tz: object) -> None:
    with pytest.raises(ConfigurationError, match="tz"):
        SchedulePolicy("* * * * *", tz=tz)  # type: ignore[arg-type]


@pytest.mark.parametrize("misfire", ["never", "ALL", None])
def test_an_unknown_misfire_policy_is_refused_naming_misfire(misfire: object) -> None:
    with pytest.raises(ConfigurationError, match="misfire must be one of"):
        SchedulePolicy("* * * * *", misfire=misfire)  # type: ignore[arg-type]


@pytest.mark.parametrize("cap", [0, -1, 1001, 2.5, True])
def test_a_bad_cap_is_refused_naming_misfire_cap(cap: object) -> None:
    with pytest.raises(ConfigurationError, match="misfire_cap"):
        SchedulePolicy("* * * * *", misfire="all", misfire_cap=cap)  # type: ignore[arg-type]


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf")])
def test_a_bad_grace_is_refused_naming_grace(grace: float) -> None:
    with pytest.raises(ConfigurationError, match="grace"):
        SchedulePolicy("* * * * *", grace=grace)


def test_a_bad_expression_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cron expression"):
        SchedulePolicy("every tuesday", tz="Europe/Paris")


def test_a_valid_policy_delegates_to_the_pure_functions() -> None:
    policy = SchedulePolicy("0 9 * * *", tz="Europe/Paris", misfire="once", misfire_cap=3)
    now = utc(2026, 1, 10, 12)
    assert policy.last_tick(now) == utc(2026, 1, 10, 8)
    assert policy.next_ticks(now, 2) == [utc(2026, 1, 11, 8), utc(2026, 1, 12, 8)]
    assert policy.to_fire(utc(2026, 1, 5, 8), now).ticks == (utc(2026, 1, 10, 8),)
