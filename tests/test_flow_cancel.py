"""Cancelling jobs in every state with 3 real worker processes (issue 11, item 1).

Workers are ``python -m tests.workerproc --app tests.test_flow_tasks:app``; the tasks write
a ledger file outside Redis, so "it never ran", "its finally ran" and "it ran once" are read
from there, not from Redis.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor import Conveyor, JobState
from conveyor.cancellation import CancelOutcome
from conveyor.errors import JobCancelled, JobNotFound
from conveyor.keys import GROUP
from tests import test_flow_tasks as flow
from tests.conftest import wait_until
from tests.test_reliability import Spawn, WorkerProc

LEASE = 1.5  # renewals (and so cancel checks) every 0.5 s


def lines(path: Path, event: str | None = None) -> list[list[str]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line]
    return [r for r in rows if event is None or r[0] == event]


def tags(path: Path, event: str) -> list[str]:
    return [r[1] for r in lines(path, event)]


def three(spawn: Spawn, **options: Any) -> list[WorkerProc]:
    procs = [spawn(lease=LEASE, **options) for _ in range(3)]
    return [p.wait_ready() for p in procs]


def ended(job: Any, timeout: float = 15.0) -> JobState:
    wait_until(lambda: job.status().finished, timeout, f"job {job.id} to end")
    return job.status()  # type: ignore[no-any-return]


def pending(r: redis.Redis, app: Conveyor) -> int:
    return int(r.xpending(app.keys("default").stream("normal"), GROUP)["pending"])


def test_queued_job_never_runs_and_ends_cancelled(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, r: redis.Redis
) -> None:
    job = flow.long_async.enqueue(str(ledger), "queued", 0.0)
    after = flow.plain.enqueue(str(ledger), 1)
    res = job.cancel()
    assert res.outcome is CancelOutcome.WILL_SKIP
    assert job.status() is JobState.CANCELLED  # at once, before any worker read it
    three(spawn)
    assert ended(after) is JobState.DONE  # read after it: the cancelled entry was skipped
    time.sleep(LEASE / 3 * 2)
    assert tags(ledger, "START") == []
    assert pending(r, flow_app) == 0  # acked when skipped, not left for reclaim
    with pytest.raises(JobCancelled):
        job.result(timeout=1)
    assert r.scard(flow_app.keys("default").prefix + "cancelled") == 0


def test_delayed_job_is_removed_and_ends_cancelled(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, r: redis.Redis
) -> None:
    three(spawn)
    job = flow.long_async.enqueue_in(1.0, str(ledger), "delayed", 0.0)
    assert job.cancel().outcome is CancelOutcome.CANCELLED
    assert job.status() is JobState.CANCELLED
    assert r.zcard(flow_app.keys("default").delayed) == 0
    time.sleep(2.0)  # past its due time: nothing promoted it
    assert tags(ledger, "START") == []


def test_running_async_job_is_cancelled_within_a_renewal_and_its_finally_runs(
    flow_app: Conveyor, spawn: Spawn, ledger: Path
) -> None:
    three(spawn)
    job = flow.long_async.enqueue(str(ledger), "async", 30.0)
    wait_until(lambda: tags(ledger, "START") == ["async"], 10, "the job to start")
    at = time.time()
    assert job.cancel().outcome is CancelOutcome.SIGNALLED
    wait_until(lambda: tags(ledger, "FINALLY") == ["async"], 10, "its finally to run")
    took = float(lines(ledger, "FINALLY")[0][2]) - at
    assert took < 3 * LEASE / 3, f"cancelled after {took:.2f} s (renewal every {LEASE / 3} s)"
    assert ended(job) is JobState.CANCELLED
    time.sleep(LEASE)
    assert tags(ledger, "START") == ["async"]  # not retried (it has retries=3)
    assert tags(ledger, "DONE") == []
    with pytest.raises(JobCancelled):
        job.result(timeout=1)


def test_running_sync_job_sees_cancelled_and_ends_cancelled(
    flow_app: Conveyor, spawn: Spawn, ledger: Path
) -> None:
    three(spawn)
    job = flow.cooperative.enqueue(str(ledger), "sync", 30.0)
    wait_until(lambda: tags(ledger, "START") == ["sync"], 10, "the job to start")
    assert job.cancel().outcome is CancelOutcome.SIGNALLED
    wait_until(lambda: tags(ledger, "SAW_CANCEL") == ["sync"], 10, "the task to see it")
    assert ended(job) is JobState.CANCELLED
    time.sleep(LEASE)
    assert tags(ledger, "START") == ["sync"]


def test_process_pool_job_is_killed_and_ends_cancelled(
    flow_app: Conveyor, spawn: Spawn, ledger: Path
) -> None:
    three(spawn)
    job = flow.pool_long.enqueue(str(ledger), "pool", 30.0)
    wait_until(lambda: tags(ledger, "START") == ["pool"], 30, "the job to start")
    child = int(lines(ledger, "START")[0][3])
    assert job.cancel().outcome is CancelOutcome.SIGNALLED
    assert ended(job) is JobState.CANCELLED

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, 10, f"pool child {child} to be killed")
    time.sleep(LEASE)
    assert tags(ledger, "START") == ["pool"] and tags(ledger, "DONE") == []


def test_cancel_of_a_finished_job_is_a_no_op_that_says_so(
    flow_app: Conveyor, spawn: Spawn, ledger: Path
) -> None:
    three(spawn)
    job = flow.plain.enqueue(str(ledger), 7)
    assert ended(job) is JobState.DONE
    res = job.cancel()
    assert res.outcome is CancelOutcome.ALREADY_ENDED and res.detail == "done"
    assert job.status() is JobState.DONE


def test_cancel_of_an_unknown_id_is_a_clear_error(flow_app: Conveyor) -> None:
    job = flow_app.job("default:n:1-0")
    with pytest.raises(JobNotFound, match="conveyor status"):
        job.cancel()


def test_cancel_racing_the_fetch_runs_or_cancels_never_both_never_lost(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, r: redis.Redis
) -> None:
    """Cancels land at random moments around the fetch of each job: every job either ran
    to its end (state done, DONE once) or ended cancelled (no DONE), none both or lost."""
    three(spawn, concurrency=4)
    rng = random.Random(11)
    jobs = []
    for i in range(60):
        jobs.append(flow.long_async.enqueue(str(ledger), f"j{i}", rng.choice([0.0, 0.05, 0.3])))
        time.sleep(rng.choice([0.0, 0.002, 0.01]))
        if i % 2:
            jobs[rng.randrange(len(jobs))].cancel()
    states = {job.id: ended(job, 30) for job in jobs}
    time.sleep(LEASE)
    done = tags(ledger, "DONE")
    started = tags(ledger, "START")
    for i, job in enumerate(jobs):
        tag = f"j{i}"
        assert states[job.id] in (JobState.DONE, JobState.CANCELLED), (tag, states[job.id])
        assert started.count(tag) <= 1, f"{tag} ran {started.count(tag)} times"
        if states[job.id] is JobState.DONE:
            assert done.count(tag) == 1, f"{tag} is done but its end ran {done.count(tag)}x"
        else:
            assert done.count(tag) == 0, f"{tag} ended cancelled after running to its end"
    assert pending(r, flow_app) == 0
    assert r.scard(flow_app.keys("default").prefix + "cancelled") == 0
    assert any(s is JobState.CANCELLED for s in states.values())


def test_a_job_cancelled_while_its_worker_is_dead_is_not_run_again_when_reclaimed(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, r: redis.Redis
) -> None:
    """SIGKILL the worker running a job, cancel the job (it is still pending, so only
    marked), then let another worker reclaim it: it ends cancelled instead of running."""
    first = spawn(lease=LEASE).wait_ready()
    job = flow.long_async.enqueue(str(ledger), "orphan", 30.0)
    wait_until(lambda: tags(ledger, "START") == ["orphan"], 10, "the job to start")
    first.signal(signal.SIGKILL)
    first.proc.wait(10)
    assert job.cancel().outcome is CancelOutcome.SIGNALLED
    spawn(lease=LEASE).wait_ready()
    assert ended(job, 5 * LEASE) is JobState.CANCELLED
    time.sleep(LEASE)
    assert tags(ledger, "START") == ["orphan"]  # never ran again
    assert pending(r, flow_app) == 0
