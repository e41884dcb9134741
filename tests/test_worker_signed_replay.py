"""Signed jobs end once: dead-letter replays of them verify, copies of them never run twice."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import Backoff, Conveyor, JobFailed, JobState, dead_letters
from conveyor.keys import GROUP
from conveyor.settings import Leases, WorkerSettings
from conveyor.testing import worker_thread
from tests.conftest import wait_until

KEY = b"replay-key-0123456789abcdef"


def _signed(redis_url: str, namespace: str) -> Conveyor:
    return Conveyor(redis_url, namespace=namespace, signing_keys=[KEY])


def test_a_job_the_worker_dead_lettered_replays_under_signing_and_runs(
    redis_url: str, namespace: str
) -> None:
    app = _signed(redis_url, namespace)
    runs: list[int] = []

    @app.task(retries=1, backoff=Backoff(base=0.01, cap=0.02))
    def flaky(n: int) -> int:
        runs.append(n)
        if len(runs) <= 2:
            raise RuntimeError(f"failure {len(runs)}")
        return n * 10

    try:
        job = flaky.enqueue(4)
        with worker_thread(app):
            with pytest.raises(JobFailed):
                job.result(timeout=10)
            [dead] = dead_letters.list_dead(app, "default")
            # The dead entry keeps the signed fields of the copy that died, byte for byte,
            # and the whole history of the job under its own name.
            history = dead.history
            assert [h["attempt"] for h in history] == [1, 2]
            assert "failure 1" in history[0]["error"] and "failure 2" in history[1]["error"]
            assert app.signer is not None
            assert app.signer.verify(dead.original(), "default", dead.level)
            assert dead_letters.replay(app, "default", dead.entry_id) == job.id
            assert job.result(timeout=10) == 40
        assert runs == [4, 4, 4]
        assert job.status() is JobState.DONE
    finally:
        app.close()


def _fast(**changes: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "concurrency": 2,
        "leases": Leases(timeout=0.5, reclaim_every=0.1),
        "block_ms": 100,
        "promote_every": 0.05,
        "shutdown_grace": 3.0,
    }
    values.update(changes)
    return WorkerSettings(**values)


def test_a_signed_copy_of_an_ended_job_reclaimed_from_a_made_up_consumer_is_not_run(
    redis_url: str, namespace: str
) -> None:
    app = _signed(redis_url, namespace)
    runs: list[int] = []

    @app.task
    def once(n: int) -> int:
        runs.append(n)
        return n

    client = app.broker.client
    keys = app.keys("default")
    stream = keys.stream("normal")
    try:
        job = once.enqueue(3)
        with worker_thread(app, _fast()):
            assert job.result(timeout=10) == 3
        [(_, fields)] = client.xrange(stream)
        copy = client.xadd(stream, fields)
        got = client.xreadgroup(GROUP, "made-up", {stream: ">"}, count=10)
        assert [e for _, entries in got for e, _ in entries] == [copy]
        with worker_thread(app, _fast()):
            wait_until(lambda: client.xlen(keys.dead) == 1, 10, "the copy dead-lettered")
        [(_, dead)] = client.xrange(keys.dead)
        assert dead[b"dead_reason"] == b"replayed_ended_job"
        assert dead[b"dead_from"] == b"normal:" + copy
        assert runs == [3], "the reclaimed copy of an ended job ran again"
        assert job.status() is JobState.DONE
    finally:
        app.close()


def test_a_signed_copy_read_while_its_job_is_still_queued_does_not_run_it_twice(
    redis_url: str, namespace: str
) -> None:
    app = _signed(redis_url, namespace)
    runs: list[int] = []

    @app.task
    def once(n: int) -> int:
        runs.append(n)
        return n

    client = app.broker.client
    keys = app.keys("default")
    stream = keys.stream("normal")
    try:
        job = once.enqueue(5)
        [(original, fields)] = client.xrange(stream)
        copy = client.xadd(stream, fields)
        with worker_thread(app, _fast()):
            assert job.result(timeout=10) == 5
            wait_until(lambda: client.xlen(keys.dead) == 1, 10, "the copy dead-lettered")
        [(_, dead)] = client.xrange(keys.dead)
        assert dead[b"dead_reason"] == b"duplicate_of_queued_job"
        assert dead[b"dead_from"] == b"normal:" + copy
        assert runs == [5], "the copy ran the job a second time"
        assert job.status() is JobState.DONE
        assert original != copy
    finally:
        app.close()
