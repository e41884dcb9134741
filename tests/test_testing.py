"""conveyor.testing: a worker that crashes after it started shows its own error, at once."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from conveyor import Conveyor, JobTimeout
from conveyor.settings import WorkerSettings
from conveyor.testing import result, result_async, worker_task, worker_thread

SETTINGS = WorkerSettings(queues=("default", "broken"))


def break_queue(r: redis.Redis, app: Conveyor) -> None:
    """Make a served stream a string: the worker's next read of it fails with WRONGTYPE,
    an error no worker code path expects, so the worker run ends with it."""
    for stream in app.keys("broken").streams:
        r.delete(stream)
        r.set(stream, "not a stream")


def test_worker_thread_crash_is_raised_by_result_at_once_and_on_exit(
    app: Conveyor, r: redis.Redis
) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    start = time.monotonic()
    with (
        pytest.raises(redis.ResponseError, match=r"WRONGTYPE|UNBLOCKED") as raised,
        worker_thread(app, SETTINGS),
    ):
        assert result(add.enqueue(1, 2), timeout=10) == 3
        break_queue(r, app)
        result(add.enqueue(2, 3), timeout=30)
    assert time.monotonic() - start < 15, "the crash must surface before the timeout"
    assert "Event loop is closed" not in repr(raised.value)


def test_worker_thread_crash_is_raised_on_exit_not_a_closed_loop(
    app: Conveyor, r: redis.Redis
) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with (
        pytest.raises(redis.ResponseError, match=r"WRONGTYPE|UNBLOCKED") as raised,
        worker_thread(app, SETTINGS),
    ):
        break_queue(r, app)
        add.enqueue(2, 3).result(timeout=3)  # the worker is gone: this one times out
    assert isinstance(raised.value.__context__, JobTimeout), "what the block saw stays chained"


def test_worker_task_crash_is_raised_by_result_async_at_once_and_on_exit(
    app: Conveyor, r: redis.Redis
) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async def scenario() -> None:
        async with worker_task(app, SETTINGS):
            assert await result_async(await add.enqueue_async(1, 2), timeout=10) == 3
            break_queue(r, app)
            await result_async(await add.enqueue_async(2, 3), timeout=30)

    start = time.monotonic()
    with pytest.raises(redis.ResponseError, match=r"WRONGTYPE|UNBLOCKED"):
        asyncio.run(scenario())
    assert time.monotonic() - start < 15, "the crash must surface before the timeout"


def test_result_returns_the_value_and_times_out_with_a_live_worker(app: Conveyor) -> None:
    @app.task
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    with worker_thread(app):
        assert result(nap.enqueue(0.01), timeout=10) == 0.01
        start = time.monotonic()
        with pytest.raises(JobTimeout):
            result(nap.enqueue(5), timeout=0.6)
        assert 0.5 < time.monotonic() - start < 3
