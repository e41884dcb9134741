"""Batches successful completions: one script call acks many jobs and stores their records.

While one batch is in flight the next one fills up, so batching costs no added latency on an
idle worker and saves round trips on a busy one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from ..backoff import Backoff
from ..broker import Broker, operations
from ..keys import QueueKeys
from .cancellation import cancel_and_wait

log = logging.getLogger("conveyor.worker")

MAX_BATCH = 256
RECONNECT = Backoff(base=0.25, cap=2.0)


class Completer:
    def __init__(self, broker: Broker, keys: dict[str, QueueKeys], consumer: str) -> None:
        self.broker = broker
        self.keys = keys
        self.consumer = consumer
        self._items: list[tuple[str, operations.Completion, Callable[[bool], None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="conveyor-completer")

    def on_exit(self, callback: Callable[[asyncio.Task[None]], None]) -> None:
        """Call ``callback`` when the completer's task ends (a crash unless it was closed)."""
        if self._task is not None:
            self._task.add_done_callback(callback)

    def submit(
        self, queue: str, completion: operations.Completion, on_done: Callable[[bool], None]
    ) -> None:
        """Queue an ack; ``on_done`` gets True once stored, False if the lease was lost."""
        self._items.append((queue, completion, on_done))
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._items:
                batch, self._items = self._items[:MAX_BATCH], self._items[MAX_BATCH:]
                await self._flush(batch)
            if self._closing:
                return

    async def _flush(
        self, batch: list[tuple[str, operations.Completion, Callable[[bool], None]]]
    ) -> None:
        by_queue: dict[str, list[tuple[operations.Completion, Callable[[bool], None]]]]
        by_queue = defaultdict(list)
        for queue, completion, fut in batch:
            by_queue[queue].append((completion, fut))
        queues = list(by_queue)
        calls = [
            operations.complete(self.keys[q], self.consumer, [c for c, _ in by_queue[q]])
            for q in queues
        ]
        delay = 0.05
        while True:
            try:
                replies = await self.broker.acall_many(calls)
                break
            except Exception as exc:
                log.warning("ack batch failed, retrying in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        for q, rejected in zip(queues, replies, strict=True):
            refused = set(rejected)
            for i, (_, on_done) in enumerate(by_queue[q]):
                on_done(i not in refused)

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
                len(self._items),
                timeout,
            )
