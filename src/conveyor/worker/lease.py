"""Keeps the leases of held jobs alive from a thread of its own.

Renewal runs on a plain thread with its own Redis connection, so a task that hogs the event
loop or the CPU cannot starve it: a slow job is never taken from a live worker, and a dead
worker's jobs come back after one lease timeout. The same beat refreshes the worker's entry
in the live-workers registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .. import limits
from ..broker import Broker, Call, command, operations, run_script
from ..cancellation import cancel_flags
from ..keys import QueueKeys, worker_key, workers_key
from ..settings import Leases
from .flow import FlowState

log = logging.getLogger("conveyor.lease")


class HeldJobs:
    """Entries this consumer holds (running or waiting for a slot), by queue and level."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], set[str]] = defaultdict(set)

    def add(self, queue: str, level: str, entry_id: str) -> None:
        with self._lock:
            self._entries[(queue, level)].add(entry_id)

    def discard(self, queue: str, level: str, entry_id: str) -> None:
        with self._lock:
            self._entries[(queue, level)].discard(entry_id)

    def snapshot(self) -> dict[tuple[str, str], list[str]]:
        with self._lock:
            return {k: list(v) for k, v in self._entries.items() if v}

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._entries.values())


class LeaseKeeper(threading.Thread):
    def __init__(
        self,
        broker: Broker,
        keys: dict[str, QueueKeys],
        consumer: str,
        held: HeldJobs,
        leases: Leases,
        namespace: str,
        pel_limit: int,
        queues: tuple[str, ...],
        *,
        info: Callable[[], dict[str, Any]] | None = None,
        flow: FlowState | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        kill: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(name="conveyor-lease", daemon=True)
        self.broker = broker
        self.keys = keys
        self.consumer = consumer
        self.held = held
        self.leases = leases
        self.namespace = namespace
        self.pel_limit = pel_limit
        self.queues = queues
        #: more to show in the registry (task names, stuck threads), read at each beat
        self.info = info
        #: running jobs (their cancel marks are read here) and concurrency leases held
        self.flow = flow
        self.loop = loop
        self.kill = kill
        self._stop_event = threading.Event()
        self.started_at = int(time.time() * 1000)
        self.renewals = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.monotonic()
            try:
                self.beat()
            except Exception as exc:
                log.warning("lease renewal failed (will retry): %s", exc)
            elapsed = time.monotonic() - started
            self._stop_event.wait(max(0.0, self.leases.renew_every - elapsed))

    def beat(self) -> None:
        calls: list[Call[Any]] = []
        order: list[tuple[str, str]] = []
        for (queue, level), entry_ids in self.held.snapshot().items():
            renewals = operations.renew(
                self.keys[queue], level, self.consumer, entry_ids, self.pel_limit
            )
            calls += renewals
            order += [(queue, level)] * len(renewals)
        ttl_ms = int(self.leases.timeout * 1000 * 2)
        info = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(self.queues),
                "started_at": self.started_at,
                "held": self.held.count(),
                **(self.info() if self.info is not None else {}),
            }
        )
        calls.append(
            run_script(
                "heartbeat",
                [workers_key(self.namespace), worker_key(self.namespace, self.consumer)],
                [self.consumer, info, ttl_ms],
            )
        )
        # Cancel marks of running jobs and concurrency leases: nothing is sent for either
        # while no job runs / no limited job is held.
        flags: list[str] = []
        leases: list[str] = []
        if self.flow is not None:
            for queue, job_ids in self.flow.running_ids().items():
                calls.append(cancel_flags(self.keys[queue], job_ids))
                flags.append(queue)
            lease_ms = int(self.leases.timeout * 1000)
            for queue, held in self.flow.leases().items():
                calls.append(limits.renew(self.keys[queue], held, lease_ms))
                leases.append(queue)
        replies = self.broker.call_many(calls)
        extra = replies[len(order) + 1 :]
        marked: set[str] = set()
        for marks in extra[: len(flags)]:
            marked |= marks
        if marked and self.flow is not None:
            self.flow.marked(marked, self.loop, self.kill)
        for queue, lost_leases in zip(leases, extra[len(flags) :], strict=True):
            if lost_leases:
                log.warning(
                    "concurrency lease of %d job(s) in %s had expired before renewal: %s",
                    len(lost_leases),
                    queue,
                    ", ".join(lost_leases),
                )
        lost_by_stream: dict[tuple[str, str], int] = defaultdict(int)
        for where, lost in zip(order, replies, strict=False):
            lost_by_stream[where] += len(lost)
        for (queue, level), count in lost_by_stream.items():
            if count:
                log.warning(
                    "lost the lease on %d job(s) in %s/%s; another worker holds them now",
                    count,
                    queue,
                    level,
                )
        self.renewals += 1

    def stop(self) -> None:
        self._stop_event.set()

    def unregister(self) -> None:
        try:
            self.broker.call_many(
                [
                    command("DEL", worker_key(self.namespace, self.consumer)),
                    command("ZREM", workers_key(self.namespace), self.consumer),
                ]
            )
        except Exception as exc:
            log.warning("could not remove worker %s from the registry: %s", self.consumer, exc)
