"""Expiry, progress, the process pool, unique-until-done and the hot path's cost, each
through real worker processes (issue 11, items 4, 5, 6, 8 and the cost rule)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor import Conveyor, JobState, progress
from conveyor.broker import enqueue_calls
from conveyor.keys import GROUP, job_id_for, worker_key
from conveyor.wire import decode_record
from tests import test_flow_tasks as flow
from tests.conftest import wait_until
from tests.test_reliability import Spawn

LEASE = 1.5


def tags(path: Path, event: str) -> list[str]:
    if not path.exists():
        return []
    return [r[1] for r in (line.split() for line in path.read_text().splitlines()) if r[0] == event]


def record(r: redis.Redis, app: Conveyor, job_id: str) -> Any:
    raw = r.get(app.keys("default").record(job_id))
    return decode_record(raw) if raw else None


def ended(job: Any, timeout: float = 20.0) -> JobState:
    wait_until(lambda: job.status().finished, timeout, f"job {job.id} to end")
    return job.status()  # type: ignore[no-any-return]


# -- expiry ---------------------------------------------------------------------------------
def test_a_job_not_started_within_expires_ends_expired_without_running(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, r: redis.Redis
) -> None:
    late = flow.expiring.enqueue(str(ledger), "late")
    time.sleep(1.5)  # past its expires=1.0 before any worker runs
    spawn(lease=LEASE).wait_ready()
    in_time = flow.expiring.enqueue(str(ledger), "in-time")
    assert ended(in_time) is JobState.DONE
    wait_until(lambda: record(r, flow_app, late.id) is not None, 10, "the late job's record")
    wait_until(lambda: record(r, flow_app, late.id).state == "expired", 10, "it to expire")
    rec = record(r, flow_app, late.id)
    assert rec.reason.startswith("expires")
    assert tags(ledger, "RUN") == ["in-time"]
    assert r.xlen(flow_app.keys("default").dead) == 0  # not dead-lettered as a failure
    stream = flow_app.keys("default").stream("normal")
    assert r.xpending(stream, GROUP)["pending"] == 0


# -- progress -------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["reports", "reports_async"])
def test_progress_is_visible_while_the_job_runs(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, task: str
) -> None:
    spawn(lease=LEASE).wait_ready()
    job = flow_app.tasks[task].enqueue(str(ledger), "p")
    wait_until(lambda: tags(ledger, "REPORTED") == ["p"], 15, "the task to report")
    seen = flow_app.broker.call(progress.read(flow_app.keys("default"), job.id))
    assert job.status() is JobState.RUNNING
    expected = (0.4, "step 2 of 5") if task == "reports" else (0.75, "nearly")
    assert seen is not None and (seen.fraction, seen.message) == expected
    Path(str(ledger) + ".go").touch()
    assert ended(job) is JobState.DONE


# -- process pool ---------------------------------------------------------------------------
def test_process_pool_runs_sync_tasks_in_subprocesses(flow_app: Conveyor, spawn: Spawn) -> None:
    w = spawn(lease=LEASE).wait_ready()
    jobs = [flow.pool_square.enqueue(i) for i in range(6)]
    assert [j.result(timeout=30) for j in jobs] == [i * i for i in range(6)]
    assert w.alive()


def test_process_pool_timeout_kills_the_child_and_counts_as_a_failure(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, r: redis.Redis
) -> None:
    spawn(lease=LEASE).wait_ready()
    job = flow.pool_hangs.enqueue(str(ledger), "hang")
    assert ended(job, 40) is JobState.DEAD  # retries=1: two attempts, each killed at 1 s
    children = [int(line.split()[3]) for line in ledger.read_text().splitlines()]
    assert len(children) == 2 and children[0] != children[1]  # a fresh child each time
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    rec = record(r, flow_app, job.id)
    assert "TaskTimeout" in (rec.error or "")


def test_process_pool_crash_fails_only_its_job(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, r: redis.Redis
) -> None:
    w = spawn(lease=LEASE).wait_ready()
    crash = flow.pool_crashes.enqueue(str(ledger), "boom")
    assert ended(crash, 40) is JobState.DEAD
    assert "SIGSEGV" in (record(r, flow_app, crash.id).error or "")
    assert flow.pool_square.enqueue(9).result(timeout=30) == 81  # the pool goes on
    assert w.alive()


def test_progress_from_a_process_pool_task_is_a_clear_error(
    flow_app: Conveyor, spawn: Spawn, r: redis.Redis
) -> None:
    spawn(lease=LEASE).wait_ready()
    job = flow.pool_reports.enqueue()
    assert ended(job, 30) is JobState.DEAD
    error = record(r, flow_app, job.id).error or ""
    assert "ConfigurationError" in error and "process pool" in error


# -- unique until done ----------------------------------------------------------------------
def test_unique_key_held_until_done_is_freed_by_the_worker_that_ends_the_job(
    flow_app: Conveyor, spawn: Spawn, ledger: Path, r: redis.Redis
) -> None:
    """An entry naming its until-done unique key (the producer's ``unique`` field): the key
    stays while the job waits and runs, and the transition that ends it frees it."""
    keys = flow_app.keys("default")
    held: dict[str, str] = {}
    for name, task, args in [("ok", "plain", [str(ledger), 1]), ("bad", "plain", ["x"])]:
        fields = {
            "task": task,
            "args": json.dumps(args),
            "kwargs": "{}",
            "version": "1",
            "unique": name,
        }
        entry = flow_app.broker.call(enqueue_calls.enqueue(keys, "normal", fields))
        held[name] = job_id_for("default", "normal", entry)
        r.set(keys.unique(name), held[name])
    assert r.get(keys.unique("ok")) == held["ok"].encode()
    spawn(lease=LEASE).wait_ready()
    ok, bad = flow_app.job(held["ok"]), flow_app.job(held["bad"])
    assert ended(ok) is JobState.DONE
    assert ended(bad) is JobState.DEAD  # bad arguments: dead at once
    assert not r.exists(keys.unique("ok")) and not r.exists(keys.unique("bad"))


# -- the hot path ---------------------------------------------------------------------------
def command_calls(r: redis.Redis) -> dict[str, int]:
    return {k: int(v["calls"]) for k, v in r.info("commandstats").items()}


def test_a_task_with_no_options_pays_no_extra_redis_call_per_job(
    flow_app: Conveyor, spawn: Spawn, r: redis.Redis
) -> None:
    """A drain of 1,000 option-free jobs: scripts (EVALSHA) per job stay what batching gives
    (well under one per job): a gate, an expiry check or a cancel check per job would add at
    least one each. (INFO commandstats also counts the commands scripts run, so only the
    EVALSHA and SMISMEMBER counts say what the worker sent.)"""
    n = 1000
    flow.nothing.enqueue_many([() for _ in range(n)])
    before = command_calls(r)
    w = spawn(lease=30.0, concurrency=50).wait_ready()
    keys = flow_app.keys("default")

    def drained() -> bool:
        info = r.xinfo_groups(keys.stream("normal"))
        return bool(info) and info[0]["pending"] == 0 and info[0]["lag"] == 0

    wait_until(drained, 60, "the drain")
    after = command_calls(r)
    w.close()
    evalsha = after.get("cmdstat_evalsha", 0) - before.get("cmdstat_evalsha", 0)
    flags = after.get("cmdstat_smismember", 0) - before.get("cmdstat_smismember", 0)
    print(f"per job: evalsha {evalsha / n:.3f}; cancel-flag reads {flags} in all")
    # Fetch and ack scripts carry many jobs each; one script per job would be >= 1.0.
    assert evalsha / n < 0.5, f"{evalsha} EVALSHA calls for {n} jobs"
    # Cancel marks are read once per lease beat (every 10 s here), never per job.
    assert flags <= 5, f"{flags} cancel-flag reads for {n} jobs"


def test_the_registry_shows_the_process_pool_of_a_worker_that_has_one(
    flow_app: Conveyor, spawn: Spawn, r: redis.Redis
) -> None:
    w = spawn(lease=LEASE).wait_ready()
    key = worker_key(flow_app.namespace, w.consumer)

    def pool() -> Any:
        raw = r.get(key)
        info = json.loads(raw) if raw else {}
        got = info.get("pool")
        return got if got and got["ready"] == 2 else None

    wait_until(lambda: pool() is not None, 30, "the registry to show 2 ready pool children")
    pids = pool()["pids"]
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, 0)  # alive: the worker's own children


def test_a_concurrency_limited_task_pays_one_script_per_job_and_gives_its_leases_back(
    flow_app: Conveyor, spawn: Spawn, r: redis.Redis
) -> None:
    """The gate is the one extra script; the lease goes back inside the batched ack
    (complete.lua), not in a release script of its own."""
    n = 1000
    flow.wide.enqueue_many([() for _ in range(n)])
    before = command_calls(r)
    w = spawn(lease=30.0, concurrency=50).wait_ready()
    keys = flow_app.keys("default")

    def drained() -> bool:
        info = r.xinfo_groups(keys.stream("normal"))
        return bool(info) and info[0]["pending"] == 0 and info[0]["lag"] == 0

    wait_until(drained, 60, "the drain")
    after = command_calls(r)
    w.close()
    evalsha = after.get("cmdstat_evalsha", 0) - before.get("cmdstat_evalsha", 0)
    print(f"per job: evalsha {evalsha / n:.3f}")
    assert evalsha / n < 1.5, f"{evalsha} EVALSHA calls for {n} limited jobs"
    assert r.zcard(keys.prefix + "conc:wide") == 0  # every lease given back
