"""The fetch loop: read jobs for free slots and a small prefetch buffer, most urgent first.

Jobs are read with XREADGROUP (COUNT = free slots), higher priority levels first: in the
counts the previous fetch's plan found at each level, or through the fetch script (see
Fetcher._fetch); when nothing is ready the loop blocks on all the worker's streams at
once, on a connection of its own that stop() can unblock at once (on Redis Cluster, one per
node holding its streams: see broker/blocking.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import redis

from ..broker import operations
from ..broker.blocking import BlockingReader
from ..broker.operations import Delivery, Fetched
from ..errors import ConnectionFailed
from ..keys import QueueKeys
from .completer import MAX_BATCH
from .transitions import RECONNECT

if TYPE_CHECKING:
    from .runtime import Worker

log = logging.getLogger("conveyor.worker")

#: An adaptive prefetch buffer holds at most about this much work, at the recent mean job
#: time (see WorkerSettings.prefetch): enough to cover a fetch's round trip behind other
#: workers' calls, too little to sit on jobs an idle worker could start.
PREFETCH_SECONDS = 0.05
#: The adaptive buffer's floor cap (2 x slots above it): enough for one fetch to cover the
#: next one's round trip at tens of thousands of jobs a second, small enough that a crash
#: re-runs few jobs and one fetch's reply is parsed in well under a millisecond.
PREFETCH_CAP = 256
#: Most jobs one fetch script returns: a large reply parsed in one go would stall the
#: event loop, and with it the acks, for longer than the fetch saves.
MAX_FETCH = 128


def largest_prefetch(slots: int) -> int:
    """The most an adaptive prefetch buffer holds for ``slots`` slots."""
    return max(2 * slots, PREFETCH_CAP)


def most_held(slots: int) -> int:
    """The largest pending list one worker keeps with an adaptive prefetch: its slots + its
    prefetch + one ack batch. It is also the most a SIGKILLed worker can have run again
    (see Fetcher.free_slots)."""
    return slots + largest_prefetch(slots) + MAX_BATCH


class Fetcher:
    def __init__(self, worker: Worker) -> None:
        self.w = worker
        # Mean run time of recent jobs; starts long, so little or nothing is prefetched
        # until jobs have shown they are short.
        self.mean_job_seconds = 1.0
        self._blocker = BlockingReader(worker.broker)
        #: each queue's cancelled set, counted with every blocking read (no extra round trip)
        self._cancelled = {queue: keys.cancelled for queue, keys in worker.keys.items()}
        #: whether fetches may be planned (fetch_plan.lua needs XINFO's lag: Redis 7.0+)
        self._planned: bool | None = None
        #: per queue, what the last fetch's plan found waiting at each level (see _fetch)
        self._plans: dict[str, operations.Plan] = {}
        #: queues whose last fetch came back full: more are waiting, so plans pay off
        self._backlog: set[str] = set()

    def job_took(self, seconds: float) -> None:
        self.mean_job_seconds += 0.1 * (seconds - self.mean_job_seconds)

    def _worth_fetching(self, free: int) -> bool:
        """Fetch at once for an idle slot; top up the prefetch buffer only in batches.

        Without this, every finished job would trigger a fetch of one job.
        """
        w = self.w
        idle = len(w.running) < w.settings.concurrency and not w.handoff
        return idle or free >= max(1, self.prefetch_limit() // 4)

    def prefetch_limit(self) -> int:
        fixed = self.w.settings.prefetch
        if fixed is not None:
            return fixed
        slots = self.w.settings.concurrency
        worth = int(PREFETCH_SECONDS * slots / self.mean_job_seconds)
        return min(worth, largest_prefetch(slots))

    def free_slots(self) -> int:
        """How many more jobs to fetch: free slots plus room in the prefetch buffer, less the
        finished jobs waiting for their acks beyond one ack batch.

        Every job this worker holds is running, waiting in the buffer or waiting for its
        ack, so its pending list stays within slots + prefetch + MAX_BATCH: when acks fall
        behind (a busy event loop, a slow Redis) fetching waits for them, and a crash can
        only run again what a worker could have had in flight.
        """
        w = self.w
        capacity = w.settings.concurrency + self.prefetch_limit()
        behind = max(0, w.completer.unacked - MAX_BATCH)
        return min(MAX_FETCH, capacity - len(w.running) - len(w.handoff) - behind)

    async def loop(self) -> None:
        w = self.w
        turn = 0
        queues = list(w.keys)
        failures = 0
        #: a fetched batch whose check (check_ended) has not got through yet: it is held
        #: here, never fetched over, until Redis answers or the worker stops
        unchecked: list[Delivery] = []
        while not w.stopping.is_set():
            if unchecked:
                try:
                    await w.runner.check_ended(unchecked)
                except ConnectionFailed as exc:
                    failures += 1
                    delay = RECONNECT.delay(failures)
                    log.warning("Redis unreachable, retrying in %.2fs: %s", delay, exc)
                    await self._pause(delay)
                    continue
                failures = 0
                for d in unchecked:
                    w.dispatch(d)
                unchecked = []
                await asyncio.sleep(0)
                continue
            free = self.free_slots()
            if free <= 0 or not self._worth_fetching(free):
                w.slot_free.clear()
                await w.slot_free.wait()
                continue
            try:
                got: list[Delivery] = []
                for i in range(len(queues)):
                    keys = w.keys[queues[(turn + i) % len(queues)]]
                    batch = await self._fetch(keys, free - len(got))
                    got.extend(batch)
                    if batch.marked:
                        got.extend(await w.runner.drop_cancelled(batch.marked))
                    if len(got) >= free:
                        break
                turn += 1
                if not got:
                    if w.stopping.is_set():
                        break
                    got = await self._blocker.read(
                        w.streams, w.consumer, 1, w.settings.block_ms, self._cancelled
                    )
                    marked = [d for d in got if d.queue in self._blocker.marked]
                    if marked:
                        got = [d for d in got if d.queue not in self._blocker.marked]
                        got += await w.runner.drop_cancelled(marked)
                failures = 0
                if got:
                    unchecked = got
                    await w.runner.check_ended(got)
                    unchecked = []
            except ConnectionFailed as exc:
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning("Redis unreachable, retrying in %.2fs: %s", delay, exc)
                await self._pause(delay)
                continue
            except redis.ResponseError as exc:
                if not operations.group_lost(exc):
                    raise
                log.error(
                    "consumer group missing: Redis lost this queue's state (restarted without "
                    "persistence, or the stream was deleted); jobs that were waiting or running "
                    "in it are gone. Creating the group again so new jobs run; run Redis with "
                    "appendonly yes (and, under Sentinel, persistence on every server)"
                )
                await w.ensure_groups()
                continue
            for d in got:
                w.dispatch(d)
            await asyncio.sleep(0)  # let the slots start on these before the next fetch
        # Stopping with a batch still unchecked: the handoff is closed, so it is not run;
        # shutdown requeues it with the rest of the handoff (its leases are still ours). The
        # same for what a blocking read still running at stop brought.
        with contextlib.suppress(ConnectionFailed):
            unchecked += await self._blocker.drain()
        for d in unchecked:
            w.dispatch(d)

    async def _fetch(self, keys: QueueKeys, count: int) -> Fetched:
        """New jobs of one queue, most urgent level first, in one round trip.

        fetch.lua reads inside Redis, which copies every entry into Lua and back: half of
        Redis' time per job. So while a backlog lasts (the last fetch came back full), each
        fetch also asks fetch_plan.lua, after its reads, how many new entries wait at each
        level, and the next fetch reads by that plan with plain XREADGROUPs (asking for the
        next plan after them); the least urgent level it names is read up to the free
        count, so jobs added there since are read too. A plan
        is a few milliseconds old when used: a job added meanwhile at a more urgent level
        than any it names waits for the next fetch. Where the plan cannot tell (a cancel
        pending, a lag Redis does not know, Redis 6.2) or found nothing, fetch.lua reads.
        A cancel marked between the plan and the reads is caught by the plan asked after
        them (it says a cancel is pending), and this batch's jobs go through the cancel
        check (``marked``) before any runs.
        """
        w = self.w
        queue = keys.queue
        if self._planned is None:
            self._planned = (await w.broker.aserver_info()).version >= (7, 0, 0)
        fetch = operations.fetch(keys, w.consumer, count)
        if not self._planned:
            return await w.broker.acall(fetch)
        plan = self._plans.pop(queue, None)
        reads = _within(plan.reads, count) if plan is not None and plan.reads else []
        ask = operations.fetch_plan(keys, MAX_FETCH)
        if not reads:
            if queue not in self._backlog:  # a fetch that drained the queue: no plan
                out = await w.broker.acall(fetch)
            else:
                out, self._plans[queue] = await w.broker.acall_many([fetch, ask])
            self._note(queue, len(out) + len(out.marked), count)
            return out
        calls = [operations.read_level(keys, level, w.consumer, n) for level, n in reads]
        *batches, self._plans[queue] = await w.broker.acall_many([*calls, ask])
        out = Fetched(d for batch in batches for d in batch)
        out.marked = []
        self._note(queue, len(out), count)
        if self._plans[queue].cancels:
            out.marked, out[:] = list(out), []  # read past a cancel mark: checked first
        return out

    def _note(self, queue: str, got: int, count: int) -> None:
        """A fetch that came back full leaves jobs waiting: the next one asks for a plan."""
        if got >= count:
            self._backlog.add(queue)
        else:
            self._backlog.discard(queue)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.w.stopping.wait(), seconds)

    def unblock(self) -> None:
        """End the blocking reads now (CLIENT UNBLOCK from the main connection)."""
        self._blocker.unblock()

    async def close(self) -> None:
        await self._blocker.close()


def _within(plan: list[tuple[str, int]], count: int) -> list[tuple[str, int]]:
    """The plan's reads, most urgent first, ``count`` entries in all: the last level read
    gets what the others leave, so jobs added there since the plan are read now too."""
    out = []
    for level, n in plan:
        if count <= 0:
            break
        out.append((level, min(n, count)))
        count -= n
    if out and count > 0:
        level, n = out[-1]
        out[-1] = (level, n + count)
    return out
