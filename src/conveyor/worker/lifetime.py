"""When a worker ends on its own: burst mode, and the job and memory limits of a process.

- ``burst``: the worker stops once every queue it serves is empty (nothing undelivered,
  nothing running in any worker, nothing in the delayed set), read in one atomic script per
  queue (idle.lua); its process exits 0 and the supervisor does not restart it. A job due
  later keeps a burst worker waiting for it: it is work of these queues.
- ``max_jobs`` / ``max_memory_mb``: the worker stops taking jobs after that many (counted
  as each ends) or once its resident memory passes the limit (checked every second), lets
  its running jobs finish within the shutdown grace, hands back those fetched ahead, and
  its process exits with RECYCLE_EXIT, which the supervisor answers with a fresh process at
  once: a leak or a fragmented heap is shed without losing a job.

Each is a normal graceful stop (worker.stop()), so nothing here can lose or repeat a job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
from typing import TYPE_CHECKING

from ..broker import run_script
from ..keys import GROUP
from .cancellation import cancel_and_wait

if TYPE_CHECKING:
    from .runtime import Worker

log = logging.getLogger("conveyor.worker")

#: Exit status of a worker process that stopped at its job or memory limit: restart it now.
RECYCLE_EXIT = 3
#: How often a burst worker with nothing running asks Redis whether its queues are empty.
BURST_CHECK = 0.2
MEMORY_CHECK = 1.0

DRAINED = "drained"
MAX_JOBS = "max_jobs"
MAX_MEMORY = "max_memory"


def rss_mb() -> float:
    """This process's resident memory now (Linux: /proc), else its peak (getrusage)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class Lifetime:
    """Watches one worker's burst, job and memory limits; ``reason`` says which one ended it."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.jobs_left = worker.settings.max_jobs
        #: DRAINED, MAX_JOBS or MAX_MEMORY once the worker stopped for that reason
        self.reason: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def recycled(self) -> bool:
        return self.reason in (MAX_JOBS, MAX_MEMORY)

    def start(self) -> None:
        s = self.w.settings
        if s.burst:
            self._tasks.append(asyncio.create_task(self._burst(), name="conveyor-burst"))
        if s.max_memory_mb is not None:
            self._tasks.append(
                asyncio.create_task(self._memory(s.max_memory_mb), name="conveyor-memory")
            )

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)

    def job_ended(self) -> None:
        """Called as each job ends: the worker stops at its ``max_jobs``-th."""
        if self.jobs_left is None:
            return
        self.jobs_left -= 1
        if self.jobs_left == 0:
            self._end(MAX_JOBS, f"ran {self.w.settings.max_jobs} jobs (max_jobs)")

    def _end(self, reason: str, what: str) -> None:
        if self.reason is not None or self.w.stopping.is_set():
            return
        self.reason = reason
        then = "exiting" if reason == DRAINED else "stopping for a fresh process"
        log.info("worker %s %s: %s", self.w.consumer, what, then)
        self.w.stop()

    async def _burst(self) -> None:
        w = self.w
        calls = [
            run_script("idle", [keys.delayed, *keys.streams], [GROUP], _counts)
            for keys in w.keys.values()
        ]
        failing = False
        while not w.stopping.is_set():
            await asyncio.sleep(BURST_CHECK)
            if w.running or w.handoff or w.completer.unacked:
                continue
            try:
                counts = await w.broker.acall_many(calls)
            except Exception as exc:  # Redis away: ask again; said once, not every 0.2 s
                if not failing:
                    log.warning("burst check failed (retrying): %s", exc)
                failing = True
                continue
            failing = False
            if not any(any(c) for c in counts):
                self._end(DRAINED, "found its queues and delayed sets empty (burst)")

    async def _memory(self, limit_mb: float) -> None:
        while not self.w.stopping.is_set():
            await asyncio.sleep(MEMORY_CHECK)
            used = rss_mb()
            if used > limit_mb:
                self._end(MAX_MEMORY, f"uses {used:.0f} MB, over {limit_mb:g} MB (max_memory)")


def _counts(reply: list[int]) -> tuple[int, int, int]:
    delayed, running, undelivered = reply
    return int(delayed), int(running), int(undelivered)
