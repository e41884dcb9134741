"""Conveyor through ``redis+sentinel://`` on a real Sentinel group (1 master, 1 replica, 3
sentinels, tests/redis_cluster.py): producers, idle workers (the blocking fetch connection)
and failover, planned and by SIGKILL."""

from __future__ import annotations

import time

import pytest

from conveyor import Conveyor, JobState
from tests.conftest import fast, wait_until, worker_thread
from tests.redis_cluster import SentinelGroup

#: the Cluster and Sentinel session fixtures (until tests/conftest.py lists them)


def test_an_idle_worker_blocks_and_wakes_through_sentinel(sentinel_app: Conveyor) -> None:
    """The blocking fetch connection is made through Sentinel (it once crashed with
    ``unexpected keyword argument 'single_connection_client'``)."""

    @sentinel_app.task
    def add(a: int, b: int) -> int:
        return a + b

    with worker_thread(sentinel_app, fast(block_ms=5000)):
        time.sleep(0.5)  # nothing queued: the worker is in its blocking read
        assert add.enqueue(2, 3).result(timeout=10) == 5
        time.sleep(0.5)  # blocked again
        t0 = time.monotonic()
    # CLIENT UNBLOCK ended the 5 s read at once
    assert time.monotonic() - t0 < 2.0


def _run_through_failover(
    app: Conveyor, group: SentinelGroup, fail: str, before: int = 50, after: int = 50
) -> None:
    @app.task
    def square(x: int) -> int:
        return x * x

    with worker_thread(app, fast(block_ms=500)):
        first = square.enqueue_many([(i,) for i in range(before)])
        wait_until(lambda: all(j.status() is JobState.DONE for j in first), 20, "first jobs")
        old = group.master_port()
        if fail == "sigkill":
            killed = group.kill_master()
        else:
            group.failover()
        try:
            took = group.wait_promoted(old)
            second = square.enqueue_many([(i,) for i in range(after)])
            assert [j.result(timeout=30) for j in second] == [i * i for i in range(after)]
        finally:
            if fail == "sigkill":
                killed.start()  # it rejoins as a replica of the promoted master
    assert took < 30


def test_a_worker_follows_a_planned_failover(
    sentinel_app: Conveyor,
    sentinel_group: SentinelGroup,
) -> None:
    _run_through_failover(sentinel_app, sentinel_group, "failover")


@pytest.mark.timeout(90)
def test_a_worker_follows_a_sigkilled_master_to_the_promoted_replica(
    sentinel_app: Conveyor,
    sentinel_group: SentinelGroup,
) -> None:
    _run_through_failover(sentinel_app, sentinel_group, "sigkill")
