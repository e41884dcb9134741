"""The core's behaviour through ``redis+sentinel://`` (tests/redis_cluster.py's group: 1 master,
1 replica, 3 sentinels), as tests/test_cluster.py checks it on Cluster.

Every test runs the real producer and worker code against the master Sentinel names, so the
producer's, the worker's and the blocking fetch connection's Sentinel paths all serve: enqueue
and result, retry to dead and replay, delayed and unique jobs, a vanished consumer's entry
reclaimed, a graceful stop handing back an unfinished job, cron once per tick with two
workers, and trimming under a backlog. (A real SIGKILLed worker: tests/test_scale_kill.py.)
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conveyor import Backoff, Conveyor, JobFailed, JobState, Retention, dead_letters
from conveyor.keys import GROUP
from tests.conftest import fast, wait_until, worker_thread


def test_jobs_run_and_return_results_through_sentinel(sentinel_app: Conveyor) -> None:
    @sentinel_app.task
    def add(a: int, b: int) -> int:
        return a + b

    with worker_thread(sentinel_app, fast()):
        assert add.enqueue(2, 3).result(timeout=10) == 5
        many = sentinel_app.enqueue_many([add.s(i, i) for i in range(300)])
        assert len(many) == 300
        assert [j.result(timeout=20) for j in many[-3:]] == [594, 596, 598]
        assert all(j.status() is JobState.DONE for j in many)


async def test_async_enqueue_and_result_through_sentinel(sentinel_app: Conveyor) -> None:
    @sentinel_app.task
    async def double(x: int) -> int:
        return 2 * x

    with worker_thread(sentinel_app, fast()):
        job = await double.enqueue_async(21)
        assert await job.result_async(timeout=10) == 42
        many = await sentinel_app.enqueue_many_async([double.s(i) for i in range(3)])
        assert [await j.result_async(timeout=10) for j in many] == [0, 2, 4]


def test_retries_then_dead_then_replay_through_sentinel(sentinel_app: Conveyor) -> None:
    calls: list[int] = []

    @sentinel_app.task(retries=1, backoff=Backoff(base=0.05, cap=0.05, jitter=False))
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) <= 2:
            raise ValueError("boom")
        return x

    with worker_thread(sentinel_app, fast()):
        job = flaky.enqueue(5)
        with pytest.raises(JobFailed):
            job.result(timeout=10)
        assert job.status() is JobState.DEAD
        dead = dead_letters.list_dead(sentinel_app, "default")
        assert len(dead) == 1 and dead[0].reason == "failed"
        new_id = dead_letters.replay(sentinel_app, "default", dead[0].entry_id)
        assert new_id is not None
        assert sentinel_app.job(new_id).result(timeout=10) == 5
    assert len(calls) == 3, "one run, one retry, one replayed run"
    assert dead_letters.list_dead(sentinel_app, "default") == [], "the replay left the dead stream"


def test_delayed_and_unique_jobs_through_sentinel(sentinel_app: Conveyor) -> None:
    @sentinel_app.task
    def echo(x: str) -> str:
        return x

    with worker_thread(sentinel_app, fast()):
        t0 = time.monotonic()
        later = echo.enqueue_in(0.5, "later")
        first = echo.using(unique_key="k1").enqueue("a")
        again = echo.using(unique_key="k1").enqueue("b")
        assert first.created and not again.created and again.id == first.id
        assert later.result(timeout=10) == "later"
        assert time.monotonic() - t0 >= 0.45, "the delayed job ran early"
        assert first.result(timeout=10) == "a"


def test_entry_of_a_vanished_consumer_is_reclaimed_through_sentinel(
    sentinel_app: Conveyor,
) -> None:
    @sentinel_app.task
    def work() -> str:
        return "ok"

    job = work.enqueue()
    stream = sentinel_app.keys("default").stream("normal")
    client = sentinel_app.broker.client
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    assert client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1), "the ghost read the job"
    with worker_thread(sentinel_app, fast()):
        assert job.result(timeout=15) == "ok"
    info = job.info()
    assert info.record is not None and info.record.worker != "ghost"


def test_graceful_stop_hands_back_an_unfinished_job_through_sentinel(
    sentinel_app: Conveyor,
) -> None:
    started = threading.Event()

    @sentinel_app.task
    async def slow() -> str:
        import asyncio

        started.set()
        await asyncio.sleep(30)
        return "never"

    job = slow.enqueue()
    with worker_thread(sentinel_app, fast(shutdown_grace=0.2)):
        assert started.wait(10)
    assert job.status() is JobState.QUEUED, "the unfinished job went back to its stream"
    stream = sentinel_app.keys("default").stream("normal")
    pending = sentinel_app.broker.client.xpending(stream, GROUP)
    assert pending["pending"] == 0, "nothing is left held by the stopped worker"


def test_cron_ticks_once_with_two_workers_through_sentinel(sentinel_app: Conveyor) -> None:
    runs: list[float] = []
    lock = threading.Lock()

    @sentinel_app.cron("* * * * * *", grace=5)
    def tick() -> None:
        with lock:
            runs.append(time.time())

    settings = fast(concurrency=2)
    with worker_thread(sentinel_app, settings), worker_thread(sentinel_app, settings):
        time.sleep(3.5)
    ticks = list(
        sentinel_app.broker.client.scan_iter(
            match=f"{sentinel_app.namespace}:{{default}}:unique:cron:tick:*"
        )
    )
    assert len(ticks) >= 2
    # one run per tick key; the last tick may still have been queued when the workers stopped
    assert len(ticks) - 1 <= len(runs) <= len(ticks), (len(runs), len(ticks))


def test_trimming_a_backlog_keeps_every_unfinished_job_through_sentinel(
    sentinel_app: Conveyor,
) -> None:
    total, keep = 1500, 200
    ran: list[int] = []
    lock = threading.Lock()

    @sentinel_app.task
    async def work(i: int) -> None:
        await asyncio.sleep(0.004)  # the drain outlasts a few trims (0.2 s apart) at any speed
        with lock:
            ran.append(i)

    client = sentinel_app.broker.client
    stream = sentinel_app.keys("default").stream("normal")
    with worker_thread(sentinel_app, fast(concurrency=1)):
        pass  # the consumer group now exists at id 0, with nothing read
    jobs = work.enqueue_many([(i,) for i in range(total)])
    assert client.xlen(stream) == total
    retention = Retention(keep_count=keep, trim_every=0.2)
    samples: list[tuple[int, int]] = []
    with worker_thread(sentinel_app, fast(concurrency=8, retention=retention)) as w:
        deadline = time.monotonic() + 30
        while True:
            xlen = client.xlen(stream)
            with lock:
                done = len(ran)
            samples.append((xlen, done))
            # every job not yet run is still in the stream (`done` read after xlen)
            assert xlen >= total - done, f"{xlen} entries left but {total - done} jobs unrun"
            if done >= total:
                break
            assert time.monotonic() < deadline, f"only {done} of {total} jobs ran in 30 s"
            time.sleep(0.02)
        wait_until(lambda: client.xlen(stream) <= keep + 100, 10, "the history to be trimmed")
        counts = dict(w.counts)
    assert sorted(ran) == list(range(total)), "a job was lost or ran twice"
    assert counts["done"] == total and counts["lost"] == 0
    assert [(x, d) for x, d in samples if x < total and d < total], "no trim during the drain"
    assert jobs[-1].status() is JobState.DONE
