"""Cron policy as pure functions: which ticks to fire now, in a time zone, after a misfire.

Ticks are always named by their UTC epoch milliseconds, whatever the schedule's zone, so the
de-duplication key of a tick (``cron:<task>:<tick ms>``) and the last-fired mark stay unique
and comparable across workers, restarts and DST changes. Nothing here does I/O: the caller
passes Redis' clock (``now_ms``) and the schedule's last fired tick read from Redis.

Time zones (``tz=``, any IANA name): the expression is read in the zone's wall-clock time.

- A wall-clock time that does not exist (the hour skipped when clocks go forward) fires
  **once, at the transition** (02:30 on a Paris spring-forward day fires at 03:00 CEST).
  Several ticks inside the gap collapse into that one tick, and a tick at the end of the gap
  (03:00) is the same tick. A daily job at 02:30 thus still runs that day; skipping it
  would silently lose a day of work.
- A wall-clock time that happens twice (the hour repeated when clocks go back) fires
  **once, at its first occurrence**; on the second pass the hour's ticks are not fired again.

Misfire policies, for ticks missed while no worker ran (``misfire=``):

- ``skip`` (default, the behaviour before policies existed): fire the latest tick only if
  it is at most ``grace`` seconds old;
- ``once``: fire the latest missed tick once, however old;
- ``all``: fire every tick missed since the last fired one, oldest first, at most
  ``misfire_cap`` of them (the newest); the rest are reported as dropped.

A schedule with no last fired tick (new, or its mark expired) behaves as ``skip`` under every
policy: it has no history from which a miss could be known.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from functools import cache
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import ConfigurationError

Misfire = Literal["skip", "once", "all"]
MISFIRE_POLICIES: Final = ("skip", "once", "all")
DEFAULT_MISFIRE_CAP: Final = 100
#: Each fired tick is one key of the fire script; past this a script call grows unwieldy.
MAX_MISFIRE_CAP: Final = 1000
#: Most missed ticks counted past the cap when reporting how many were dropped.
COUNT_LIMIT: Final = 10_000
#: The last-fired mark lives at least this long after its last firing (then 3 periods).
MARK_TTL_FLOOR_MS: Final = 7 * 24 * 3600 * 1000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS: Final = timedelta(milliseconds=1)
#: croniter's get_prev excludes an exact start; a microsecond later includes it.
_INCLUSIVE: Final = timedelta(microseconds=1)


def zone(tz: str) -> tzinfo:
    """The zone of an IANA name (``"Europe/Paris"``, ``"UTC"``); ConfigurationError naming tz."""
    if not isinstance(tz, str) or not tz:
        raise ConfigurationError(
            f"tz must be an IANA time zone name like 'Europe/Paris', not {tz!r}"
        )
    return _zone(tz)


@cache
def _zone(tz: str) -> tzinfo:
    if tz.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"tz={tz!r} is not a known time zone: use an IANA name like 'Europe/Paris' or "
            "'America/New_York' (install the tzdata package where the system has none)"
        ) from exc


def validate_misfire(misfire: str, cap: int) -> Misfire:
    """Check ``misfire`` and ``misfire_cap`` at decoration time; ConfigurationError names them."""
    if misfire not in MISFIRE_POLICIES:
        raise ConfigurationError(
            f"misfire must be one of {', '.join(map(repr, MISFIRE_POLICIES))}, not {misfire!r}"
        )
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_MISFIRE_CAP:
        raise ConfigurationError(
            f"misfire_cap must be a whole number from 1 to {MAX_MISFIRE_CAP}, not {cap!r}"
        )
    return misfire  # type: ignore[return-value]


def validate_grace(grace: float) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not math.isfinite(grace):
        raise ConfigurationError(f"grace must be a finite number of seconds >= 0, not {grace!r}")
    if grace < 0:
        raise ConfigurationError(f"grace must be a finite number of seconds >= 0, not {grace!r}")
    return float(grace)


def validate_expression(expression: str) -> str:
    if (
        not isinstance(expression, str)
        or len(expression.split()) not in (5, 6)
        or not croniter.is_valid(expression)
    ):
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: use five fields (minute hour "
            "day-of-month month day-of-week) like '*/5 * * * *', or six with seconds "
            "last like '*/5 * * * * 30'"
        )
    return expression


def _to_ms(aware: datetime) -> int:
    return (aware - _EPOCH) // _MS


def _wall(at_ms: int, tz: tzinfo) -> datetime:
    """The naive wall-clock time of an instant in a zone."""
    return (_EPOCH + at_ms * _MS).astimezone(tz).replace(tzinfo=None)


def _instant(wall: datetime, tz: tzinfo) -> int:
    """The UTC ms of a wall-clock tick: its first occurrence, or the transition of a gap.

    Monotonic (never decreasing) in ``wall``, which is what lets the generators below walk
    wall-clock ticks with croniter and emit UTC ticks in order.
    """
    if tz is timezone.utc:
        return _to_ms(wall.replace(tzinfo=timezone.utc))
    first = wall.replace(tzinfo=tz, fold=0)
    if first.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == wall:
        return _to_ms(first)
    # A time in a gap: fold=1 reads it with the offset after the jump (an earlier instant),
    # fold=0 with the offset before (a later one); the jump lies between. Search it.
    lo, hi = _to_ms(wall.replace(tzinfo=tz, fold=1)), _to_ms(first)
    before = (_EPOCH + lo * _MS).astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (_EPOCH + mid * _MS).astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi


def ticks_after(expression: str, tz: str, after_ms: int) -> Iterator[int]:
    """Every tick strictly after ``after_ms`` (UTC ms), oldest first, without end."""
    z = zone(tz)
    it = croniter(expression, _wall(after_ms, z))
    last = after_ms
    while True:
        at = _instant(it.get_next(datetime), z)
        # On the second pass of a repeated hour, wall ticks map to their first (past)
        # occurrence; and a gap's ticks collapse into one. Both are filtered here.
        if at > last:
            last = at
            yield at


def ticks_at_or_before(expression: str, tz: str, at_ms: int) -> Iterator[int]:
    """Every tick at or before ``at_ms`` (UTC ms), newest first, without end."""
    z = zone(tz)
    wall = _wall(at_ms, z)
    newest = croniter(expression, wall + _INCLUSIVE).get_prev(datetime)
    # During the repeated hour's second pass, later wall ticks already happened (first pass).
    ahead = croniter(expression, newest)
    while True:
        nxt = ahead.get_next(datetime)
        if _instant(nxt, z) > at_ms:
            break
        newest = nxt
    it = croniter(expression, newest)
    current = _instant(newest, z)
    yield current
    while True:
        at = _instant(it.get_prev(datetime), z)
        if at < current:
            current = at
            yield at


def last_tick(expression: str, tz: str, now_ms: int) -> int:
    """The latest tick at or before ``now_ms`` (for ``conveyor cron ls``)."""
    return next(ticks_at_or_before(expression, tz, now_ms))


def next_ticks(expression: str, tz: str, now_ms: int, n: int) -> list[int]:
    """The next ``n`` ticks strictly after ``now_ms``, oldest first (for ``conveyor cron ls``)."""
    out: list[int] = []
    if n <= 0:
        return out
    for at in ticks_after(expression, tz, now_ms):
        out.append(at)
        if len(out) == n:
            break
    return out


def period_ms(expression: str, tz: str, tick_ms: int) -> int:
    """Time from a tick to the next one: sizes the tick's key window and the mark's TTL."""
    return next(ticks_after(expression, tz, tick_ms)) - tick_ms


def unique_window_ms(period: int) -> int:
    """How long a tick's de-duplication key lives: past the next tick, with margin (as before)."""
    return 2 * period + 60_000


def mark_ttl_ms(period: int) -> int:
    """How long the last-fired mark outlives its last firing: a removed schedule's mark goes.

    At least a week, and three periods, so a live schedule always fires (and refreshes it)
    long before it expires, and a fleet stopped over a weekend still knows what it missed.
    """
    return max(MARK_TTL_FLOOR_MS, 3 * period)


@dataclass(frozen=True)
class Firing:
    """What to fire now: ticks (UTC ms, oldest first) and how many missed ones were dropped.

    ``dropped`` counts, under ``misfire="all"``, the missed ticks older than the ``cap``
    newest ones; it stops counting at COUNT_LIMIT (``dropped_more`` then says there were
    more). Under ``skip`` and ``once`` older missed ticks are dropped by design, not counted.
    """

    ticks: tuple[int, ...]
    dropped: int = 0
    dropped_more: bool = False


NOTHING: Final = Firing(())


def to_fire(
    expression: str,
    tz: str,
    misfire: Misfire,
    last_fired_ms: int | None,
    now_ms: int,
    *,
    grace: float = 60.0,
    cap: int = DEFAULT_MISFIRE_CAP,
) -> Firing:
    """The ticks a worker should fire at ``now_ms`` (Redis' clock) given the last fired one.

    Cheap when nothing is due (one croniter step), since workers call it every second.
    """
    newest = ticks_at_or_before(expression, tz, now_ms)
    latest = next(newest)
    if last_fired_ms is not None and latest <= last_fired_ms:
        return NOTHING
    if last_fired_ms is None or misfire == "skip":
        return Firing((latest,)) if now_ms - latest <= grace * 1000 else NOTHING
    if misfire == "once":
        return Firing((latest,))
    kept = [latest]
    for at in newest:
        if at <= last_fired_ms or len(kept) == cap:
            break
        kept.append(at)
    kept.reverse()
    dropped, more = 0, False
    if len(kept) == cap:
        for at in ticks_after(expression, tz, last_fired_ms):
            if at >= kept[0]:
                break
            if dropped == COUNT_LIMIT:
                more = True
                break
            dropped += 1
    return Firing(tuple(kept), dropped, more)


@dataclass(frozen=True)
class SchedulePolicy:
    """A schedule's timing options, validated at decoration (ConfigurationError names each).

    ``CronSchedule`` can hold one of these and delegate ``due``/``to_fire``/``next_ticks``.
    """

    expression: str
    tz: str = "UTC"
    misfire: Misfire = "skip"
    misfire_cap: int = DEFAULT_MISFIRE_CAP
    grace: float = 60.0

    def __post_init__(self) -> None:
        validate_expression(self.expression)
        zone(self.tz)
        validate_misfire(self.misfire, self.misfire_cap)
        object.__setattr__(self, "grace", validate_grace(self.grace))

    def to_fire(self, last_fired_ms: int | None, now_ms: int) -> Firing:
        return to_fire(
            self.expression,
            self.tz,
            self.misfire,
            last_fired_ms,
            now_ms,
            grace=self.grace,
            cap=self.misfire_cap,
        )

    def next_ticks(self, now_ms: int, n: int = 1) -> list[int]:
        return next_ticks(self.expression, self.tz, now_ms, n)

    def last_tick(self, now_ms: int) -> int:
        return last_tick(self.expression, self.tz, now_ms)

    def period_ms(self, tick_ms: int) -> int:
        return period_ms(self.expression, self.tz, tick_ms)
