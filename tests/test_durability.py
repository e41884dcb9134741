"""Durability on request: an enqueue followed by WAIT (or WAITAOF) on its own connection, on
real servers: the suite's standalone Redis (no replicas), the Sentinel group's master (one
replica) and the Cluster (one replica per master)."""

from __future__ import annotations

import time

import pytest

from conveyor import ConfigurationError, Conveyor, JobState
from conveyor.errors import NotReplicated
from conveyor.settings import Durability
from tests.redis_cluster import Cluster

#: the Cluster and Sentinel session fixtures (until tests/conftest.py lists them)


def test_enqueue_waiting_for_a_replica_that_does_not_exist_raises_not_replicated(
    app: Conveyor,
) -> None:
    @app.task
    def noop() -> None:
        return None

    t0 = time.monotonic()
    with pytest.raises(NotReplicated) as err:
        noop.using(wait_replicas=1, wait_timeout=0.2).enqueue()
    assert 0.15 <= time.monotonic() - t0 < 2.0, "WAIT waited its timeout"
    message = str(err.value)
    assert "\n" not in message and "only 0 of 1 replicas" in message, message
    assert err.value.confirmed == 0 and err.value.wanted == 1
    [job] = err.value.added
    assert job.status() is JobState.QUEUED, "the job was added; only its replication is unsure"


def test_an_app_default_durability_applies_and_a_task_can_turn_it_off(redis_url: str) -> None:
    app = Conveyor(redis_url, namespace="durability-test", durability=Durability(1, 0.1))
    try:

        @app.task
        def noop() -> None:
            return None

        with pytest.raises(NotReplicated):
            noop.enqueue()
        with pytest.raises(NotReplicated) as err:
            noop.enqueue_many([() for _ in range(3)])
        assert len(err.value.added) == 3
        assert noop.using(wait_replicas=0).enqueue().status() is JobState.QUEUED
    finally:
        from conveyor.testing import delete_namespace

        delete_namespace(app)
        app.close()


async def test_async_enqueue_waits_too(app: Conveyor) -> None:
    @app.task
    def noop() -> None:
        return None

    with pytest.raises(NotReplicated):
        await noop.using(wait_replicas=1, wait_timeout=0.1).enqueue_async()
    with pytest.raises(NotReplicated):
        await noop.using(wait_replicas=1, wait_timeout=0.1).enqueue_many_async([()])


def test_waitaof_is_detected_at_run_time_and_refused_on_redis_7_0(app: Conveyor) -> None:
    @app.task
    def noop() -> None:
        return None

    assert app.broker.server_info().version < (7, 2, 0), "this test is about a 7.0 server"
    with pytest.raises(ConfigurationError) as err:
        noop.using(wait_replicas=1, wait_aof=True).enqueue()
    assert "WAITAOF (Redis 7.2+)" in str(err.value)


def test_a_replica_confirms_through_sentinel(sentinel_app: Conveyor) -> None:
    @sentinel_app.task
    def noop() -> None:
        return None

    job = noop.using(wait_replicas=1, wait_timeout=2.0).enqueue()
    assert job.status() is JobState.QUEUED
    with pytest.raises(NotReplicated) as err:
        noop.using(wait_replicas=2, wait_timeout=0.2).enqueue()
    assert err.value.confirmed == 1


def test_replicas_confirm_on_every_cluster_node(cluster_app: Conveyor, cluster: Cluster) -> None:
    @cluster_app.task
    def noop() -> None:
        return None

    queues = [f"q{i}" for i in range(16)]
    jobs = cluster_app.enqueue_many(
        [noop.using(queue=q).s() for q in queues], durability=Durability(1, 2.0)
    )
    assert len(jobs) == 16
    job = noop.using(queue="q3", wait_replicas=1, wait_timeout=2.0).enqueue()
    assert job.status() is JobState.QUEUED
