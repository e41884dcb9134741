"""Queue statistics read from XINFO, XPENDING, ZCARD and XLEN: what `conveyor stats` shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from .app import Conveyor
from .broker import Call, command, text
from .keys import GROUP, LEVELS, NAME_PATTERN, worker_key, workers_key


@dataclass(frozen=True)
class LevelStats:
    level: str
    length: int
    ready: int  # undelivered entries (the group's lag)
    running: int  # pending entries (delivered, not acked)
    consumers: int
    #: entries the group has read since it was made (Redis 7+; None before): the dashboard's
    #: throughput is its rise minus the rise of ``running``
    entries_read: int | None = None
    #: the group's last delivered entry: the next entry after it is the oldest waiting job
    last_delivered: str | None = None


@dataclass(frozen=True)
class QueueStats:
    queue: str
    levels: tuple[LevelStats, ...]
    delayed: int
    dead: int

    @property
    def ready(self) -> int:
        return sum(lv.ready for lv in self.levels)

    @property
    def running(self) -> int:
        return sum(lv.running for lv in self.levels)

    @property
    def consumers(self) -> int:
        return max((lv.consumers for lv in self.levels), default=0)


def _group(reply: Any) -> dict[str, Any] | None:
    if isinstance(reply, Exception) or not reply:
        return None
    for g in reply:
        info = _pairs([x for kv in g.items() for x in kv]) if isinstance(g, dict) else _pairs(g)
        if info.get("name") == GROUP:
            return info
    return None


def _pairs(flat: Any) -> dict[str, Any]:
    it = iter(flat)
    # Values keep their type: XINFO's integers stay ints and an unknown lag stays None.
    return {text(k): text(v) if isinstance(v, bytes) else v for k, v in zip(it, it, strict=True)}


def discover_queues(app: Conveyor) -> list[str]:
    """Queues that have keys in this namespace, found with SCAN (never KEYS)."""
    prefix = f"{app.namespace}:{{"
    found = set()
    for key in app.broker.client.scan_iter(match=f"{prefix}*", count=1000):
        name = text(key)[len(prefix) :].split("}", 1)[0]
        if NAME_PATTERN.fullmatch(name):
            found.add(name)
    return sorted(found)


def queue_stats(app: Conveyor, queue: str) -> QueueStats:
    keys = app.keys(queue)
    calls: list[Call[Any]] = []
    for stream in keys.streams:
        calls.append(command("XLEN", stream))
        calls.append(command("XINFO", "GROUPS", stream, accepts_errors=True))
    calls += [command("ZCARD", keys.delayed), command("XLEN", keys.dead)]
    replies = app.broker.call_many(calls)
    levels = []
    for i, level in enumerate(LEVELS):
        length = int(replies[2 * i])
        group = _group(replies[2 * i + 1])
        if group is None:  # no worker made the group yet: nothing read
            levels.append(LevelStats(level, length, length, 0, 0, entries_read=0))
            continue
        lag = group.get("lag")
        ready = int(lag) if lag is not None else _undelivered(app, keys.stream(level), group)
        # Redis 7 reports nil for a group that has read nothing; 6.2 has no such field.
        read = int(group.get("entries-read") or 0) if "entries-read" in group else None
        levels.append(
            LevelStats(
                level,
                length,
                ready,
                int(group["pending"]),
                int(group["consumers"]),
                read,
                str(group["last-delivered-id"]),
            )
        )
    return QueueStats(queue, tuple(levels), int(replies[-2]), int(replies[-1]))


def _undelivered(app: Conveyor, stream: str, group: dict[str, Any]) -> int:
    """Lag for servers without XINFO lag (6.2): count entries after last-delivered-id."""
    start = "(" + str(group["last-delivered-id"])
    try:
        return len(app.broker.client.xrange(stream, start, "+", count=100_000) or [])
    except redis.ResponseError:
        return 0


@dataclass(frozen=True)
class LiveWorker:
    """A worker whose heartbeat is current, with what it said about itself."""

    id: str
    info: dict[str, Any]

    @property
    def queues(self) -> list[str]:
        queues = self.info.get("queues")
        return [str(q) for q in queues] if isinstance(queues, list) else []


def live_workers(app: Conveyor) -> list[LiveWorker]:
    """Workers of the namespace whose info key has not expired, from the ``{~workers}``
    registry. The key's TTL (twice the lease) is what says a worker is alive, so a member
    the heartbeat script has not pruned yet is not counted once its key is gone."""
    members = [text(m) for m in app.broker.client.zrange(workers_key(app.namespace), 0, -1)]
    if not members:
        return []
    infos = app.broker.call_many(
        [command("GET", worker_key(app.namespace, m), accepts_errors=True) for m in members]
    )
    live = []
    for member, raw in zip(members, infos, strict=True):
        if raw is None or isinstance(raw, Exception):
            continue
        try:
            info = json.loads(raw)
        except ValueError:
            info = {}
        live.append(LiveWorker(member, info if isinstance(info, dict) else {}))
    return live


def snapshot(app: Conveyor, queues: list[str]) -> dict[str, Any]:
    """Everything ``conveyor stats --json`` prints: per queue counts, stream length and live
    workers serving it, and the namespace's live workers."""
    workers = live_workers(app)
    rows = []
    for q in queues:
        s = queue_stats(app, q)
        rows.append(
            {
                "queue": q,
                "ready": s.ready,
                "running": s.running,
                "delayed": s.delayed,
                "dead": s.dead,
                "consumers": s.consumers,
                "length": sum(lv.length for lv in s.levels),
                "workers": sum(1 for w in workers if q in w.queues),
            }
        )
    return {
        "namespace": app.namespace,
        "queues": rows,
        "workers": [{"id": w.id, **w.info} for w in workers],
    }
