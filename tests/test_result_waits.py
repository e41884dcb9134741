"""job.result() waits borrow pub/sub connections kept between waits (broker/pubsubs.py).

What must hold: a borrowed pub/sub hears only its own job's end (the messages left over from
earlier waits are dropped), waits at once each get their own, a timeout gives it back clean,
and a pub/sub whose connection Redis dropped does not break the next wait.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis

from conveyor import Conveyor
from conveyor.broker.pubsubs import KEEP
from conveyor.errors import JobTimeout
from tests.conftest import fast, worker_thread
from tests.redis_servers import RedisServer


def test_sequential_waits_reuse_one_pub_sub_and_each_gets_its_own_result(app: Conveyor) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    with worker_thread(app, fast(concurrency=4)):
        assert double.enqueue(0).result(timeout=10) == 0
        kept = list(app.broker.pubsubs._idle)
        assert len(kept) == 1
        for i in range(1, 30):
            others = [double.enqueue(100 + k) for k in range(3)]  # messages a wait must skip
            assert double.enqueue(i).result(timeout=10) == 2 * i
            assert [o.result(timeout=10) for o in others] == [200 + 2 * k for k in range(3)]
        assert app.broker.pubsubs._idle == kept  # the same pub/sub, every time


def test_a_timed_out_wait_gives_its_pub_sub_back_and_the_next_wait_works(app: Conveyor) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    queued = double.enqueue(1)  # no worker yet: it cannot finish
    with pytest.raises(JobTimeout):
        queued.result(timeout=0.2)
    assert len(app.broker.pubsubs._idle) == 1
    with worker_thread(app, fast()):
        assert queued.result(timeout=10) == 2
    assert len(app.broker.pubsubs._idle) == 1


def test_waits_at_once_each_borrow_their_own(app: Conveyor) -> None:
    @app.task
    def slow_double(x: int) -> int:
        threading.Event().wait(0.2)
        return 2 * x

    results: dict[int, int] = {}

    def wait(i: int) -> None:
        results[i] = slow_double.enqueue(i).result(timeout=20)

    with worker_thread(app, fast(concurrency=12)):
        threads = [threading.Thread(target=wait, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert results == {i: 2 * i for i in range(12)}
    assert len(app.broker.pubsubs._idle) == KEEP  # the rest were closed, not hoarded


def test_async_waits_reuse_pub_subs_per_loop(app: Conveyor) -> None:
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    async def main() -> list[int]:
        first = await (await double.enqueue_async(0)).result_async(timeout=10)
        kept = list(app.broker.pubsubs._aidle[asyncio.get_running_loop()])
        jobs = [await double.enqueue_async(i) for i in range(1, 6)]
        together = await asyncio.gather(*(j.result_async(timeout=10) for j in jobs))
        again = await (await double.enqueue_async(7)).result_async(timeout=10)
        idle = app.broker.pubsubs._aidle[asyncio.get_running_loop()]
        assert kept[0] in idle and len(idle) == 5
        await app.aclose()
        return [first, *together, again]

    with worker_thread(app, fast(concurrency=8)):
        assert asyncio.run(main()) == [0, 2, 4, 6, 8, 10, 14]


def test_a_pub_sub_whose_connection_was_dropped_still_serves_the_next_wait() -> None:
    with RedisServer() as server:
        app = Conveyor(server.url, namespace="waits")

        @app.task
        def double(x: int) -> int:
            return 2 * x

        admin = redis.Redis.from_url(server.url)
        try:
            with worker_thread(app, fast()):
                assert double.enqueue(1).result(timeout=10) == 2
                assert admin.client_kill_filter(_type="pubsub") >= 0
                admin.execute_command("CLIENT", "KILL", "SKIPME", "yes")  # every other client
                assert double.enqueue(2).result(timeout=10) == 4
                assert double.enqueue(3).result(timeout=10) == 6
        finally:
            admin.close()
            app.close()
