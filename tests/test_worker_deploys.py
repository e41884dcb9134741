"""Rolling deploys: an old and a new version of an app serve one queue (issue 8, item 5).

Two real worker processes run two versions of an app (tests/deployapp_v1.py lacks the task
``new_task`` that tests/deployapp_v2.py adds). A job the old worker cannot run goes back for
the new one instead of being dead-lettered, and is dead-lettered as ``unknown_task`` only
when no live worker registers its task, after a bounded wait.
"""

# ruff: noqa: F811 - the spawn fixture is imported, then named as an argument
from __future__ import annotations

import time

import pytest
import redis

from conveyor import Conveyor, JobFailed, JobState
from tests.test_reliability import Spawn, dead_entries, pending, spawn, wait_for  # noqa: F401

LEASE = 1.0


@pytest.fixture
def new_app(app: Conveyor) -> Conveyor:
    """The test's producer, knowing the new task (to enqueue it by name)."""

    @app.task(retries=0)
    def new_task(n: int) -> dict[str, int]:
        raise AssertionError("runs only in a worker")

    return app


@pytest.mark.timeout(90)
def test_jobs_of_a_new_task_all_run_on_the_new_worker_while_an_old_one_shares_the_queue(
    new_app: Conveyor, r: redis.Redis, spawn: Spawn
) -> None:
    old = spawn(app="tests.deployapp_v1:app", concurrency=4, lease=LEASE).wait_ready()
    new = spawn(app="tests.deployapp_v2:app", concurrency=4, lease=LEASE).wait_ready()
    jobs = [new_app.enqueue("new_task", i) for i in range(20)]
    results = [j.result(timeout=60) for j in jobs]
    assert [res["n"] for res in results] == list(range(20))
    assert {res["pid"] for res in results} == {new.pid}
    assert dead_entries(r, new_app) == []
    assert old.alive() and new.alive()
    wait_for(lambda: not pending(r, new_app), 5, "an empty PEL")


@pytest.mark.timeout(90)
def test_a_job_of_a_task_no_live_worker_registers_ends_dead_after_a_bounded_wait(
    new_app: Conveyor, r: redis.Redis, spawn: Spawn
) -> None:
    spawn(app="tests.deployapp_v1:app", concurrency=2, lease=LEASE).wait_ready()
    started = time.monotonic()
    job = new_app.enqueue("new_task", 1)
    wait_for(lambda: job.status() is JobState.DEAD, 30, "the job to be dead-lettered")
    waited = time.monotonic() - started
    # bounded: about three lease timeouts of bounces, not at once and not forever
    assert 2.0 <= waited <= 20, waited
    with pytest.raises(JobFailed, match="unknown task 'new_task'"):
        job.result(timeout=1)
    [dead] = dead_entries(r, new_app)
    assert dead["dead_reason"] == "unknown_task"
    assert dead["id"] == job.id
