"""Helpers for tests, examples and scripts: a real worker beside your code, and cleanup.

The worker is the real one, on a real Redis: tasks run through exactly the code path they
take in production (no mocks, no eager shortcut).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

from .app import Conveyor
from .settings import WorkerSettings
from .worker import Worker

START_TIMEOUT = 15.0
STOP_TIMEOUT = 60.0


@contextlib.contextmanager
def worker_thread(app: Conveyor, settings: WorkerSettings | None = None) -> Iterator[Worker]:
    """Run a worker on its own event loop in a thread; stop it gracefully on exit."""
    loop = asyncio.new_event_loop()
    holder: list[Worker] = []
    started = threading.Event()
    failed: list[BaseException] = []

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
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)
            started.set()
        finally:
            loop.run_until_complete(app.aclose())
            loop.close()

    thread = threading.Thread(target=target, name="conveyor-worker", daemon=True)
    thread.start()
    if not started.wait(START_TIMEOUT):
        raise TimeoutError(f"worker did not start within {START_TIMEOUT} s")
    if failed:
        raise failed[0]
    worker = holder[0]
    try:
        yield worker
    finally:
        loop.call_soon_threadsafe(worker.stop)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise TimeoutError(f"worker did not stop within {STOP_TIMEOUT} s")
        if failed:
            raise failed[0]


@contextlib.asynccontextmanager
async def worker_task(
    app: Conveyor, settings: WorkerSettings | None = None
) -> AsyncIterator[Worker]:
    """Run a worker as a task of the running event loop; stop it gracefully on exit."""
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
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(run, STOP_TIMEOUT)


def delete_namespace(app: Conveyor) -> int:
    """Delete every key of the app's namespace (found with SCAN); returns how many."""
    client = app.broker.client
    keys = list(client.scan_iter(match=f"{app.namespace}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    return len(keys)
