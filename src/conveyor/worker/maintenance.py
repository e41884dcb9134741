"""Upkeep that any live worker does for its queues, so no extra process has to exist.

- promote: due jobs move from the delayed set to their ready stream (Redis' clock decides);
- reclaim: jobs whose lease expired (their worker died) are taken over, and dead-lettered
  once they have been delivered more than ``max_deliveries`` times;
- trim: finished history is cut below the safe point, never an unfinished job;
- prune: consumers that left nothing pending and have been idle for long are removed.

Every step is idempotent and atomic, so any number of workers may run it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import cron_marks, schedules
from ..broker import command, operations, text
from ..cron import CronSchedule
from ..hooks import Enqueuing
from ..keys import GROUP, LEVELS
from .cancellation import cancel_and_wait

if TYPE_CHECKING:
    from .runtime import Worker

log = logging.getLogger("conveyor.maintenance")

PROMOTE_BATCH = 200
PRUNE_EVERY = 60.0
CRON_EVERY = 1.0
#: Most entries one trim script reads (see Maintenance.trim): about 1.5 ms of Redis time.
TRIM_STEP = 1000


class Maintenance:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._tasks: list[asyncio.Task[None]] = []
        #: per cron task, the Redis ms of its next tick: no read of Redis before then
        self._next_due: dict[str, int] = {}

    def start(self) -> None:
        w = self.worker
        self._tasks = [
            asyncio.create_task(self._every(self.promote, None), name="conveyor-promote"),
            asyncio.create_task(
                self._every(self.reclaim, w.settings.leases.reclaim_interval),
                name="conveyor-reclaim",
            ),
            asyncio.create_task(
                self._every(self.trim, w.settings.retention.trim_every), name="conveyor-trim"
            ),
            asyncio.create_task(self._every(self.prune, PRUNE_EVERY), name="conveyor-prune"),
        ]
        if self._schedules():
            self._tasks.append(
                asyncio.create_task(self._every(self.fire_cron, CRON_EVERY), name="conveyor-cron")
            )

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)

    async def _every(
        self, step: Callable[[], Awaitable[float | None]], interval: float | None
    ) -> None:
        while True:
            try:
                wait = await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed (will retry): %s", step.__name__, exc)
                wait = None
            await asyncio.sleep(wait if wait is not None else (interval or 1.0))

    async def promote(self) -> float:
        """Move due jobs; sleep until the next one is due (at most promote_every)."""
        w = self.worker
        cap = w.settings.promote_every
        sleep = cap
        for keys in w.keys.values():
            while True:
                ids, wait_ms = await w.broker.acall(operations.due(keys, PROMOTE_BATCH))
                if ids:
                    moved = await w.broker.acall(operations.promote(keys, ids))
                    log.debug("promoted %d due job(s) in %s", moved, keys.queue)
                if len(ids) < PROMOTE_BATCH:
                    break
            if wait_ms >= 0:
                sleep = min(sleep, wait_ms / 1000)
        return max(sleep, 0.005)

    def _schedules(self) -> list[CronSchedule]:
        w = self.worker
        return [s for s in w.app.schedules if s.task.options.queue in w.keys]

    async def fire_cron(self) -> float:
        """Fire each due schedule's ticks once, whichever worker gets there first; returns
        the seconds to sleep: until the next tick (on Redis' clock), at most CRON_EVERY, so
        a tick fires as it comes rather than up to a second late (a short ``grace`` holds).

        A schedule is looked at only once its next tick has come (``_next_due``), so an idle
        round costs one TIME. For those due, one pipeline reads their last-fired marks and
        one pipeline fires them: cron_fire.lua enqueues each tick at most once (its tick
        key) and moves the mark forward, which is what lets ``misfire="once"``/``"all"``
        know what was missed across restarts. A schedule removed from code is never
        fired again, so its mark and tick keys simply expire. When anything listens (the
        worker has a Lifecycle), each fire is an enqueue to the hooks: middleware may add
        fields (a producer span's trace context) and each job added is told ``enqueued``.
        """
        w = self.worker
        now_ms = await w.broker.acall(command("TIME", parse=_time_ms))
        due = [s for s in self._schedules() if self._next_due.get(s.task.name, 0) <= now_ms]
        if not due:
            return self._sleep(now_ms)
        marks: list[int | None] = await w.broker.acall_many(
            [cron_marks.read_mark(w.keys[s.task.options.queue], s.task.name) for s in due]
        )
        firing_now: list[CronSchedule] = []
        calls = []
        #: per schedule fired, what the hooks see of it (a producer span, ``enqueued``)
        told: list[Enqueuing | None] = []
        for schedule, mark in zip(due, marks, strict=True):
            task, policy = schedule.task, schedule.policy
            firing = policy.to_fire(mark, now_ms)
            if firing.dropped:
                log.warning(
                    "cron %s missed %d%s tick(s) beyond misfire_cap=%d; they are not run",
                    task.name,
                    firing.dropped,
                    "+" if firing.dropped_more else "",
                    policy.misfire_cap,
                )
            if not firing.ticks:  # fired by another worker, or missed under "skip"
                self._next_due[task.name] = policy.next_ticks(now_ms, 1)[0]
                continue
            period = policy.period_ms(firing.ticks[-1])
            firing_now.append(schedule)
            seen = None
            if w.lifecycle is not None:  # anything listens: hooks, metrics, tracing, events
                seen = w.app.hooks.enqueuing(task.name, task.options.queue, len(firing.ticks))
            told.append(seen)
            calls.append(
                cron_marks.fire(
                    w.keys[task.options.queue],
                    task.options.priority,
                    task.name,
                    firing.ticks,
                    unique_window_ms=schedules.unique_window_ms(period),
                    mark_ttl_ms=schedules.mark_ttl_ms(period),
                    max_bytes=w.app.max_payload_bytes,
                    signer=w.app.signer,
                    extra=seen.fields if seen is not None else None,
                )
            )
        if not calls:
            return self._sleep(now_ms)
        try:
            fired: list[cron_marks.Fired] = await w.broker.acall_many(calls)
        except BaseException as exc:
            for seen in told:
                if seen is not None:
                    seen.added((), exc)
            raise
        for schedule, result, seen in zip(firing_now, fired, told, strict=True):
            if seen is not None:
                name, queue = schedule.task.name, schedule.task.options.queue
                seen.added(((job_id, name, queue) for _, job_id in result.enqueued), None)
            for tick, job_id in result.enqueued:
                log.info(
                    "cron %s fired for its %d tick as job %s", schedule.task.name, tick, job_id
                )
            # Only after the fire succeeded: a failed round is tried again next second.
            self._next_due[schedule.task.name] = schedule.policy.next_ticks(now_ms, 1)[0]
        return self._sleep(now_ms)

    def _sleep(self, now_ms: int) -> float:
        names = [s.task.name for s in self._schedules()]
        soonest = min((self._next_due.get(n, now_ms) for n in names), default=now_ms)
        # 5 ms past the tick: Redis' clock must have reached it when the worker asks.
        return min(CRON_EVERY, max(0.005, (soonest - now_ms + 5) / 1000))

    async def reclaim(self) -> None:
        w = self.worker
        min_idle = int(w.settings.leases.timeout * 1000)
        for keys in w.keys.values():
            for level in LEVELS:
                count = max(1, w.free_slots())
                claimed, deleted = await w.broker.acall(
                    operations.reclaim(keys, level, w.consumer, min_idle, count)
                )
                if deleted:
                    log.error(
                        "%d pending job(s) of %s/%s were deleted from the stream by something "
                        "other than Conveyor (plain XTRIM/MAXLEN?): %s",
                        len(deleted),
                        keys.queue,
                        level,
                        ", ".join(deleted[:5]),
                    )
                # A claimed entry is a fetch like any other: a signed copy of an ended job,
                # read by a made-up consumer, must not run again because it came this way.
                await w.runner.check_ended(claimed)
                # A job cancelled while its worker was dead ends here, never runs again.
                claimed = await w.runner.drop_cancelled(claimed)
                for d in claimed:
                    log.info(
                        "reclaimed job %s/%s %s (delivery %d) after its lease expired",
                        keys.queue,
                        level,
                        d.entry_id,
                        d.deliveries,
                    )
                    w.dispatch(d)
        return None

    async def trim(self) -> None:
        """Trim every stream in steps of at most TRIM_STEP entries, up to max_trim a round.

        One trim script reads up to its cap of entries whatever it deletes, and holds Redis
        meanwhile: 10,000 entries cost 15-25 ms, which every ack and fetch waited for.
        """
        w = self.worker
        r = w.settings.retention
        step = min(r.max_trim, TRIM_STEP)
        streams = [(keys, level) for keys in w.keys.values() for level in LEVELS]
        budget = r.max_trim
        while streams and budget > 0:
            calls = [
                operations.trim(keys, level, r.keep_count, int(r.keep_seconds * 1000), step)
                for keys, level in streams
            ]
            deleted: list[int] = await w.broker.acall_many(calls)
            streams = [s for s, n in zip(streams, deleted, strict=True) if n >= step]
            budget -= step

    async def prune(self) -> None:
        """Delete consumers idle for 10 lease timeouts that hold nothing (checked atomically)."""
        w = self.worker
        idle_ms = int(w.settings.leases.timeout * 10_000)
        for keys in w.keys.values():
            stale: set[str] = set()
            for stream in keys.streams:
                consumers: Any = await w.broker.acall(
                    command(
                        "XINFO", "CONSUMERS", stream, GROUP, parse=_consumers, accepts_errors=True
                    )
                )
                for c in consumers:
                    if c["name"] != w.consumer and int(c["idle"]) > idle_ms:
                        stale.add(c["name"])
            for name in stale:
                if await w.broker.acall(operations.retire(keys, name)):
                    log.info("removed idle consumer %s from %s", name, keys.queue)


def _time_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _consumers(reply: Any) -> list[dict[str, Any]]:
    if isinstance(reply, Exception):
        return []  # no such stream or group yet
    out = []
    for c in reply:
        if isinstance(c, dict):
            out.append({text(k): text(v) for k, v in c.items()})
        else:
            it = iter(c)
            out.append({text(k): text(v) for k, v in zip(it, it, strict=True)})
    return out
