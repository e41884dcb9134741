"""Reliability invariants proven with real worker processes that are killed, frozen and stopped.

Each worker is ``python -m tests.workerproc`` in a subprocess (see that module for its tasks
and the markers they leave in Redis). Tests signal workers by pid only, and every process a
test starts is killed at teardown. A worker's stdout/stderr goes to a log file that failing
assertions quote.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor import Conveyor, JobFailed, JobState
from conveyor.keys import GROUP
from tests.workerproc import markers_key, register_tasks

ROOT = Path(__file__).resolve().parent.parent


class WorkerProc:
    """One worker process: started with options, addressed by its pid."""

    def __init__(self, url: str, namespace: str, log_path: Path, **options: Any) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        cmd = [sys.executable, "-m", "tests.workerproc", "--url", url, "--namespace", namespace]
        for name, value in options.items():
            cmd += [f"--{name.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self.pid = self.proc.pid
        self.consumer = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 15.0) -> WorkerProc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"^READY (\S+) (\d+)$", self.log(), re.M)
            if m:
                self.consumer = m.group(1)
                return self
            if not self.alive():
                break
            time.sleep(0.02)
        raise AssertionError(
            f"worker pid {self.pid} not ready (exit code {self.proc.poll()}):\n{self.log()}"
        )

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            raise AssertionError(
                f"worker pid {self.pid} still running after {timeout:.1f} s:\n{self.log()}"
            ) from None

    def dump_stacks(self) -> None:
        """Ask a stuck worker for its thread and asyncio task stacks (they go to its log)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(0.2)
            os.kill(self.pid, signal.SIGUSR2)
            time.sleep(0.3)

    def close(self) -> None:
        if self.alive():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
        try:
            self.proc.wait(10)
        finally:
            self._log.close()


Spawn = Callable[..., WorkerProc]


@pytest.fixture
def spawn(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Spawn]:
    started: list[WorkerProc] = []

    def start(**options: Any) -> WorkerProc:
        w = WorkerProc(redis_url, namespace, tmp_path / f"worker-{len(started)}.log", **options)
        started.append(w)
        return w

    try:
        yield start
    finally:
        for w in started:
            w.close()
        for w in started:  # shown by pytest only when the test failed
            print(f"----- worker pid {w.pid} ({w.consumer}) exit {w.proc.returncode} -----")
            print(w.log())


@pytest.fixture
def tasks_app(app: Conveyor) -> Conveyor:
    """The test's app with the worker's tasks registered, so jobs can be enqueued by name."""
    register_tasks(app)
    return app


# -- helpers --------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def markers(r: redis.Redis, ns: str, event: str | None = None, tag: str | None = None) -> list:
    """Markers as (event, tag, pid, redis_ms) tuples, in the order they were written."""
    out = []
    for raw in r.lrange(markers_key(ns), 0, -1):
        ev, tg, pid, ms = raw.decode().split()
        if (event is None or ev == event) and (tag is None or tg == tag):
            out.append((ev, tg, int(pid), int(ms)))
    return out


def pids(r: redis.Redis, ns: str, event: str, tag: str) -> list[int]:
    return [m[2] for m in markers(r, ns, event, tag)]


def redis_ms(r: redis.Redis) -> int:
    secs, micros = r.time()
    return secs * 1000 + micros // 1000


def pending(r: redis.Redis, app: Conveyor, queue: str = "default") -> list:
    """Every PEL entry of the queue: (stream, entry id, consumer, times delivered)."""
    out = []
    for stream in app.keys(queue).streams:
        if r.exists(stream):
            for p in r.xpending_range(stream, GROUP, "-", "+", 1000):
                out.append(
                    (stream, p["message_id"].decode(), p["consumer"].decode(), p["times_delivered"])
                )
    return out


def consumers(r: redis.Redis, app: Conveyor, queue: str = "default") -> set[str]:
    names = set()
    for stream in app.keys(queue).streams:
        if r.exists(stream):
            names |= {c["name"].decode() for c in r.xinfo_consumers(stream, GROUP)}
    return names


def dead_entries(r: redis.Redis, app: Conveyor, queue: str = "default") -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in r.xrange(app.keys(queue).dead)
    ]


def exit_counts(w: WorkerProc) -> dict[str, int]:
    m = re.search(r"^EXIT \S+ counts=(\{.*\})$", w.log(), re.M)
    assert m, f"worker pid {w.pid} printed no EXIT line:\n{w.log()}"
    return {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", m.group(1))}


# -- tests ------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_sigkilled_worker_job_is_reclaimed_and_completed(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    lease = 1.0
    a = spawn(lease=lease).wait_ready()
    job = tasks_app.enqueue("record", "long", 30.0, again=0.2)
    wait_for(lambda: pids(r, namespace, "START", "long") == [a.pid], 10, "worker A to start it")
    b = spawn(lease=lease).wait_ready()

    killed_ms = redis_ms(r)
    a.signal(signal.SIGKILL)
    assert a.wait_exit(5) == -signal.SIGKILL
    assert [p[2] for p in pending(r, tasks_app)] == [a.consumer], "the job stays in A's PEL"

    assert job.result(timeout=15) == {"tag": "long", "pid": b.pid}
    info = job.info()
    assert info.state is JobState.DONE
    assert info.record is not None and info.record.worker == b.consumer
    starts = markers(r, namespace, "START", "long")
    assert [m[2] for m in starts] == [a.pid, b.pid], "it ran in A, then once in B"
    taken_after = starts[1][3] - killed_ms
    # A renewed at most lease/3 before it died, so B may take it no sooner than 2/3 of a lease
    # later, and should by one lease plus one reclaim interval (lease/2), plus slack.
    assert 0.6 * lease * 1000 <= taken_after <= (lease * 1.5 + 1.5) * 1000, taken_after
    assert pending(r, tasks_app) == []
    assert dead_entries(r, tasks_app) == []
    assert re.search(r"reclaimed job default/normal \S+ \(delivery 2\)", b.log()), b.log()


@pytest.mark.timeout(60)
def test_lease_renewed_so_long_cpu_bound_job_is_not_stolen(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    a = spawn(lease=1.0, concurrency=2).wait_ready()
    job = tasks_app.enqueue("cpu_bound", "cpu", 4.0)
    wait_for(lambda: pids(r, namespace, "START", "cpu"), 10, "worker A to start the job")
    b = spawn(lease=1.0).wait_ready()

    samples = 0
    while not pids(r, namespace, "DONE", "cpu"):
        for _, _, consumer, delivered in pending(r, tasks_app):
            assert (consumer, delivered) == (a.consumer, 1), "the lease moved while A ran it"
        samples += 1
        time.sleep(0.1)
        assert samples < 150, "the CPU-bound job never finished"
    assert samples >= 10, "the job should have been sampled while it ran"

    assert job.result(timeout=10)["pid"] == a.pid
    info = job.info()
    assert info.record is not None and info.record.worker == a.consumer
    assert pids(r, namespace, "START", "cpu") == [a.pid], "the job must run exactly once"
    time.sleep(0.5)  # one more reclaim round of B after the end
    assert pids(r, namespace, "START", "cpu") == [a.pid]
    assert "reclaimed job" not in b.log() and "reclaimed job" not in a.log()
    assert pending(r, tasks_app) == []
    assert a.alive() and b.alive()


@pytest.mark.timeout(60)
def test_ack_from_worker_that_lost_its_lease_is_rejected(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    a = spawn(lease=1.0).wait_ready()
    job = tasks_app.enqueue("record", "frozen", 2.0, again=0.2)
    wait_for(lambda: pids(r, namespace, "START", "frozen") == [a.pid], 10, "A to start it")
    b = spawn(lease=1.0).wait_ready()

    a.signal(signal.SIGSTOP)
    try:
        assert job.result(timeout=15) == {"tag": "frozen", "pid": b.pid}
    finally:
        a.signal(signal.SIGCONT)
    # A wakes up, finishes its copy of the job and tries to ack it: that must be refused.
    wait_for(lambda: a.pid in pids(r, namespace, "DONE", "frozen"), 10, "A to finish its copy")
    wait_for(lambda: re.search(r"lease lost", a.log()), 5, "A to log that its lease was lost")

    info = job.info()
    assert info.state is JobState.DONE
    assert info.record is not None
    assert info.record.worker == b.consumer, "the late ack of A overwrote B's result"
    assert info.record.result == {"tag": "frozen", "pid": b.pid}
    assert pids(r, namespace, "START", "frozen") == [a.pid, b.pid]
    assert dead_entries(r, tasks_app) == []
    assert pending(r, tasks_app) == []
    assert a.alive(), "a worker that lost a lease keeps working"

    a.signal(signal.SIGTERM)
    assert a.wait_exit(10) == 0
    assert exit_counts(a)["lost"] == 1 and exit_counts(a)["done"] == 0


@pytest.mark.timeout(90)
def test_job_that_kills_its_worker_goes_dead_after_max_deliveries(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    options = {"lease": 1.0, "concurrency": 1}
    workers = [spawn(**options).wait_ready() for _ in range(2)]
    killer = tasks_app.enqueue("suicide", "killer")
    good = [tasks_app.enqueue("record", f"good-{i}", 0.05) for i in range(6)]

    restarts = 0
    deadline = time.monotonic() + 45
    while not (killer.status() is JobState.DEAD and all(j.status() is JobState.DONE for j in good)):
        assert time.monotonic() < deadline, (
            f"killer {killer.status()}, good {[j.status() for j in good]}, restarts {restarts}"
        )
        for i, w in enumerate(workers):
            if not w.alive():
                assert w.proc.returncode == -signal.SIGKILL, w.log()
                restarts += 1
                assert restarts <= 6, "the killer job keeps killing workers"
                workers[i] = spawn(**options)
        time.sleep(0.05)

    assert pids(r, namespace, "START", "killer").__len__() == 2, "ran max_deliveries times"
    assert restarts == 2
    info = killer.info()
    assert info.record is not None and info.record.reason == "max_deliveries"
    with pytest.raises(JobFailed):
        killer.result(timeout=1)
    dead = dead_entries(r, tasks_app)
    assert len(dead) == 1
    assert dead[0]["dead_reason"] == "max_deliveries"
    assert dead[0]["task"] == "suicide"
    assert dead[0].get("id", killer.id) == killer.id
    assert dead[0]["dead_deliveries"] == "3"
    for i, j in enumerate(good):
        assert j.result(timeout=5)["tag"] == f"good-{i}"
    assert pending(r, tasks_app) == []
    assert all(w.alive() for w in workers)


@pytest.mark.timeout(60)
def test_sigterm_lets_running_jobs_finish_within_grace(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    grace = 10.0
    a = spawn(lease=1.0, concurrency=4, grace=grace).wait_ready()
    jobs = [tasks_app.enqueue("record", f"t{i}", 1.0) for i in range(3)]
    wait_for(lambda: len(markers(r, namespace, "START")) == 3, 10, "all 3 jobs to start")
    assert consumers(r, tasks_app) == {a.consumer}

    started = time.monotonic()
    a.signal(signal.SIGTERM)
    assert a.wait_exit(grace) == 0
    elapsed = time.monotonic() - started
    assert elapsed < grace, elapsed

    for i, job in enumerate(jobs):
        info = job.info()
        assert info.state is JobState.DONE, (i, info)
        assert info.record is not None and info.record.worker == a.consumer
        assert info.record.result == {"tag": f"t{i}", "pid": a.pid}
    assert len(markers(r, namespace, "DONE")) == 3
    assert pending(r, tasks_app) == []
    assert a.consumer not in consumers(r, tasks_app), "an empty consumer is deleted on exit"
    assert not r.exists(f"{namespace}:worker:{a.consumer}")
    assert r.zscore(f"{namespace}:workers", a.consumer) is None
    assert exit_counts(a)["done"] == 3


@pytest.mark.timeout(60)
def test_sigterm_requeues_jobs_that_outlive_grace(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    lease = 30.0
    a = spawn(lease=lease, concurrency=2, grace=0.5).wait_ready()
    job = tasks_app.enqueue("record", "slow", 10.0, again=0.2)
    wait_for(lambda: pids(r, namespace, "START", "slow") == [a.pid], 10, "A to start it")

    started = time.monotonic()
    a.signal(signal.SIGTERM)
    assert a.wait_exit(5) == 0
    assert time.monotonic() - started < 3.0, "the worker should exit soon after its grace"

    # Back in the ready stream at once: not pending anywhere, not waiting for a lease timeout.
    assert job.status() is JobState.QUEUED
    assert pending(r, tasks_app) == []
    assert a.consumer not in consumers(r, tasks_app)
    assert pids(r, namespace, "DONE", "slow") == []

    b = spawn(lease=lease).wait_ready()
    assert job.result(timeout=10) == {"tag": "slow", "pid": b.pid}
    assert time.monotonic() - started < lease / 2, "it waited for the lease to time out"
    info = job.info()
    assert info.record is not None and info.record.worker == b.consumer
    assert pids(r, namespace, "START", "slow") == [a.pid, b.pid]
    assert pids(r, namespace, "DONE", "slow") == [b.pid]
    assert pending(r, tasks_app) == []
    assert dead_entries(r, tasks_app) == []


@pytest.mark.timeout(60)
def test_sigterm_stops_idle_workers_promptly_whatever_they_are_doing(
    tasks_app: Conveyor, r: redis.Redis, spawn: Spawn
) -> None:
    """SIGTERM lands at an arbitrary point of the fetch and upkeep loops; each must exit."""
    workers = [spawn(lease=1.0) for _ in range(12)]
    for w in workers:
        w.wait_ready()
    # Stagger the signals over more than two reclaim intervals (lease / 2).
    for w in workers:
        time.sleep(0.11)
        w.signal(signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    for w in workers:
        w.wait_exit(max(0.1, deadline - time.monotonic()))
        assert w.proc.returncode == 0, w.log()
    assert consumers(r, tasks_app) == set()


@pytest.mark.timeout(60)
def test_skewed_worker_clock_does_not_change_due_time(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    record = tasks_app.get_task("record")
    hour = 3600.0
    for skew, tag, delay in ((hour, "ahead", 2.0), (-hour, "behind", 1.0)):
        w = spawn(lease=1.0, clock_skew=skew).wait_ready()
        before = redis_ms(r)
        job = record.enqueue_in(delay, tag)
        after = redis_ms(r)
        due = job.info().due_ms
        assert due is not None
        assert before + delay * 1000 <= due <= after + delay * 1000, "due time from Redis' clock"

        assert job.result(timeout=delay + 5) == {"tag": tag, "pid": w.pid}
        (_, _, pid, started_ms) = markers(r, namespace, "START", tag)[0]
        assert pid == w.pid
        # A clock an hour ahead would run it at once; an hour behind, never.
        assert due <= started_ms <= due + 1500, (skew, started_ms - due)
        w.signal(signal.SIGTERM)
        assert w.wait_exit(10) == 0


@pytest.mark.timeout(60)
def test_sigterm_exits_within_grace_even_when_a_sync_job_outlives_it(
    tasks_app: Conveyor, r: redis.Redis, namespace: str, spawn: Spawn
) -> None:
    """A sync task runs in a thread that cannot be killed; it must not hold the process."""
    lease = 30.0
    a = spawn(lease=lease, concurrency=2, grace=0.5).wait_ready()
    job = tasks_app.enqueue("sync_sleepy", "stuck", 8.0, again=0.2)
    wait_for(lambda: pids(r, namespace, "START", "stuck") == [a.pid], 10, "A to start it")

    started = time.monotonic()
    a.signal(signal.SIGTERM)
    wait_for(lambda: job.status() is JobState.QUEUED, 3, "the job to be requeued")
    assert pending(r, tasks_app) == []
    assert a.wait_exit(5) == 0, "the process hangs on the thread of the requeued sync job"
    assert time.monotonic() - started < 3.0

    b = spawn(lease=lease).wait_ready()
    assert job.result(timeout=10) == {"tag": "stuck", "pid": b.pid}
