"""What the dashboard's pages show, read through the package's own read APIs (stats, history,
dead letters, job handles) plus the few reads only a page needs: a job's entry fields, the
delayed set, a worker's heartbeat and running jobs.

Every value a page shows of a job's data goes through ``app.redacted`` first.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .. import dead_letters, history, stats
from ..app import Conveyor
from ..broker import Call, command, text
from ..job import JobInfo, JobState
from ..keys import GROUP, LEVELS, job_id_for, parse_job_id, workers_key
from ..progress import Progress
from .series import Sample, Series, finished_count, oldest_wait_s

#: Dead letters searched for a job id when its entry is gone from the ready streams.
DEAD_SEARCH = 1000


@dataclass(frozen=True)
class QueueRow:
    queue: str
    ready: int
    wait_s: float
    running: int
    delayed: int
    dead: int
    done_kept: int  # finished entries still in the ready streams (kept by retention)
    workers: int


def _time_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def overview(app: Conveyor, queues: list[str], series: Series) -> list[QueueRow]:
    """One row per queue; feeds ``series`` when a sample is due."""
    workers = stats.live_workers(app)
    queues = sorted(set(queues).union(*(w.queues for w in workers)))
    all_stats = [stats.queue_stats(app, q) for q in queues]
    calls: list[Call[Any]] = [command("TIME", parse=_time_ms)]
    for s in all_stats:
        keys = app.keys(s.queue)
        for lv in s.levels:
            start = "(" + (lv.last_delivered or "0-0")
            calls.append(command("XRANGE", keys.stream(lv.level), start, "+", "COUNT", 1))
    replies = app.broker.call_many(calls)
    now_ms: int = replies[0]
    rows = []
    samples = {}
    at = time.monotonic()
    for i, s in enumerate(all_stats):
        firsts = replies[1 + i * len(LEVELS) : 1 + (i + 1) * len(LEVELS)]
        oldest = [text(r[0][0]) if r else None for r in firsts]
        wait = oldest_wait_s(now_ms, oldest) if s.ready else 0.0
        length = sum(lv.length for lv in s.levels)
        rows.append(
            QueueRow(
                s.queue,
                s.ready,
                wait,
                s.running,
                s.delayed,
                s.dead,
                max(0, length - s.ready - s.running),
                sum(1 for w in workers if s.queue in w.queues),
            )
        )
        samples[s.queue] = Sample(at, finished_count(s), wait)
    if series.due(at):
        series.add(samples)
    return rows


# -- jobs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    number: int | None
    at_ms: int | None
    worker: str
    error: str


@dataclass
class JobView:
    info: JobInfo
    queue: str
    source: str | None = None  # where its fields were found
    fields: dict[str, str] = field(default_factory=dict)  # redacted
    attempts: list[Attempt] = field(default_factory=list)
    progress: Progress | None = None
    dead_entry: str | None = None

    @property
    def task(self) -> str:
        return self.fields.get("task") or (self.info.record.task if self.info.record else "") or ""

    def pretty(self, name: str) -> str | None:
        """A redacted JSON field (args, kwargs, result) indented for reading."""
        raw = self.fields.get(name)
        if raw is None:
            return None
        try:
            return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
        except ValueError:
            return raw  # the redaction hook may return text that is not JSON


def job_view(app: Conveyor, job_id: str) -> JobView:
    """Everything the job page shows; ConfigurationError for a string that is no job id."""
    location = parse_job_id(job_id)
    handle = app.job(job_id)
    info = handle.info()
    view = JobView(info, location.queue)
    raw, view.source, view.dead_entry = _fields(app, info, location.level, location.entry_id)
    rec = info.record
    shown = dict(raw)
    if rec is not None and info.state is JobState.DONE:
        shown["result"] = json.dumps(rec.result)
    view.fields = app.redacted(shown) if shown else {}
    view.attempts = _attempts(raw)
    if info.state is not JobState.UNKNOWN:
        view.progress = handle.progress()
    return view


def _fields(
    app: Conveyor, info: JobInfo, level: str | None, entry_id: str | None
) -> tuple[dict[str, str], str | None, str | None]:
    """The job's fields: from the delayed set's payloads, the entry its record names, the
    entry its id names, or its dead letter (searched among the newest)."""
    keys = app.keys(parse_job_id(info.id).queue)
    payload = app.broker.client.hget(keys.payloads, info.id)
    if payload:
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}, "delayed set", None
    if info.state is JobState.DEAD:  # its dead letter holds every attempt
        dead = _dead_letter(app, keys.queue, info.id)
        if dead is not None:
            return dict(dead.fields), "dead letters", dead.entry_id
    rec = info.record
    places = []
    if rec is not None and rec.level in LEVELS and rec.entry:
        places.append((rec.level, rec.entry))
    if level is not None and entry_id is not None:
        places.append((level, entry_id))
    for lv, entry in places:
        found = app.broker.client.xrange(keys.stream(lv), entry, entry) or []
        if found:
            fields = {text(k): text(v) for k, v in (found[0][1] or {}).items()}
            if (fields.get("id") or job_id_for(keys.queue, lv, entry)) == info.id:
                return fields, f"ready stream ({lv}, entry {entry})", None
    if info.state in (JobState.EXPIRED, JobState.UNKNOWN):
        dead = _dead_letter(app, keys.queue, info.id)
        if dead is not None:
            return dict(dead.fields), "dead letters", dead.entry_id
    return {}, None, None


def _dead_letter(app: Conveyor, queue: str, job_id: str) -> dead_letters.DeadJob | None:
    """The job's dead letter, among the newest DEAD_SEARCH (the dead-letter step writes the
    job's id into every entry)."""
    for n, dead in enumerate(dead_letters.find(app, queue, batch=200)):
        if n >= DEAD_SEARCH:
            return None
        if dead.job_id == job_id:
            return dead
    return None


def _attempts(fields: dict[str, str]) -> list[Attempt]:
    raw = fields.get("dead_history") or fields.get("history")
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    out = []
    for a in items if isinstance(items, list) else []:
        if isinstance(a, dict):
            at = a.get("at")
            number = a.get("attempt")
            out.append(
                Attempt(
                    number if isinstance(number, int) else None,
                    at if isinstance(at, int) else None,
                    str(a.get("worker", "")),
                    str(a.get("error", "")),
                )
            )
    return out


def recent_jobs(
    app: Conveyor, queue: str, task: str | None, state: str | None, limit: int
) -> list[history.HistoryEntry]:
    """The newest jobs of a queue's history, of one task and in one state when asked."""
    entries = history.recent(app, queue, limit if state is None else limit * 5, task or None)
    if state:
        entries = [e for e in entries if e.info.state.value == state]
    return entries[:limit]


# -- delayed, workers ---------------------------------------------------------------------
@dataclass(frozen=True)
class DelayedRow:
    job_id: str
    task: str
    due_in_s: float
    attempt: str
    retrying: bool


def delayed(app: Conveyor, queue: str, limit: int) -> list[DelayedRow]:
    """The jobs due soonest in the delayed set (scheduled ones and retries in backoff)."""
    keys = app.keys(queue)
    replies = app.broker.call_many(
        [
            command("TIME", parse=_time_ms),
            command("ZRANGE", keys.delayed, 0, limit - 1, "WITHSCORES"),
        ]
    )
    now_ms: int = replies[0]
    flat = replies[1] or []
    # RESP2 replies alternate member and score; RESP3 replies are pairs.
    if flat and isinstance(flat[0], list | tuple):
        pairs = [(text(m), float(s)) for m, s in flat]
    else:
        pairs = [(text(m), float(s)) for m, s in zip(flat[::2], flat[1::2], strict=True)]
    payloads = app.broker.client.hmget(keys.payloads, [m for m, _ in pairs]) if pairs else []
    rows = []
    for (job_id, due), raw in zip(pairs, payloads, strict=True):
        data: dict[str, Any] = {}
        if raw:
            try:
                loaded = json.loads(raw)
                data = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                data = {}
        attempt = str(data.get("attempt", "1"))
        due_in = (due - now_ms) / 1000
        rows.append(DelayedRow(job_id, str(data.get("task", "?")), due_in, attempt, attempt != "1"))
    return rows


@dataclass(frozen=True)
class WorkerRow:
    id: str
    queues: list[str]
    concurrency: Any
    heartbeat_age_s: float | None
    running: int
    running_jobs: list[str]
    info: dict[str, Any]


#: Running jobs listed per worker and stream.
RUNNING_SHOWN = 10


def workers(app: Conveyor) -> list[WorkerRow]:
    """Each live worker with its queues, concurrency, heartbeat age and running jobs."""
    live = stats.live_workers(app)
    if not live:
        return []
    ns = app.namespace
    head = app.broker.call_many(
        [
            command("TIME", parse=_time_ms),
            command("ZMSCORE", workers_key(ns), *[w.id for w in live]),
        ]
    )
    now_ms: int = head[0]
    beats = head[1] or []
    # XPENDING's extended form, through redis-py's own parser for it.
    pipe = app.broker.client.pipeline(transaction=False)
    where: list[tuple[int, str, str]] = []
    for i, w in enumerate(live):
        for q in w.queues:
            for level in LEVELS:
                stream = app.keys(q).stream(level)
                pipe.xpending_range(stream, GROUP, "-", "+", RUNNING_SHOWN, consumername=w.id)
                where.append((i, q, level))
    pending = pipe.execute(raise_on_error=False) if where else []
    found: list[tuple[int, str, str, str]] = []
    for (i, q, level), reply in zip(where, pending, strict=True):
        if isinstance(reply, Exception) or not reply:
            continue  # no such stream or group yet
        for item in reply:
            found.append((i, q, level, text(item["message_id"])))
    # A job that moved (retried, replayed, signed) carries its id in the entry's fields.
    ids = app.broker.call_many(
        [command("XRANGE", app.keys(q).stream(lv), e, e) for _, q, lv, e in found]
    )
    running: list[list[str]] = [[] for _ in live]
    for (i, q, level, entry), reply in zip(found, ids, strict=True):
        fields = {text(k): text(v) for k, v in (reply[0][1] if reply else {}).items()}
        running[i].append(fields.get("id") or job_id_for(q, level, entry))
    rows = []
    for i, w in enumerate(live):
        beat = beats[i] if i < len(beats) else None
        rows.append(
            WorkerRow(
                w.id,
                w.queues,
                w.info.get("concurrency", "?"),
                (now_ms - float(beat)) / 1000 if beat is not None else None,
                len(running[i]),
                running[i],
                w.info,
            )
        )
    return rows
