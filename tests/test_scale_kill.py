"""A real worker process SIGKILLed on Redis Cluster and on Sentinel: its jobs are reclaimed.

``conveyor --url <cluster or sentinel URL> worker tests.scale_tasks:app -c 4 --lease 2`` runs
as a subprocess (a supervisor and its one worker child). The test fills the child's 4 slots
with jobs that wait on a hold file, SIGKILLs the child, and lets the supervisor's replacement
reclaim them after the lease. What ran is counted in a ledger file outside Redis, so the test
sees every run, including those of the killed process. On Cluster the jobs are spread over one
queue per master, so the reclaim crosses every node.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from tests.scale_tasks import register_tasks
from tests.test_cli import alive, cli_env, cli_worker, wait_for
from tests.test_cluster import one_queue_per_master

LEASE = 2.0
JOBS = 24


def read_ledger(path: Path) -> list[tuple[str, int, int]]:
    """(event, job number, pid) per line."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        event, n, pid = line.split()
        out.append((event, int(n), int(pid)))
    return out


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_a_sigkilled_worker_process_loses_nothing_and_repeats_only_its_running_jobs(
    topology: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    app: Conveyor = request.getfixturevalue(f"{topology}_app")
    queues = one_queue_per_master(app) if topology == "cluster" else ["default"]
    book, hold = tmp_path / "ledger", tmp_path / "hold"
    hold.touch()
    env = {**cli_env(app.url, app.namespace), "SCALE_LEDGER": str(book), "SCALE_HOLD": str(hold)}
    args = ("-c", "4", "--lease", str(LEASE), "--grace", "2", "-q", ",".join(queues))
    ledger = register_tasks(app)
    with cli_worker(env, tmp_path / "worker.log", "tests.scale_tasks:app", *args) as w:
        [victim] = w.wait_ready(1)
        jobs = app.enqueue_many(
            [ledger.using(queue=queues[i % len(queues)]).s(i) for i in range(JOBS)]
        )

        def four_started() -> set[int] | None:
            begun = {n for e, n, _ in read_ledger(book) if e == "START"}
            return begun if len(begun) == 4 else None

        started = wait_for(four_started, 15, lambda: f"4 jobs to start:\n{w.log()}")
        time.sleep(0.2)  # a fifth start would show a slot count other than 4
        assert {n for e, n, _ in read_ledger(book) if e == "START"} == started
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        hold.unlink()

        def all_done() -> bool:
            return all(j.status() is JobState.DONE for j in jobs)

        wait_for(all_done, 4 * LEASE + 20, lambda: f"every job to end:\n{w.log()}")
        took = time.monotonic() - killed_at
        assert not alive(victim)
        assert f"(pid {victim}) exited with -9; restarting" in w.log()
        assert [j.result(timeout=5) for j in jobs] == list(range(JOBS))

    lines = read_ledger(book)
    starts = Counter(n for e, n, _ in lines if e == "START")
    done = Counter(n for e, n, _ in lines if e == "DONE")
    assert set(starts) == set(range(JOBS)) and set(done) == set(range(JOBS)), "a job was lost"
    # the killed process ended none of its jobs; each of them ran again elsewhere, once
    assert not [n for e, n, pid in lines if e == "DONE" and pid == victim]
    repeated = {n for n, k in starts.items() if k > 1}
    assert repeated == started, f"repeats {repeated}, killed while running {started}"
    assert all(starts[n] == 2 for n in started) and all(k == 1 for k in done.values())
    assert took >= LEASE * 0.9, f"reclaimed {took:.2f}s after the kill, before the lease ran out"
