"""`conveyor worker -p N`: the supervisor keeps N worker processes alive and stops them cleanly.

The supervisor is a real ``python -m conveyor worker`` process; its workers are found as its
children in /proc (multiprocessing spawn children run ``spawn_main``; the resource tracker is
not a worker). Only pids this test started, or children of them, are ever signalled.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor import Conveyor
from conveyor.keys import GROUP
from tests.cliapp import register_tasks
from tests.test_cli import APP, alive, cli_env, cli_worker, wait_for

GRACE = 5.0


@pytest.fixture
def tasks(app: Conveyor) -> dict[str, Any]:
    return register_tasks(app)


def consumers(r: redis.Redis, app: Conveyor) -> dict[str, int]:
    """Consumer name -> pending count, over every ready stream of the default queue."""
    out: dict[str, int] = {}
    for stream in app.keys("default").streams:
        if not r.exists(stream):
            continue
        for c in r.xinfo_consumers(stream, GROUP):
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            out[name] = out.get(name, 0) + int(c["pending"])
    return out


def run_jobs(tasks: dict[str, Any], n: int, timeout: float = 15) -> None:
    jobs = [tasks["add"].enqueue(i, 1000) for i in range(n)]
    for i, job in enumerate(jobs):
        assert job.result(timeout=timeout) == i + 1000, f"job {job.id}"


def test_supervisor_restarts_a_killed_worker_and_stops_all_on_sigterm(
    redis_url: str,
    namespace: str,
    app: Conveyor,
    tasks: dict[str, Any],
    r: redis.Redis,
    tmp_path: Path,
) -> None:
    env = cli_env(redis_url, namespace)
    args = (APP, "-c", "4", "-p", "2", "--lease", "1", "--grace", str(GRACE))
    with cli_worker(env, tmp_path / "supervisor.log", *args, processes=2) as sup:
        first = sup.wait_ready(2)
        assert len(first) == 2 and sup.pid not in first
        run_jobs(tasks, 10)

        # fill both workers (4 slots each), so the victim dies holding 4 running jobs: their
        # lease (1 s) expires and the other workers reclaim and finish them
        in_flight = [tasks["slow"].enqueue(1.0) for _ in range(8)]
        victim, survivor = first

        def both_full() -> bool:
            held = consumers(r, app)
            return sorted(held.values()) == [4, 4] and any(f"-{victim}-" in c for c in held)

        wait_for(both_full, 5, lambda: f"both workers to hold 4 jobs: {consumers(r, app)}")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        def replaced() -> list[int] | None:
            pids = sup.worker_pids()
            return pids if len(pids) == 2 and victim not in pids else None

        now = wait_for(replaced, 5, lambda: f"a replacement for pid {victim}:\n{sup.log()}")
        assert time.monotonic() - killed_at < 3.5, "replacement must start after ~0.5 s backoff"
        assert survivor in now and not alive(victim)
        [replacement] = [p for p in now if p != survivor]
        sup.wait_ready(2)
        assert f"(pid {victim}) exited with -9; restarting" in sup.log()

        for job in in_flight:
            assert job.result(timeout=15) == 1.0, f"job {job.id}"
        assert sup.log().count("after its lease expired") == 4, sup.log()
        run_jobs(tasks, 10)

        code = sup.stop(GRACE + 12)
        assert code == 0, sup.log()
        assert not alive(survivor) and not alive(replacement), "workers outlived the supervisor"

    # the two workers that stopped gracefully left the group; the SIGKILLed one could not,
    # but it holds nothing: whatever it had was reclaimed
    left = consumers(r, app)
    assert all(f"-{victim}-" in name for name in left), left
    assert sum(left.values()) == 0, left


def test_sigterm_with_two_idle_workers_exits_0_and_leaves_no_consumer(
    redis_url: str,
    namespace: str,
    app: Conveyor,
    tasks: dict[str, Any],
    r: redis.Redis,
    tmp_path: Path,
) -> None:
    env = cli_env(redis_url, namespace)
    args = (APP, "-c", "2", "-p", "2", "--lease", "2", "--grace", str(GRACE))
    with cli_worker(env, tmp_path / "supervisor.log", *args, processes=2) as sup:
        pids = sup.wait_ready(2)
        run_jobs(tasks, 6)
        # Each process joins the group with its first read, which may come a moment after it
        # says it is ready (one of them may have run all 6 jobs before the other read once).
        wait_for(lambda: len(consumers(r, app)) == 2, 5, "both processes in the group")
        # a job still running at SIGTERM is finished within the grace period, not abandoned
        running = tasks["slow"].enqueue(1.0)
        wait_for(lambda: sum(consumers(r, app).values()) == 1, 5, "the slow job to start")
        started = time.monotonic()
        assert sup.stop(GRACE + 10) == 0, sup.log()
        assert time.monotonic() - started < GRACE + 5
        assert not any(alive(p) for p in pids), "workers outlived the supervisor"
    assert running.result(timeout=1) == 1.0
    assert consumers(r, app) == {}, "every worker must leave the consumer group on SIGTERM"
