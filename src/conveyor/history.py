"""Processing history: the recent entries of a queue's ready streams, and replays of them.

Ready streams keep finished entries (see Retention) so what ran, with what arguments and
when, can be read back and run again while debugging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .app import Conveyor
from .broker import Call, operations, text
from .job import JobInfo, interpret
from .keys import LEVELS, job_id_for

#: Fields a replay copies; id, attempt and history start afresh.
REPLAYED_FIELDS = ("version", "task", "args", "kwargs", "sig")


@dataclass(frozen=True)
class HistoryEntry:
    level: str
    entry_id: str
    fields: dict[str, str]
    info: JobInfo

    @property
    def job_id(self) -> str:
        return self.info.id

    @property
    def task(self) -> str:
        return self.fields.get("task", "")


def recent(
    app: Conveyor, queue: str, limit: int = 20, task: str | None = None
) -> list[HistoryEntry]:
    """Newest entries first, across priority levels, each with the job's current state."""
    keys = app.keys(queue)
    rows: list[tuple[str, str, dict[str, str]]] = []
    for level in LEVELS:
        raw = app.broker.client.xrevrange(keys.stream(level), "+", "-", count=limit * 4) or []
        for entry_id, fields in raw:
            f = {text(k): text(v) for k, v in (fields or {}).items()}
            if task is None or f.get("task") == task:
                rows.append((level, text(entry_id), f))
    rows.sort(key=lambda row: tuple(int(p) for p in row[1].split("-")), reverse=True)
    rows = rows[:limit]
    calls: list[Call[Any]] = []
    for level, entry_id, f in rows:
        job_id = f.get("id") or job_id_for(queue, level, entry_id)
        calls.append(operations.status(keys, job_id, level, entry_id))
    states = app.broker.call_many(calls)
    return [
        HistoryEntry(
            level, entry_id, f, interpret(f.get("id") or job_id_for(queue, level, entry_id), w)
        )
        for (level, entry_id, f), w in zip(rows, states, strict=True)
    ]


def replay(app: Conveyor, queue: str, level: str, entry_id: str) -> str | None:
    """Run a past job again as a new job with the same task and arguments; None if gone."""
    keys = app.keys(queue)
    raw = app.broker.client.xrange(keys.stream(level), entry_id, entry_id) or []
    if not raw:
        return None
    fields = {text(k): v for k, v in (raw[0][1] or {}).items()}
    copy: dict[str, Any] = {k: fields[k] for k in REPLAYED_FIELDS if k in fields}
    copy["attempt"] = 1
    new_entry: str = app.broker.call(operations.enqueue(keys, level, copy))
    return job_id_for(queue, level, new_entry)
