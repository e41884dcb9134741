"""The dead-letter stream of a queue: list, inspect, replay and purge jobs that failed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .app import Conveyor
from .broker import command, operations, text
from .keys import LEVELS

#: Fields a replayed job keeps; everything the dead-letter step added is dropped.
WIRE_FIELDS = ("version", "id", "task", "args", "kwargs", "sig", "enqueued_at")


@dataclass(frozen=True)
class DeadJob:
    entry_id: str
    fields: dict[str, str]

    @property
    def job_id(self) -> str:
        return self.fields.get("id", "")

    @property
    def task(self) -> str:
        return self.fields.get("task", "")

    @property
    def reason(self) -> str:
        return self.fields.get("dead_reason", "")

    @property
    def error(self) -> str:
        return self.fields.get("dead_error", "")

    @property
    def level(self) -> str:
        origin = self.fields.get("dead_from", "normal:")
        level = origin.split(":", 1)[0]
        return level if level in LEVELS else "normal"


def _entry(raw: Any) -> DeadJob:
    entry_id, fields = raw
    return DeadJob(text(entry_id), {text(k): text(v) for k, v in fields.items()})


def list_dead(app: Conveyor, queue: str, limit: int = 20) -> list[DeadJob]:
    """Newest first."""
    raw = app.broker.client.xrevrange(app.keys(queue).dead, "+", "-", count=limit) or []
    return [_entry(e) for e in raw]


def iter_dead(app: Conveyor, queue: str, batch: int = 500) -> Iterator[DeadJob]:
    """Oldest first, the whole stream, in batches."""
    start = "-"
    while True:
        raw = app.broker.client.xrange(app.keys(queue).dead, start, "+", count=batch) or []
        if not raw:
            return
        for e in raw:
            yield _entry(e)
        start = "(" + text(raw[-1][0])


def get_dead(app: Conveyor, queue: str, entry_id: str) -> DeadJob | None:
    raw = app.broker.client.xrange(app.keys(queue).dead, entry_id, entry_id) or []
    return _entry(raw[0]) if raw else None


def replay(app: Conveyor, queue: str, entry_id: str) -> str | None:
    """Put a dead job back on its ready stream with a fresh attempt count.

    Returns the job id, or None when the entry is gone (already replayed or purged).
    """
    job = get_dead(app, queue, entry_id)
    if job is None:
        return None
    fields = {k: job.fields[k] for k in WIRE_FIELDS if k in job.fields}
    fields["attempt"] = "1"
    job_id = job.job_id
    new = app.broker.call(operations.replay(app.keys(queue), entry_id, job.level, job_id, fields))
    return job_id if new else None


def purge(app: Conveyor, queue: str) -> int:
    """Delete every dead job of a queue; returns how many were deleted."""
    return int(app.broker.call(command("XTRIM", app.keys(queue).dead, "MAXLEN", 0)))
