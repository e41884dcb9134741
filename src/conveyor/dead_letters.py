"""The dead-letter stream of a queue: list, inspect, replay and purge jobs that failed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .app import Conveyor
from .broker import command, operations, text
from .errors import ReplayRefused
from .keys import LEVELS
from .signing import FIELD as SIGNATURE_FIELD
from .signing import resign

#: Fields the dead-letter step adds start with this; a replay drops them.
DEAD_PREFIX = "dead_"
#: Fields a replay starts afresh: a new first attempt, with no history (and a new signature).
RESET_FIELDS = ("attempt", "history", SIGNATURE_FIELD)


@dataclass(frozen=True)
class DeadJob:
    entry_id: str
    fields: dict[str, str]
    raw: dict[bytes, bytes] = field(default_factory=dict, repr=False, compare=False)

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

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every attempt the job made, newest last (the entry's own ``history`` field is the
        signed history it carried into its last attempt, kept unchanged for replays)."""
        raw = self.fields.get("dead_history")
        if not raw:
            return []
        try:
            attempts = json.loads(raw)
        except ValueError:
            return []
        return [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []

    def matches(self, task: str | None = None, reason: str | None = None) -> bool:
        return (task is None or self.task == task) and (reason is None or self.reason == reason)

    def original(self) -> dict[bytes, bytes]:
        """The fields the job had when it died, without what the dead-letter step added."""
        return {k: v for k, v in self.raw.items() if not k.startswith(DEAD_PREFIX.encode())}


def _entry(raw: Any) -> DeadJob:
    entry_id, fields = raw
    as_bytes = {_raw(k): _raw(v) for k, v in (fields or {}).items()}
    return DeadJob(text(entry_id), {text(k): text(v) for k, v in as_bytes.items()}, as_bytes)


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def find(
    app: Conveyor, queue: str, task: str | None = None, reason: str | None = None, batch: int = 500
) -> Iterator[DeadJob]:
    """Dead jobs of the queue matching ``task`` and ``reason`` (exact), newest first."""
    end = "+"
    while True:
        raw = app.broker.client.xrevrange(app.keys(queue).dead, end, "-", count=batch) or []
        for e in raw:
            job = _entry(e)
            if job.matches(task, reason):
                yield job
        if len(raw) < batch:
            return
        end = "(" + text(raw[-1][0])


def list_dead(
    app: Conveyor, queue: str, limit: int = 20, task: str | None = None, reason: str | None = None
) -> list[DeadJob]:
    """Newest first, at most ``limit``, matching the filters."""
    out: list[DeadJob] = []
    for job in find(app, queue, task, reason, batch=max(limit, 100)):
        if len(out) >= limit:
            break
        out.append(job)
    return out


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


#: Dead-letter reasons of signed copies of another job's entry: never replayed.
COPY_REASONS = frozenset({"replayed_ended_job", "duplicate_of_queued_job"})


def replay(app: Conveyor, queue: str, entry_id: str) -> str | None:
    """Put a dead job back on its ready stream with a fresh attempt count, same job id.

    Returns the job id, or None when the entry is gone (already replayed or purged). With
    signing on, the entry is re-signed for its new attempt only if its original fields carry
    a valid signature of this app: a forged entry written into the dead stream must not get
    a good signature from the operator's replay.
    """
    job = get_dead(app, queue, entry_id)
    if job is None:
        return None
    if app.signer is not None and not app.signer.verify(job.original(), queue, job.level):
        raise ReplayRefused(
            f"dead job {entry_id} does not carry a valid signature of this app's keys "
            "(altered, or written by something else); it was not replayed"
        )
    if not job.job_id:
        raise ReplayRefused(f"dead job {entry_id} has no job id; it was not replayed")
    if job.reason in COPY_REASONS:
        # Replaying the copy under its job's id would overwrite that job's own record.
        raise ReplayRefused(
            f"dead job {entry_id} is a copy of job {job.job_id}, which already ran or runs "
            "from another entry; it was not replayed (enqueue the task again to run it once more)"
        )
    fields: dict[str, bytes | str | int] = {}
    for name, value in job.original().items():
        key = name.decode(errors="replace")
        if key not in RESET_FIELDS:
            fields[key] = value
    fields["attempt"] = 1
    fields = resign(fields, app.signer, queue, job.level)
    new = app.broker.call(
        operations.replay(app.keys(queue), entry_id, job.level, job.job_id, fields)
    )
    return job.job_id if new else None


def purge(app: Conveyor, queue: str) -> int:
    """Delete every dead job of a queue; returns how many were deleted."""
    return int(app.broker.call(command("XTRIM", app.keys(queue).dead, "MAXLEN", 0)))


def delete(app: Conveyor, queue: str, entry_ids: Sequence[str]) -> int:
    """Delete the named dead jobs (one XDEL per batch); returns how many were there."""
    deleted = 0
    for start in range(0, len(entry_ids), 500):
        batch = entry_ids[start : start + 500]
        deleted += int(app.broker.call(command("XDEL", app.keys(queue).dead, *batch)))
    return deleted
