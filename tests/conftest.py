"""Shared fixtures: a real Redis (found or started), a private key namespace per test, and
workers run in-process on a background thread or task.

No fakeredis and no mocks: if no Redis answers and none can be started, the session fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from conveyor import Conveyor, WorkerSettings
from conveyor.devserver import configured_url, redis_for
from conveyor.worker import Worker


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_for(configured_url()) as url:
        yield url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A key namespace of this test alone; every key under it is deleted afterwards."""
    ns = f"test-{secrets.token_hex(4)}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    for pattern in (f"{ns}:*",):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    client.close()


@pytest.fixture
def app(redis_url: str, namespace: str) -> Iterator[Conveyor]:
    a = Conveyor(redis_url, namespace=namespace)
    yield a
    a.close()


@contextlib.contextmanager
def worker_thread(app: Conveyor, settings: WorkerSettings | None = None) -> Iterator[Worker]:
    """Run a Worker on its own event loop in a thread; stop it gracefully on exit."""
    loop = asyncio.new_event_loop()
    box: dict[str, Worker] = {}
    started = threading.Event()
    failed: list[BaseException] = []

    async def main() -> None:
        w = Worker(app, settings)
        box["w"] = w
        task = asyncio.create_task(w.run())
        ready = asyncio.create_task(w.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        started.set()
        await task

    def target() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # surfaced to the test below
            failed.append(exc)
            started.set()
        finally:
            loop.run_until_complete(app.aclose())
            loop.close()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    assert started.wait(15), "worker did not start"
    if failed:
        raise failed[0]
    w = box["w"]
    try:
        yield w
    finally:
        loop.call_soon_threadsafe(w.stop)
        t.join(60)
        assert not t.is_alive(), "worker did not stop"
        if failed:
            raise failed[0]


@contextlib.asynccontextmanager
async def worker_task(
    app: Conveyor, settings: WorkerSettings | None = None
) -> AsyncIterator[Worker]:
    """Run a Worker as a task of the current event loop."""
    w = Worker(app, settings)
    task = asyncio.create_task(w.run())
    ready = asyncio.create_task(w.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "worker did not start"
    try:
        yield w
    finally:
        w.stop()
        await asyncio.wait_for(task, 60)
