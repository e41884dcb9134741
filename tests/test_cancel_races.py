"""Cancels that land in the windows between a worker's steps (review of issue 11), against a
real Redis with the real scripts: each ends the job `cancelled` with a record that expires,
frees its unique key and publishes, instead of leaving a job with no end.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from conveyor import Conveyor, Job, JobState
from conveyor.broker import operations
from conveyor.cancellation import CancelOutcome, cancel
from conveyor.errors import JobCancelled
from conveyor.keys import GROUP, QueueKeys
from conveyor.limits import Limits, RateLimit
from tests import limits_driver as driver
from tests.conftest import fast, wait_until, worker_thread

TTL = 60_000


@pytest.fixture
def keys(app: Conveyor) -> QueueKeys:
    return driver.setup(app)


def record(r: redis.Redis, keys: QueueKeys, job_id: str) -> dict[str, object]:
    return dict(json.loads(r.get(keys.record(job_id)) or b"{}"))


def test_a_cancel_between_delivery_and_the_limit_gate_ends_the_job_instead_of_parking_it(
    app: Conveyor, keys: QueueKeys, r: redis.Redis
) -> None:
    limit = Limits(rate=RateLimit.parse("1/h"))
    driver.add_jobs(app, keys, "t", ["x", "x"])
    first, second = app.broker.call(operations.fetch(keys, "w", 2))
    id1, p1, rec1, _ = driver.parking(first)
    id2, p2, rec2, _ = driver.parking(second)
    assert app.broker.call(limit.gate(keys, "w", first, id1, p1, rec1, task="t", lease_ms=0)).run
    # delivered, not yet past its gate: the cancel finds it pending and only marks it
    assert cancel(app.broker, keys, id2, ttl_ms=TTL).outcome == CancelOutcome.SIGNALLED
    with r.pubsub() as sub:
        sub.subscribe(keys.done_channel)
        sub.get_message(timeout=1)
        gated = app.broker.call(
            limit.gate(keys, "w", second, id2, p2, rec2, task="t", lease_ms=0, ttl_ms=TTL)
        )
        published = sub.get_message(timeout=2)
    assert gated.outcome == "cancelled"
    assert record(r, keys, id2)["state"] == "cancelled"
    assert 0 < r.pttl(keys.record(id2)) <= TTL
    assert published is not None and published["data"] == keys.record(id2).encode()
    # not parked, unmarked, acked: nothing brings it back with a record that forgot the cancel
    assert r.zscore(keys.delayed, id2) is None and not r.hexists(keys.payloads, id2)
    assert not r.sismember(keys.cancelled, id2)
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 1  # only the admitted one
    driver.promote_due(app, keys)
    assert app.broker.call(operations.fetch(keys, "w", 10)) == []
    assert record(r, keys, id2)["state"] == "cancelled"


def promote_now(app: Conveyor, keys: QueueKeys) -> None:
    ids, _ = app.broker.call(operations.due(keys, 10))
    assert ids and app.broker.call(operations.promote(keys, ids)) == len(ids)


@pytest.mark.parametrize("path", ["fetch", "blocking read"])
def test_a_stale_cancel_mark_ends_the_job_cancelled_instead_of_dropping_it_with_no_end(
    app: Conveyor, r: redis.Redis, path: str
) -> None:
    """A mark whose job's record does not say `cancelled` (a cancel that found the entry
    delivered, the job then moved back to the queue): the fetch used to ack the entry and
    drop the mark, leaving the record `queued` for ever, the unique key held and result()
    waiting. Now the worker ends it: `cancelled`, with a TTL, key freed, published. Both
    ways a worker reads: fetch.lua (the job is queued when the worker starts) and the
    blocking read (promoted while the worker idles)."""
    ran: list[int] = []

    @app.task
    def t() -> None:
        ran.append(1)

    keys = app.keys("default")
    once = t.using(unique_key="k", unique_for=None)

    def stale() -> Job[None]:
        job = once.enqueue_in(0)
        r.sadd(keys.cancelled, job.id)  # the mark of a cancel that found it delivered
        promote_now(app, keys)
        return job

    job = stale() if path == "fetch" else None
    with worker_thread(app, fast(promote_every=3600.0, block_ms=5000)):
        if job is None:
            time.sleep(0.3)  # the worker is idle, in its blocking read
            job = stale()
        wait_until(lambda: job.status() is JobState.CANCELLED, 15, "the job to end cancelled")
        with pytest.raises(JobCancelled):
            job.result(timeout=5)
    assert ran == []
    assert r.pttl(keys.record(job.id)) > 0
    assert not r.exists(keys.unique("k")) and r.scard(keys.cancelled) == 0
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 0


def commands(r: redis.Redis, name: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0))


def test_jobs_read_by_the_blocking_read_pay_no_cancel_check_when_nothing_is_cancelled(
    app: Conveyor, r: redis.Redis
) -> None:
    """The cancelled set is counted in the blocking read's own pipeline: with no cancel
    pending, no script and no SMISMEMBER follow a read (skip_cancelled.lua used to be
    sent after every blocking read that returned entries: one more round trip per job at
    low load). Run alone, the counters are Redis' own (INFO commandstats)."""
    done: list[int] = []

    @app.task
    def t(i: int) -> None:
        done.append(i)

    with worker_thread(app, fast(promote_every=3600.0, block_ms=5000)):
        time.sleep(0.3)  # idle, in its blocking read
        before = commands(r, "smismember")
        for i in range(5):
            t.enqueue(i)
            wait_until(lambda i=i: len(done) == i + 1, 10, f"job {i} to run")  # type: ignore[misc]
            time.sleep(0.05)  # back in the blocking read
        assert commands(r, "smismember") == before
    assert done == [0, 1, 2, 3, 4]


def test_a_job_cancelled_while_held_ends_at_shutdown_with_its_tasks_result_ttl(
    app: Conveyor, r: redis.Redis
) -> None:
    """The shutdown requeue ends a marked job `cancelled`: its record is kept for its task's
    result_ttl (30 s here), not the default day."""
    started = threading.Event()
    release = threading.Event()

    @app.task(result_ttl=30)
    def slow(i: int) -> None:
        if i == 0:
            started.set()
            release.wait(10)

    keys = app.keys("default")
    first = slow.enqueue(0)
    with worker_thread(app, fast(concurrency=1, prefetch=1, shutdown_grace=5.0)):
        assert started.wait(10)
        held = slow.enqueue(1)
        wait_until(lambda: r.xinfo_groups(keys.stream("normal"))[0]["lag"] == 0, 10, "the prefetch")
        assert cancel(app.broker, keys, held.id, ttl_ms=TTL).outcome == CancelOutcome.SIGNALLED
        threading.Timer(0.5, release.set).start()  # after the stop below has begun
    assert first.status() is JobState.DONE
    assert held.status() is JobState.CANCELLED
    assert 0 < r.pttl(keys.record(held.id)) <= 30_000
