"""At Redis' memory limit, enqueue fails with a clear error while workers still drain."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from conveyor import Conveyor, EnqueueRejected, WorkerSettings
from tests.conftest import worker_thread
from tests.redis_servers import RedisServer


@pytest.fixture
def small_redis() -> Iterator[RedisServer]:
    with RedisServer(extra_args=["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"]) as s:
        yield s


def test_enqueue_is_refused_at_maxmemory_but_backlog_drains(small_redis: RedisServer) -> None:
    app = Conveyor(small_redis.url, namespace="oom")
    done: list[int] = []

    @app.task(result_ttl=60)
    def work(n: int, blob: str) -> None:
        done.append(n)

    accepted = []
    rejection = None
    for n in range(200_000):
        try:
            accepted.append(work.enqueue(n, "x" * 1024))
        except EnqueueRejected as exc:
            rejection = exc
            break
    assert rejection is not None, "Redis never reached its memory limit"
    assert "maxmemory" in str(rejection) and small_redis.url in str(rejection)
    assert len(accepted) > 100

    with worker_thread(app, WorkerSettings(concurrency=50)):
        # Acks, records and completions must go through although Redis is full.
        for job in (accepted[0], accepted[len(accepted) // 2], accepted[-1]):
            job.result(timeout=60)
        end = time.monotonic() + 60
        while len(done) < len(accepted) and time.monotonic() < end:
            time.sleep(0.1)
    assert sorted(done) == list(range(len(accepted)))
    app.close()


def test_bulk_enqueue_at_maxmemory_names_the_jobs_it_added(small_redis: RedisServer) -> None:
    app = Conveyor(small_redis.url, namespace="oom-bulk")

    @app.task
    def blob(text: str) -> None:
        return None

    stream = app.keys("default").stream("normal")
    client = app.broker.client
    with pytest.raises(EnqueueRejected) as caught:
        for _ in range(10_000):
            before = client.xlen(stream)
            blob.enqueue_many([("x" * 1024,)] * 200)
    added_now = client.xlen(stream) - before
    exc = caught.value
    assert "of 200 jobs were added" in str(exc)
    assert len(exc.added) == added_now, "the jobs reported added are those really added"
    entries = {e.decode() for e, _ in client.xrange(stream, "-", "+")}
    assert all(job.id.split(":")[2] in entries for job in exc.added)
    app.close()
