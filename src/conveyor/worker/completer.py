"""Batches successful completions: one pipeline acks every finished job and stores its record.

The completer sends everything that finished since its last flush, split into scripts of at
most MAX_BATCH jobs each, in one round trip; up to IN_FLIGHT flushes are out at once (each
on its own pooled connection), so a job that ends while one is out is sent at once rather
than a whole round trip later. So batching costs no latency on an idle worker, saves round
trips on a busy one, and acks keep up with any number of slots: how many jobs one flush
carries grows with the rate they finish at, not the number of round trips.

Fairness with fetching is kept by the fetcher (fetcher.py): jobs finished but not yet acked
count against its capacity past one MAX_BATCH, so a worker never holds more pending entries
than its slots + its prefetch + MAX_BATCH, however the event loop's time is shared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

from ..backoff import Backoff
from ..broker import Broker, Call, command, operations
from ..errors import ConnectionFailed
from ..keys import QueueKeys
from .acklag import AckLag
from .cancellation import cancel_and_wait

log = logging.getLogger("conveyor.worker")

#: Most jobs one complete script acks: bounds how long one script holds Redis, and the
#: finished jobs a worker may hold unacked before it stops fetching (see Fetcher.free_slots).
MAX_BATCH = 256
RECONNECT = Backoff(base=0.25, cap=2.0)
#: Flushes in flight at once: a job that ends while one flush is out is sent at once on
#: another connection instead of waiting a whole round trip for it (which doubled the lag).
#: Two still left jobs waiting behind both; four cut the ack lag's p99 by a quarter at -c 10
#: and -c 100 on a slow day (in-process drains, GC tuned, medians of 3), at no measurable
#: cost in throughput; eight cut it a little more at -c 100 and cost Redis ~20% more CPU
#: per job at -c 10 (smaller batches: each script has a fixed cost).
IN_FLIGHT = 4


class _Finished(NamedTuple):
    queue: str
    completion: operations.Completion
    on_done: Callable[[bool], None]
    ended_at: float  # time.perf_counter() when the job's function returned


class Completer:
    def __init__(
        self,
        broker: Broker,
        keys: dict[str, QueueKeys],
        consumer: str,
        on_flushed: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.keys = keys
        self.consumer = consumer
        #: called after each flush, so a fetcher waiting on unacked jobs reads again
        self.on_flushed = on_flushed
        #: end-of-function to ack-stored, for every job acked (or refused) by this worker
        self.lag = AckLag()
        self._items: list[_Finished] = []
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def unacked(self) -> int:
        """Finished jobs whose acks are not stored yet (queued or in flight)."""
        return len(self._items) + self._in_flight

    async def warm_up(self) -> None:
        """Open the connections the flushes use, and load the complete script (an empty
        batch acks nothing), before the first job ends: a connection made or a script loaded
        mid-drain waits behind the slots' turns, tens of ms of ack lag for the jobs behind."""
        await asyncio.gather(*(self.broker.acall(command("PING")) for _ in range(IN_FLIGHT + 1)))
        await self.broker.acall_many(
            [operations.complete(keys, self.consumer, []) for keys in self.keys.values()]
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="conveyor-completer")

    def on_exit(self, callback: Callable[[asyncio.Task[None]], None]) -> None:
        """Call ``callback`` when the completer's task ends (a crash unless it was closed)."""
        if self._task is not None:
            self._task.add_done_callback(callback)

    def submit(
        self,
        queue: str,
        completion: operations.Completion,
        on_done: Callable[[bool], None],
        ended_at: float | None = None,
    ) -> None:
        """Queue an ack; ``on_done`` gets True once stored, False if the lease was lost.

        ``ended_at`` (time.perf_counter()) is when the job's function returned: the ack lag
        is measured from it.
        """
        at = time.perf_counter() if ended_at is None else ended_at
        self._items.append(_Finished(queue, completion, on_done, at))
        self._wake.set()

    async def _loop(self) -> None:
        flushing: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._items:
                    if len(flushing) >= IN_FLIGHT:
                        done, flushing = await asyncio.wait(
                            flushing, return_when=asyncio.FIRST_COMPLETED
                        )
                        for task in done:
                            task.result()  # an error other than an outage ends the completer
                        continue
                    batch, self._items = self._items, []
                    flushing.add(asyncio.create_task(self._flush_one(batch)))
                if self._closing:
                    for outcome in await asyncio.gather(*flushing, return_exceptions=True):
                        if isinstance(outcome, BaseException):
                            raise outcome
                    return
                done = {t for t in flushing if t.done()}
                flushing -= done
                for task in done:
                    task.result()
        finally:
            for task in flushing:
                task.cancel()

    async def _flush_one(self, batch: list[_Finished]) -> None:
        self._in_flight += len(batch)
        try:
            await self._flush(batch)
        finally:
            self._in_flight -= len(batch)
            self._wake.set()  # the loop reads this flush's end (or error) at once
        if self.on_flushed is not None:
            self.on_flushed()

    async def _flush(self, batch: list[_Finished]) -> None:
        by_queue: dict[str, list[_Finished]] = defaultdict(list)
        for item in batch:
            by_queue[item.queue].append(item)
        calls: list[Call[list[int] | Exception]] = []
        parts: list[list[_Finished]] = []
        for q, items in by_queue.items():
            for start in range(0, len(items), MAX_BATCH):
                part = items[start : start + MAX_BATCH]
                call = operations.complete(
                    self.keys[q],
                    self.consumer,
                    [i.completion for i in part],
                    self.broker.publish_command,
                )
                calls.append(_errors_returned(call))
                parts.append(part)
        delay = 0.05
        while True:
            try:
                replies = await self.broker.acall_many(calls)
                break
            except ConnectionFailed as exc:
                # Only an outage is worth waiting out; any other error would repeat forever,
                # so it ends the completer and the worker crashes (WorkerCrashed) instead.
                log.warning("ack batch failed, retrying in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        stored_at = time.perf_counter()
        self.lag.add([stored_at - item.ended_at for item in batch])
        for part, rejected in zip(parts, replies, strict=True):
            if isinstance(rejected, Exception):
                if not operations.group_lost(rejected):
                    raise rejected
                # Redis lost the queue's state (restarted without persistence): these acks
                # have no pending entries to close. The fetch loop creates the group again.
                log.error(
                    "consumer group missing: %d finished job(s) of queue %s could not be "
                    "acked (Redis lost this queue's state); they are counted lost and may "
                    "run again",
                    len(part),
                    part[0].queue,
                )
                rejected = list(range(len(part)))
            refused = set(rejected)
            for i, item in enumerate(part):
                item.on_done(i not in refused)

    async def close(self, timeout: float) -> None:
        """Flush what is queued; give up after ``timeout`` if Redis stays unreachable.

        Acks given up on leave their jobs pending: another worker reclaims and reruns them,
        which at-least-once delivery allows and losing them would not.
        """
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        _, pending = await asyncio.wait({self._task}, timeout=timeout)
        if pending:
            await cancel_and_wait(pending)
            log.error(
                "gave up on %d ack(s) after %.0fs without Redis; those jobs will be reclaimed "
                "and may run again",
                self.unacked,
                timeout,
            )


def _errors_returned(call: Call[list[int]]) -> Call[list[int] | Exception]:
    """``call`` with an error reply handed back instead of raised, so one queue's missing
    group does not lose the replies of the other queues' scripts in the same flush."""
    parse = call.parse

    def kept(reply: Any) -> list[int] | Exception:
        return reply if isinstance(reply, Exception) else parse(reply)

    return Call(call.command, kept, call.script, accepts_errors=True, retry_safe=call.retry_safe)
