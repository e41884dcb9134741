"""Cron schedules: a task enqueued at every tick of a cron expression, once per tick.

Any number of workers evaluate every schedule; each tick is enqueued once, by one script
that checks a key named after the tick and moves the schedule's last-fired mark forward
(``cron_marks``), so a fleet never doubles a cron job and a lone worker never needs to be
elected. When, in which zone and after a misfire is ``schedules.SchedulePolicy``'s part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .schedules import DEFAULT_MISFIRE_CAP, Misfire, SchedulePolicy

if TYPE_CHECKING:
    from .task import Task


@dataclass(frozen=True)
class CronSchedule:
    """A task enqueued (without arguments) at every tick of a cron expression.

    Five fields (minute hour day-of-month month day-of-week), or six with seconds last,
    read in the wall-clock time of ``tz`` (an IANA zone, UTC by default).

    ``misfire`` says what happens to ticks missed while no worker ran: ``"skip"`` fires a
    tick only when a worker sees it within ``grace`` seconds; ``"once"`` fires the latest
    missed tick once; ``"all"`` fires each missed tick, at most ``misfire_cap`` of them.
    """

    expression: str
    task: Task[Any, Any]
    grace: float = 60.0
    tz: str = "UTC"
    misfire: Misfire = "skip"
    misfire_cap: int = DEFAULT_MISFIRE_CAP
    #: the validated timing options (ConfigurationError at decoration names the bad one)
    policy: SchedulePolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        policy = SchedulePolicy(
            self.expression, self.tz, self.misfire, self.misfire_cap, self.grace
        )
        object.__setattr__(self, "policy", policy)
