"""The schedules of an app as rows, with their last and next ticks on Redis' clock: what
`conveyor cron ls` and the dashboard's Cron page both show (kept out of the CLI, so the
dashboard does not import click's commands).

"Last fired" is the schedule's mark in Redis (what a worker last enqueued); "last due" is the
latest tick by the expression. When the last due tick is later than the last fired one, the
row says how many were missed (a worker was down, or the schedule's queue has no worker).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from . import cron_marks
from .app import Conveyor
from .broker import command
from .cron import CronSchedule
from .schedules import COUNT_LIMIT, ticks_after, zone


def schedule_rows(app: Conveyor, next_n: int) -> list[dict[str, Any]]:
    """One dict per schedule: the same data the table and ``--json`` show."""
    if not app.schedules:
        return []
    calls: list[Any] = [command("TIME", parse=_time_ms)]
    calls += [
        cron_marks.read_mark(app.keys(s.task.options.queue), s.task.name) for s in app.schedules
    ]
    replies = app.broker.call_many(calls)
    now_ms: int = replies[0]
    return [
        _row(s, mark, now_ms, next_n) for s, mark in zip(app.schedules, replies[1:], strict=True)
    ]


def _row(s: CronSchedule, mark: int | None, now_ms: int, next_n: int) -> dict[str, Any]:
    policy = s.policy
    last_due = policy.last_tick(now_ms)
    upcoming = policy.next_ticks(now_ms, next_n)
    missed, more = _missed(s, mark, last_due)
    tz = zone(policy.tz)
    return {
        "task": s.task.name,
        "queue": s.task.options.queue,
        "schedule": s.expression,
        "tz": policy.tz,
        "misfire": policy.misfire
        + (f" (cap {policy.misfire_cap})" if policy.misfire == "all" else ""),
        "last_due": _utc(last_due),
        "last_fired": _utc(mark) if mark is not None else None,
        "missed": missed,
        "missed_more": more,
        "next": [_utc(t) for t in upcoming],
        "next_local": [
            datetime.fromtimestamp(t / 1000, tz=tz).isoformat(timespec="seconds") for t in upcoming
        ],
    }


def _missed(s: CronSchedule, mark: int | None, last_due: int) -> tuple[int, bool]:
    """Ticks due after the last fired one, up to the last due (counted up to a limit)."""
    if mark is None or last_due <= mark:
        return 0, False
    count = 0
    for at in ticks_after(s.policy.expression, s.policy.tz, mark):
        if at > last_due:
            return count, False
        if count == COUNT_LIMIT:
            return count, True
        count += 1
    return count, False


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _time_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000
