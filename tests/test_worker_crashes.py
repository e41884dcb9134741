"""What a task cannot do to its worker, proven with real worker processes (issue 8, 1 and 6).

A task raising SystemExit or KeyboardInterrupt fails its own job and nothing else; a worker
whose slot dies exits non-zero (so its supervisor restarts it) and hands back its jobs
instead of dead-lettering them; a sync task stuck past its timeout does not cost a later
job its run.
"""

# ruff: noqa: F811 - the spawn/tasks_app fixtures are imported, then named as arguments
from __future__ import annotations

import json

import pytest
import redis

from conveyor import Conveyor, JobFailed, JobState
from conveyor.keys import worker_key
from tests.test_reliability import (  # noqa: F401 - fixtures, used by name
    Spawn,
    dead_entries,
    pending,
    spawn,
    tasks_app,
    wait_for,
)


@pytest.mark.timeout(60)
def test_a_task_calling_sys_exit_fails_its_job_and_the_worker_keeps_working(
    tasks_app: Conveyor, r: redis.Redis, spawn: Spawn
) -> None:
    w = spawn(concurrency=4, lease=3.0).wait_ready()
    quitters = [tasks_app.enqueue("quits", f"q{i}") for i in range(8)]
    for job in quitters:
        with pytest.raises(JobFailed, match="SystemExit"):
            job.result(timeout=15)
    # every slot survived: later jobs, more than one at a time, still run
    later = [tasks_app.enqueue("record", f"r{i}", 0.2) for i in range(8)]
    assert [j.result(timeout=15)["tag"] for j in later] == [f"r{i}" for i in range(8)]
    assert w.alive(), w.log()
    dead = dead_entries(r, tasks_app)
    assert len(dead) == 8
    assert {d["dead_reason"] for d in dead} == {"failed"}
    assert all("SystemExit: 3" in d["dead_error"] for d in dead)
    assert all("sys.exit(3)" in d["dead_traceback"] for d in dead)
    wait_for(lambda: not pending(r, tasks_app), 5, "an empty PEL")


@pytest.mark.timeout(60)
def test_an_async_task_raising_keyboard_interrupt_fails_its_job_and_the_process_survives(
    tasks_app: Conveyor, r: redis.Redis, spawn: Spawn
) -> None:
    w = spawn(concurrency=4, lease=3.0).wait_ready()
    slow = tasks_app.enqueue("record", "beside", 1.0)
    wait_for(lambda: slow.status() is JobState.RUNNING, 10, "the slow job to start")
    bad = tasks_app.enqueue("interrupts", "kbd")
    with pytest.raises(JobFailed, match="KeyboardInterrupt"):
        bad.result(timeout=15)
    assert slow.result(timeout=15)["tag"] == "beside"
    after = tasks_app.enqueue("record", "after", 0.0)
    assert after.result(timeout=15)["tag"] == "after"
    assert w.alive(), w.log()
    dead = dead_entries(r, tasks_app)
    assert [d["dead_reason"] for d in dead] == ["failed"]
    assert "CancelledError" not in dead[0]["dead_error"]


@pytest.mark.timeout(60)
def test_a_worker_whose_slot_dies_exits_non_zero_and_hands_back_its_other_jobs(
    tasks_app: Conveyor, r: redis.Redis, spawn: Spawn
) -> None:
    w = spawn(concurrency=2, lease=3.0, grace=0.5).wait_ready()
    long = tasks_app.enqueue("record", "long", 30.0)
    wait_for(lambda: long.status() is JobState.RUNNING, 10, "the long job to start")
    tasks_app.enqueue("cancels_its_slot", "killer")
    code = w.wait_exit(20)
    assert code != 0, w.log()
    assert "WorkerCrashed" in w.log() or "ended while the worker was running" in w.log()
    # the interrupted job went back to its stream: not dead-lettered, not left to a lease
    assert dead_entries(r, tasks_app) == []
    assert long.status() is JobState.QUEUED
    assert not pending(r, tasks_app)


@pytest.mark.timeout(60)
def test_a_sync_task_stuck_past_its_timeout_does_not_starve_the_next_sync_job(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    w = spawn(concurrency=1, lease=3.0, grace=0.5).wait_ready()
    a = tasks_app.enqueue("stuck_sync", "a", 4.0)  # timeout 0.5 s
    b = tasks_app.enqueue("quick_sync", "b")  # timeout 1 s, counted from its own start
    with pytest.raises(JobFailed, match="timeout"):
        a.result(timeout=15)
    assert b.result(timeout=15)["tag"] == "b"

    def stuck_threads() -> int:
        raw = r.get(worker_key(namespace, w.consumer))
        return int(json.loads(raw).get("stuck_threads", 0)) if raw else 0

    # the stuck thread is reported in the worker's registry entry (for stats) and its log
    wait_for(lambda: stuck_threads() == 1, 5, "the registry to report one stuck thread")
    assert "its thread is stuck" in w.log()
