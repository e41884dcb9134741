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
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .app import Conveyor
from .errors import JobTimeout
from .job import Job
from .settings import WorkerSettings
from .worker import Worker

START_TIMEOUT = 15.0
STOP_TIMEOUT = 60.0
#: How often result() looks at the workers while it waits.
CHECK_SECONDS = 0.25

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
