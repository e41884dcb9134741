"""Bulk enqueues send the next batch only after reading the one before, while encoding the
next batch as Redis adds the current one (broker/lines.py). Real Redis throughout."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from conveyor import Conveyor
from conveyor.bulk import BATCH
from conveyor.errors import EnqueueRejected, EnqueueUncertain
from conveyor.hooks import Middleware, Producing
from conveyor.testing import delete_namespace
from tests.redis_servers import RedisServer
from tests.test_broker_uncertain import DELAY, SlowReplyProxy, options


class BetweenBatches(Middleware):
    """Runs ``action`` when the bulk enqueue prepares batch number ``at`` (1-based)."""

    def __init__(self, at: int, action: Callable[[], object]) -> None:
        self.at, self.action, self.batches = at, action, 0

    def producing(self, task: str | None, queue: str | None, count: int) -> Producing | None:
        self.batches += 1
        if self.batches == self.at:
            self.action()
        return None


@pytest.fixture
def private() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def entries(client: redis.Redis, app: Conveyor) -> list[tuple[str, dict[bytes, bytes]]]:
    stream = app.keys("default").stream("normal")
    return [(i.decode(), f) for i, f in client.xrange(stream, "-", "+")]


def test_a_bulk_of_several_batches_adds_every_job_once_in_order(
    app: Conveyor, r: redis.Redis
) -> None:
    @app.task
    def echo(n: int, tag: str = "") -> int:
        return n

    n = 3 * BATCH + 7
    jobs = echo.enqueue_many([echo.s(i, tag=f"t{i}") for i in range(n)])
    got = entries(r, app)
    assert [job.id.rsplit(":", 1)[1] for job in jobs] == [entry_id for entry_id, _ in got]
    assert [f[b"args"] for _, f in got] == [f"[{i}]".encode() for i in range(n)]
    assert [f[b"kwargs"] for _, f in got] == [f'{{"tag":"t{i}"}}'.encode() for i in range(n)]


async def test_async_a_bulk_of_several_batches_adds_every_job_once_in_order(
    app: Conveyor, r: redis.Redis
) -> None:
    @app.task
    async def echo(n: int) -> int:
        return n

    n = 2 * BATCH + 1
    jobs = await app.enqueue_many_async([echo.s(i) for i in range(n)])
    got = entries(r, app)
    assert [job.id.rsplit(":", 1)[1] for job in jobs] == [entry_id for entry_id, _ in got]
    assert [f[b"args"] for _, f in got] == [f"[{i}]".encode() for i in range(n)]
    await app.aclose()


@pytest.mark.parametrize("at", [2, 3])
def test_scripts_flushed_between_batches_are_loaded_and_nothing_is_added_twice(
    private: RedisServer, at: int
) -> None:
    """A Redis that lost its script cache mid-bulk (a restart, a failover) says NOSCRIPT to
    the batch in flight or the next one: nothing of it ran, so it is sent again once."""
    client = redis.Redis.from_url(private.url)
    app = Conveyor(private.url, namespace="lines")
    app.use(BetweenBatches(at, lambda: client.script_flush()))

    @app.task
    def echo(n: int) -> int:
        return n

    n = 4 * BATCH
    jobs = echo.enqueue_many([echo.s(i) for i in range(n)])
    got = entries(client, app)
    assert len(jobs) == len(got) == n
    assert [f[b"args"] for _, f in got] == [f"[{i}]".encode() for i in range(n)]
    app.close()
    client.close()


async def test_async_scripts_flushed_between_batches_are_loaded_again(
    private: RedisServer,
) -> None:
    client = redis.Redis.from_url(private.url)
    app = Conveyor(private.url, namespace="lines")
    app.use(BetweenBatches(2, lambda: client.script_flush()))

    @app.task
    async def echo(n: int) -> int:
        return n

    n = 3 * BATCH
    jobs = await app.enqueue_many_async([echo.s(i) for i in range(n)])
    assert len(jobs) == len(entries(client, app)) == n
    await app.aclose()
    client.close()


def test_a_refused_batch_sends_nothing_after_it(private: RedisServer) -> None:
    """At the memory limit the refused batch is the last one sent: ``added`` is exactly what
    the stream holds, the batches before it, and no later batch went in."""
    client = redis.Redis.from_url(private.url)
    app = Conveyor(private.url, namespace="lines")
    # Batch 3 is refused: maxmemory is set, below what Redis already uses, while batch 2 is
    # in flight (the hook runs as batch 3 is prepared).
    app.use(BetweenBatches(3, lambda: client.config_set("maxmemory", 1)))

    @app.task
    def echo(n: int) -> int:
        return n

    with pytest.raises(EnqueueRejected) as caught:
        echo.enqueue_many([echo.s(i) for i in range(5 * BATCH)])
    client.config_set("maxmemory", 0)
    got = entries(client, app)
    added = caught.value.added
    assert len(added) == len(got) == 2 * BATCH
    assert [job.id.rsplit(":", 1)[1] for job in added] == [entry_id for entry_id, _ in got]
    assert f"{2 * BATCH} of {5 * BATCH} jobs were added" in str(caught.value)
    app.close()
    client.close()


def test_a_batch_whose_reply_never_comes_is_the_last_one_sent(
    redis_url: str, r: redis.Redis
) -> None:
    """EnqueueUncertain names the batches before the uncertain one as added; that batch ran
    (its reply was only late), and no batch after it was sent."""
    proxy = SlowReplyProxy(redis_url)
    app = Conveyor(proxy.url, namespace=f"lines-{time.monotonic_ns()}", client_options=options())
    app.use(BetweenBatches(3, proxy.slow))  # batch 2 is in flight, or its reply just came

    @app.task
    def echo(n: int) -> int:
        return n

    app.broker.server_info()  # read once, before replies turn slow
    try:
        with pytest.raises(EnqueueUncertain) as caught:
            echo.enqueue_many([echo.s(i) for i in range(6 * BATCH)])
        time.sleep(DELAY + 0.5)  # the late reply arrives: what was sent has run
        added = caught.value.added
        assert len(added) in (BATCH, 2 * BATCH)
        got = entries(r, app)
        assert len(got) == len(added) + BATCH
        assert [job.id.rsplit(":", 1)[1] for job in added] == [i for i, _ in got][: len(added)]
    finally:
        delete_namespace(app)
        app.close()
        proxy.close()
