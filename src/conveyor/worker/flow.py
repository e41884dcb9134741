"""Flow control in the worker: limit gates, concurrency leases held, and cancel marks.

The lease thread reads, on each beat, which running jobs ``job.cancel()`` marked
(cancellation.cancel_flags, one SMISMEMBER per queue, only when jobs run) and renews the
concurrency leases this worker holds (concurrency_renew.lua). This module keeps what both
need in one place, guarded by a lock since the beat runs on its own thread: the jobs now
running with their contexts, and the leases held. A task with no limits and a worker with
no cancel pending pay nothing here but a dict insert and pop per job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..context import JobContext
from ..limits import Held, Limits

log = logging.getLogger("conveyor.worker")


@dataclass
class Running:
    """A job running now: how to stop it when its cancel mark is read."""

    ctx: JobContext
    queue: str
    #: the slot running an async job (cancelled on the loop), None for sync and process jobs
    slot: asyncio.Task[Any] | None
    process: bool
    lease: Held | None = None
    #: set once the mark was acted on, so a job is stopped once
    stopping: bool = field(default=False)


class FlowState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        self._limits: dict[str, Limits | None] = {}
        self.leases_by_queue: dict[str, dict[str, Held]] = {}

    def limits_of(self, name: str, options: Any) -> Limits | None:
        """A task's limits, built once per task (None: no gate, no extra call)."""
        try:
            return self._limits[name]
        except KeyError:
            limits = Limits.of(
                rate=options.rate, rate_burst=options.rate_burst, concurrency=options.concurrency
            )
            self._limits[name] = limits
            return limits

    # Every job passes through started/ended: a dict store and pop are atomic under the
    # GIL, so they take no lock; the lease thread reads a copy (also atomic).
    def started(self, run: Running) -> None:
        self._running[run.ctx.id] = run

    def ended(self, job_id: str) -> None:
        self._running.pop(job_id, None)

    def hold(self, queue: str, held: Held) -> None:
        with self._lock:
            self.leases_by_queue.setdefault(queue, {})[held.job_id] = held

    def unhold(self, queue: str, job_id: str) -> None:
        with self._lock:
            self.leases_by_queue.get(queue, {}).pop(job_id, None)

    def lease_of(self, queue: str, job_id: str) -> Held | None:
        with self._lock:
            return self.leases_by_queue.get(queue, {}).get(job_id)

    def running_ids(self) -> dict[str, list[str]]:
        """Ids of running jobs by queue, for the beat's cancel-mark read."""
        with self._lock:
            out: dict[str, list[str]] = {}
            for job_id, run in self._running.copy().items():
                out.setdefault(run.queue, []).append(job_id)
            return out

    def leases(self) -> dict[str, list[Held]]:
        with self._lock:
            return {q: list(h.values()) for q, h in self.leases_by_queue.items() if h}

    def marked(
        self,
        job_ids: set[str],
        loop: asyncio.AbstractEventLoop | None,
        kill: Callable[[str], bool] | None,
    ) -> None:
        """Act on cancel marks read by the beat (lease thread): flag the context (sync
        tasks poll it), cancel an async job's slot on its loop, kill a process-pool job."""
        for job_id in job_ids:
            with self._lock:
                run = self._running.get(job_id)
                if run is None or run.stopping:
                    continue
                run.stopping = True
            if not run.ctx._mark_cancelled():
                continue  # it returned meanwhile: it ends as it ended
            log.info("job %s was cancelled while running; stopping it", job_id)
            if run.process and kill is not None:
                kill(job_id)
            elif run.slot is not None and loop is not None:
                loop.call_soon_threadsafe(self._cancel_slot, job_id)

    def _cancel_slot(self, job_id: str) -> None:
        """On the loop: cancel the slot only if it still runs that job (it may have ended
        between the beat and now; then nothing must be cancelled)."""
        with self._lock:
            run = self._running.get(job_id)
        if run is not None and run.slot is not None:
            run.slot.cancel()
