"""Helpers for tests, examples and scripts: a real worker beside your code, and cleanup.

The worker is the real one, on a real Redis: tasks run through exactly the code path they
take in production (no mocks, no eager shortcut).

A worker that crashes after it started must not look like a slow job: its error is raised
when the ``with`` block ends (instead of a ``JobTimeout`` and a closed event loop), and
:func:`result` / :func:`result_async` raise it as soon as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from .app import Conveyor
from .errors import JobTimeout
from .job import Job
from .settings import WorkerSettings
from .stats import queue_stats
from .worker import Worker, app_queues

START_TIMEOUT = 15.0
STOP_TIMEOUT = 60.0
#: How often result() looks at the workers while it waits.
CHECK_SECONDS = 0.25
#: How often wait_until_empty() looks at the queues.
EMPTY_POLL_SECONDS = 0.02

log = logging.getLogger(__name__)


class _Watch:
    """What the caller's side knows of one helper-started worker: whether it crashed."""

    def __init__(self) -> None:
        self.error: BaseException | None = None


#: Workers started by these helpers and not yet stopped, in this process.
_watches: list[_Watch] = []
_watches_lock = threading.Lock()


@contextlib.contextmanager
def _watched() -> Iterator[_Watch]:
    watch = _Watch()
    with _watches_lock:
        _watches.append(watch)
    try:
        yield watch
    finally:
        with _watches_lock:
            _watches.remove(watch)


def check_workers() -> None:
    """Raise the error of any worker started by these helpers that crashed while running."""
    with _watches_lock:
        crashed = [w.error for w in _watches if w.error is not None]
    if crashed:
        raise crashed[0]


def result(job: Job[Any], timeout: float = 30.0) -> Any:
    """``job.result(timeout)``, but a crash of a helper-started worker is raised at once
    instead of waiting out the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        check_workers()
        left = deadline - time.monotonic()
        try:
            return job.result(timeout=max(0.001, min(CHECK_SECONDS, left)))
        except JobTimeout:
            if time.monotonic() >= deadline:
                check_workers()
                raise JobTimeout(f"job {job.id} did not finish within {timeout} s") from None


async def result_async(job: Job[Any], timeout: float = 30.0) -> Any:
    """The asyncio twin of :func:`result`."""
    deadline = time.monotonic() + timeout
    while True:
        check_workers()
        left = deadline - time.monotonic()
        try:
            return await job.result_async(timeout=max(0.001, min(CHECK_SECONDS, left)))
        except JobTimeout:
            if time.monotonic() >= deadline:
                check_workers()
                raise JobTimeout(f"job {job.id} did not finish within {timeout} s") from None


@contextlib.contextmanager
def worker_thread(app: Conveyor, settings: WorkerSettings | None = None) -> Iterator[Worker]:
    """Run a worker on its own event loop in a thread; stop it gracefully on exit.

    If the worker fails, its error is raised on exit from the block (chained to whatever
    the block raised meanwhile).
    """
    loop = asyncio.new_event_loop()
    holder: list[Worker] = []
    started = threading.Event()
    stopping = threading.Event()

    with _watched() as watch:

        async def main() -> None:
            worker = Worker(app, settings)
            holder.append(worker)
            run = asyncio.create_task(worker.run())
            ready = asyncio.create_task(worker.ready.wait())
            await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
            started.set()
            await run

        def target() -> None:
            try:
                loop.run_until_complete(main())
            except BaseException as exc:  # handed to the caller's thread
                if started.is_set() and not stopping.is_set():
                    log.error("the worker started by worker_thread crashed", exc_info=exc)
                watch.error = exc
            finally:
                started.set()
                try:
                    loop.run_until_complete(app.aclose())
                finally:
                    loop.close()

        thread = threading.Thread(target=target, name="conveyor-worker", daemon=True)
        thread.start()
        if not started.wait(START_TIMEOUT):
            raise TimeoutError(f"worker did not start within {START_TIMEOUT} s")
        if watch.error is not None or not holder:
            thread.join(STOP_TIMEOUT)
            raise watch.error or RuntimeError("the worker ended before it started")
        worker = holder[0]
        try:
            yield worker
        finally:
            stopping.set()
            if watch.error is None:
                # The loop closes when the worker ends; it may have ended since the check.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(worker.stop)
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                raise TimeoutError(f"worker did not stop within {STOP_TIMEOUT} s")
            if watch.error is not None:
                raise watch.error


@contextlib.asynccontextmanager
async def worker_task(
    app: Conveyor, settings: WorkerSettings | None = None
) -> AsyncIterator[Worker]:
    """Run a worker as a task of the running event loop; stop it gracefully on exit.

    If the worker fails, its error is raised on exit from the block.
    """
    with _watched() as watch:
        worker = Worker(app, settings)
        run = asyncio.create_task(worker.run())
        ready = asyncio.create_task(worker.ready.wait())
        done, _ = await asyncio.wait(
            {run, ready}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if run in done:
            ready.cancel()
            run.result()
        if ready not in done:
            raise TimeoutError(f"worker did not start within {START_TIMEOUT} s")
        stopping = False

        def ended(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                watch.error = task.exception()
                if not stopping:
                    log.error("the worker started by worker_task crashed", exc_info=watch.error)

        run.add_done_callback(ended)
        try:
            yield worker
        finally:
            stopping = True
            if not run.done():
                worker.stop()
            await asyncio.wait_for(run, STOP_TIMEOUT)


def delete_namespace(app: Conveyor) -> int:
    """Delete every key of the app's namespace (found with SCAN); returns how many."""
    client = app.broker.client
    keys = list(client.scan_iter(match=f"{app.namespace}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    return len(keys)


def remaining(app: Conveyor, queues: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """Jobs not yet ended per queue (``ready``, ``running``, ``delayed``); empty queues left
    out. ``queues`` defaults to every queue of the app's tasks."""
    left: dict[str, dict[str, int]] = {}
    for q in queues if queues is not None else app_queues(app):
        s = queue_stats(app, q)
        counts = {"ready": s.ready, "running": s.running, "delayed": s.delayed}
        if any(counts.values()):
            left[q] = counts
    return left


def _empty_twice(app: Conveyor, queues: tuple[str, ...], seen: list[bool]) -> bool:
    # Queues are read one after another: a job running in one queue may add a job to a
    # queue read just before it and end. Two empty reads in a row rule that out.
    empty = not remaining(app, queues)
    seen.append(empty)
    return empty and len(seen) >= 2 and seen[-2]


def wait_until_empty(
    app: Conveyor, queues: Iterable[str] | None = None, timeout: float = 30.0
) -> None:
    """Block until the queues hold no job that has not ended: nothing ready, running (in a
    pending list, i.e. not yet acknowledged) or delayed (scheduled, retrying, waiting at a
    limit). A worker started by these helpers must be running; its crash is raised at once.

    Burst semantics for tests: enqueue, then wait until the real worker path has run every
    job to its end, retries and delayed jobs included. Raises TimeoutError naming what is
    left (a job delayed beyond ``timeout`` is left, by design).
    """
    for pause in _pauses_until_empty(app, queues, timeout):
        time.sleep(pause)


async def wait_until_empty_async(
    app: Conveyor, queues: Iterable[str] | None = None, timeout: float = 30.0
) -> None:
    """The asyncio twin of :func:`wait_until_empty`, for a worker from :func:`worker_task`
    on the same loop (each look is a short Redis call; the loop runs the worker between)."""
    for pause in _pauses_until_empty(app, queues, timeout):
        await asyncio.sleep(pause)


def _pauses_until_empty(
    app: Conveyor, queues: Iterable[str] | None, timeout: float
) -> Iterator[float]:
    """The pauses between two looks until the queues are empty (the sync and async waits
    only differ in how they pause); a worker's crash or the timeout is raised from here."""
    names = tuple(queues) if queues is not None else app_queues(app)
    deadline = time.monotonic() + timeout
    seen: list[bool] = []
    while not _empty_twice(app, names, seen):
        check_workers()
        if time.monotonic() >= deadline:
            raise TimeoutError(_not_empty(app, names, timeout))
        yield EMPTY_POLL_SECONDS
    check_workers()


def _not_empty(app: Conveyor, queues: tuple[str, ...], timeout: float) -> str:
    left = remaining(app, queues)
    detail = "; ".join(
        f"{q}: " + ", ".join(f"{n} {k}" for k, n in c.items() if n) for q, c in left.items()
    )
    return f"queues not empty after {timeout} s ({detail or 'emptied just now'})"


def run_until_empty(
    app: Conveyor, settings: WorkerSettings | None = None, timeout: float = 30.0
) -> None:
    """Start a real worker, let it run until its queues and delayed sets are empty, stop it
    (the ``--burst`` of tests)."""
    with worker_thread(app, settings) as worker:
        wait_until_empty(app, worker.queues, timeout)
