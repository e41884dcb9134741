"""Cron schedules: which tick is due (a pure function of the expression and Redis' clock).

Any number of workers evaluate every schedule; each tick is enqueued once, through a unique
key named after the tick, so a fleet never doubles a cron job and a lone worker never
needs to be elected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from croniter import croniter

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .task import Task


@dataclass(frozen=True)
class Tick:
    at_ms: int
    #: how long the tick's de-duplication key must live: past the next tick, with margin
    window_ms: int


@dataclass(frozen=True)
class CronSchedule:
    """A task enqueued (without arguments) at every tick of a cron expression, UTC.

    Five fields (minute hour day-of-month month day-of-week), or six with seconds last.

    A tick is fired when a worker sees it within ``grace`` seconds; ticks missed while no
    worker ran are skipped, not replayed in a burst.
    """

    expression: str
    task: Task[Any, Any]
    grace: float = 60.0

    def __post_init__(self) -> None:
        if len(self.expression.split()) not in (5, 6) or not croniter.is_valid(self.expression):
            raise ConfigurationError(
                f"invalid cron expression {self.expression!r}: use five fields (minute hour "
                "day-of-month month day-of-week) like '*/5 * * * *', or six with seconds "
                "last like '*/5 * * * * 30'"
            )

    def due(self, now_ms: int) -> Tick | None:
        """The latest tick at or before ``now_ms`` if it is within the grace period."""
        now = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
        prev: datetime = croniter(self.expression, now).get_prev(datetime)
        nxt: datetime = croniter(self.expression, prev).get_next(datetime)
        at_ms = int(prev.timestamp() * 1000)
        if now_ms - at_ms > self.grace * 1000:
            return None
        period_ms = int((nxt - prev).total_seconds() * 1000)
        return Tick(at_ms, 2 * period_ms + 60_000)

    def unique_key(self, tick: Tick) -> str:
        return f"cron:{self.task.name}:{tick.at_ms}"
