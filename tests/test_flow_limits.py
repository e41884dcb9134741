"""Global rate and concurrency limits with 3 real worker processes (issue 11, items 2, 3).

Runs are timed from a ledger file the tasks write (tests/test_flow_tasks.py), never from
Redis: rates per 2-second window, the most jobs running at once, and how soon a limit
freed by a SIGKILLed worker is used again.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conveyor import Conveyor, JobState
from tests import test_flow_tasks as flow
from tests.conftest import wait_until
from tests.test_reliability import Spawn, WorkerProc

LEASE = 1.5


def rows(path: Path, event: str) -> list[list[str]]:
    if not path.exists():
        return []
    return [r for r in (line.split() for line in path.read_text().splitlines()) if r[0] == event]


def three(spawn: Spawn, **options: Any) -> list[WorkerProc]:
    procs = [spawn(lease=LEASE, **options) for _ in range(3)]
    return [p.wait_ready() for p in procs]


def windows(times: list[float], width: float = 2.0) -> list[int]:
    """Runs per ``width``-second window from the first run, the first and the last
    (partial) window left out."""
    t0 = min(times)
    counts = Counter(int((t - t0) // width) for t in times)
    last = max(counts)
    return [counts.get(i, 0) for i in range(1, last)]


def test_rate_limit_holds_across_three_workers(
    flow_app: Conveyor, spawn: Spawn, tmp_path: Path
) -> None:
    """2,000 jobs at 50/s across 3 workers: each 2-second window after the first runs
    100 +- 10%."""
    ledger = tmp_path / "ledger.txt"
    total = 2000
    three(spawn, concurrency=10)
    flow.rated.enqueue_many([(str(ledger), i) for i in range(total)])
    wait_until(lambda: len(rows(ledger, "RUN")) >= total, 90, "every rated job to run")
    times = [float(r[2]) for r in rows(ledger, "RUN")]
    assert len(times) == total  # none ran twice
    per_window = windows(times)
    expected = flow.RATE * 2
    bad = [n for n in per_window if abs(n - expected) > expected * 0.1]
    assert len(per_window) >= 10
    assert not bad, f"windows off {expected} +- 10%: {per_window}"


def test_rate_limit_per_key_is_independent_per_tenant(
    flow_app: Conveyor, spawn: Spawn, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    per_tenant = 200
    three(spawn, concurrency=10)
    calls = [(t, str(ledger), i) for i in range(per_tenant) for t in ("acme", "globex")]
    flow.per_tenant.enqueue_many(calls)
    wait_until(lambda: len(rows(ledger, "RUN")) >= 2 * per_tenant, 60, "every job to run")
    for tenant in ("acme", "globex"):
        times = [float(r[3]) for r in rows(ledger, "RUN") if r[1] == tenant]
        assert len(times) == per_tenant
        per_window = windows(times)
        assert len(per_window) >= 3
        bad = [n for n in per_window if abs(n - 40) > 4]
        assert not bad, f"{tenant}: windows off 40 +- 10%: {per_window}"


def intervals(path: Path, cut: dict[str, float] | None = None) -> list[tuple[float, float]]:
    """(start, end) of each run; a run whose process was killed ends at its kill time."""
    starts = {(r[1], r[3]): float(r[2]) for r in rows(path, "START")}
    ends = {(r[1], r[3]): float(r[2]) for r in rows(path, "END")}
    out = []
    for key, t in starts.items():
        end = ends.get(key)
        if end is None:
            assert cut is not None and key[1] in cut, f"run {key} never ended"
            end = cut[key[1]]
        out.append((t, end))
    return out


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_concurrency_limit_is_global_across_workers(
    flow_app: Conveyor, spawn: Spawn, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    three(spawn, concurrency=10)
    jobs = flow.limited.enqueue_many([(str(ledger), i, 0.2) for i in range(30)])
    for job in jobs:
        wait_until(lambda job=job: job.status() is JobState.DONE, 60, f"{job.id} to finish")
    spans = intervals(ledger)
    assert len(spans) == 30
    assert most_at_once(spans) == 3


def test_concurrency_limit_recovers_within_a_lease_after_a_holder_is_killed(
    flow_app: Conveyor, spawn: Spawn, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    workers = three(spawn, concurrency=10)
    flow.limited_sync.enqueue_many([(str(ledger), i, 1.0) for i in range(24)])
    wait_until(lambda: len(rows(ledger, "START")) >= 3, 30, "three jobs to start")
    victim_pid = int(rows(ledger, "START")[0][3])
    victim = next(w for w in workers if w.pid == victim_pid)
    victim.signal(signal.SIGKILL)
    killed_at = time.time()
    victim.proc.wait(10)
    survivors_done = 24 - 0  # every job ends: the killed ones are reclaimed and run again

    def all_ended() -> bool:
        ended = {r[1] for r in rows(ledger, "END")}
        return len(ended) >= survivors_done

    wait_until(all_ended, 90, "every job to end")
    spans = intervals(ledger, cut={str(victim_pid): killed_at})
    assert most_at_once(spans) <= 3
    # From the kill on: the first moment three run again is within one lease timeout (and
    # the promotion and scheduling slack of a loaded machine).
    after = [(max(s, killed_at), e) for s, e in spans if e > killed_at]
    events = sorted([(s, 1) for s, _ in after] + [(e, -1) for _, e in after])
    now, full_at = 0, None
    for t, step in events:
        now += step
        if now == 3:
            full_at = t
            break
    assert full_at is not None
    assert full_at - killed_at <= LEASE + 1.5, f"3 ran again {full_at - killed_at:.2f} s later"


def test_a_stopping_worker_gives_its_concurrency_leases_back_at_once(
    flow_app: Conveyor, spawn: Spawn, tmp_path: Path
) -> None:
    """SIGTERM past the grace requeues the limited jobs a worker runs and releases their
    leases then: when those jobs are then cancelled, the jobs waiting for the limit run at
    once on another worker, not after the leases (10 s) expire."""
    ledger = tmp_path / "ledger.txt"
    lease = 10.0
    first = spawn(lease=lease, concurrency=10, grace=0.3).wait_ready()
    held = flow.limited.enqueue_many([(str(ledger), i, 30.0) for i in range(3)])
    wait_until(lambda: len(rows(ledger, "START")) == 3, 30, "three jobs to start")
    waiting = flow.limited.enqueue_many([(str(ledger), i, 0.0) for i in range(10, 13)])
    first.signal(signal.SIGTERM)
    assert first.wait_exit(15) == 0
    for job in held:  # requeued by the shutdown; cancelled before anyone runs them again
        job.cancel()
    stopped_at = time.time()
    spawn(lease=lease, concurrency=10).wait_ready()
    for job in waiting:
        wait_until(lambda job=job: job.status() is JobState.DONE, lease, f"{job.id} to run")
    assert time.time() - stopped_at < lease / 2
    assert len(rows(ledger, "START")) == 6  # the cancelled ones never ran again
