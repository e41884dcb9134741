"""Processing history: the recent entries of a queue's ready streams, and replays of them.

Ready streams keep finished entries (see Retention) so what ran, with what arguments and
when, can be read back and run again while debugging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import producer
from .app import Conveyor
from .broker import Call, operations, text
from .errors import ReplayRefused
from .job import JobInfo, interpret
from .keys import LEVELS, job_id_for

#: Fields a replay copies; id, attempt, history and the signature start afresh.
REPLAYED_FIELDS = ("version", "task", "args", "kwargs")


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

    @property
    def attempt(self) -> int:
        """The entry's attempt number (producers leave out a first attempt's field)."""
        raw = self.fields.get("attempt", "1")
        return int(raw) if raw.isdigit() else 1


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


def replay(
    app: Conveyor, queue: str, level: str, entry_id: str, *, force: bool = False
) -> str | None:
    """Run a past job again as a new job with the same task and arguments; None if gone.

    Refused while the job has not ended (queued, running, retrying): replaying it then runs
    it twice, which ``force`` accepts. With signing on, the copy is signed afresh only if
    the entry carries a valid signature of this app.
    """
    keys = app.keys(queue)
    raw = app.broker.client.xrange(keys.stream(level), entry_id, entry_id) or []
    if not raw:
        return None
    fields = {_raw(k): _raw(v) for k, v in (raw[0][1] or {}).items()}
    if not force:
        job_id = text(fields.get(b"id") or b"") or job_id_for(queue, level, entry_id)
        state = interpret(job_id, app.broker.call(operations.status(keys, job_id, level, entry_id)))
        if not state.state.finished:
            raise ReplayRefused(
                f"job {job_id} is {state.state.value}, not ended; a replay now would run it "
                "twice. Wait until it is done or dead, or pass --force"
            )
    if app.signer is not None and not app.signer.verify(fields, queue, level):
        raise ReplayRefused(
            f"entry {entry_id} does not carry a valid signature of this app's keys; not replayed"
        )
    copy: dict[str, bytes | str | int] = {
        k: fields[k.encode()] for k in REPLAYED_FIELDS if k.encode() in fields
    }
    copy["attempt"] = 1
    # A signed copy gets an id of its own, so a copy of *it* is known once it has ended.
    new_id: str = app.broker.call(producer.readd(keys, level, copy, app.signer))
    return new_id


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
