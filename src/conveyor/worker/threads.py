"""Threads for sync tasks, sized so that a stuck thread never costs a later job its run.

Python cannot stop a thread: a sync task that outlives its timeout keeps running, its late
outcome discarded. With a fixed pool that thread would keep its place, and the next job
would wait for a thread while its own timeout ran. Here a job never waits: when no thread is
free one is started, so the pool grows by one per stuck thread. A job's timeout counts from
the moment its function starts. Stuck threads are counted (the worker's registry entry shows
them) and bounded: past ``max_stuck`` the worker is told, and stops so that a fresh process
takes its place.

The function runs in a copy of the context it was submitted from, as ``asyncio.to_thread``
runs it: a sync task sees the ContextVars of its run (the consumer span as the current
OpenTelemetry span) as an async task does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")

#: Names of task threads start with this (serve() looks for them at exit).
THREAD_PREFIX = "conveyor-task"


class _Work(Generic[T]):
    __slots__ = ("context", "finished", "fn", "future", "loop", "name", "started", "stuck")

    def __init__(
        self,
        fn: Callable[[], T],
        future: asyncio.Future[T],
        loop: asyncio.AbstractEventLoop,
        name: str,
    ) -> None:
        self.fn = fn
        self.context = contextvars.copy_context()
        self.future = future
        self.loop = loop
        self.name = name
        self.started: float | None = None
        self.finished = False
        self.stuck = False


def _settle(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


class TaskThreads(Generic[T]):
    """Runs functions that never raise (``fn`` returns its own outcome) on threads."""

    def __init__(self, max_stuck: int, on_overflow: Callable[[int], None]) -> None:
        self.max_stuck = max_stuck
        self._on_overflow = on_overflow
        self._queue: queue.SimpleQueue[_Work[T] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work that no submitted work has reserved yet
        self._threads = 0
        self._stuck = 0
        self._closed = False

    @property
    def stuck(self) -> int:
        """Threads still running a job that already timed out."""
        return self._stuck

    async def run(self, fn: Callable[[], T], timeout: float | None, name: str) -> T:
        """Run ``fn`` on a thread; raise asyncio.TimeoutError ``timeout`` s after it started."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        work = _Work(fn, future, loop, name)
        self._submit(work)
        if timeout is None:
            return await work.future
        while True:
            started = work.started
            remaining = timeout if started is None else started + timeout - time.monotonic()
            if remaining <= 0:
                break
            done, _ = await asyncio.wait({work.future}, timeout=remaining)
            if done:
                return work.future.result()
        self._mark_stuck(work, timeout)
        raise asyncio.TimeoutError

    def _submit(self, work: _Work[T]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("task threads are shut down")
            if self._idle > 0:
                self._idle -= 1
                spawn = False
            else:
                self._threads += 1
                spawn = True
        if spawn:
            thread = threading.Thread(
                target=self._main, name=f"{THREAD_PREFIX}-{self._threads}", daemon=True
            )
            thread.start()
        self._queue.put(work)

    def _mark_stuck(self, work: _Work[T], timeout: float) -> None:
        with self._lock:
            if work.finished:
                return
            work.stuck = True
            self._stuck += 1
            stuck = self._stuck
        log.warning(
            "sync task %s is still running %.1fs after its timeout; its thread is stuck "
            "(%d stuck now), a new thread takes its place",
            work.name,
            timeout,
            stuck,
        )
        if stuck > self.max_stuck:
            self._on_overflow(stuck)

    def _main(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            work.started = time.monotonic()
            value = work.context.run(work.fn)
            with self._lock:
                work.finished = True
                if work.stuck:
                    self._stuck -= 1
                self._idle += 1
            if work.stuck:
                log.warning(
                    "stuck sync task %s finished after %.1fs; its thread is free again",
                    work.name,
                    time.monotonic() - work.started,
                )
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                work.loop.call_soon_threadsafe(_settle, work.future, value)

    def shutdown(self) -> None:
        """Let idle threads end; busy ones end after their job (their outcome is dropped)."""
        with self._lock:
            self._closed = True
            threads = self._threads
        for _ in range(threads):
            self._queue.put(None)
