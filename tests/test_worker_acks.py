"""Acks keep up with the slots, and a crash re-runs only what a worker could hold (issue 9).

Real worker processes (tests/workerproc.py) drain backlogs of fast jobs while this process
samples the consumer group's pending list from outside; the worker reports its ack lag
(end of the job's function to its ack stored) when it exits. A SIGKILLed worker's re-runs
are counted in a ledger file outside Redis.
"""

# ruff: noqa: F811 - the spawn/tasks_app fixtures are imported, then named as arguments
from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from conveyor import Conveyor
from conveyor.keys import GROUP
from conveyor.worker.fetcher import most_held
from tests.conftest import fast, wait_until, worker_thread
from tests.test_reliability import (  # noqa: F401 - fixtures, used by name
    Spawn,
    spawn,
    tasks_app,
    wait_for,
)


class PelSampler:
    """Samples the group's pending count (and per consumer) every 2 ms from a thread."""

    def __init__(self, url: str, stream: str) -> None:
        self.r = redis.Redis.from_url(url)
        self.stream = stream
        self.peak = 0
        self.by_consumer: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PelSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.r.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                summary = self.r.xpending(self.stream, GROUP)
            except redis.ResponseError:  # no group before the first worker made it
                summary = {"pending": 0}
            self.peak = max(self.peak, summary["pending"])
            time.sleep(0.002)

    def drained(self) -> bool:
        groups = self.r.xinfo_groups(self.stream)
        return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0


def exit_ack_lag(log: str) -> dict[str, float]:
    m = re.search(r"^EXIT .* ack_lag=(\{.*\})$", log, re.M)
    assert m, f"the worker printed no ack lag on exit:\n{log[-3000:]}"
    lag: dict[str, float] = json.loads(m.group(1))
    return lag


@pytest.mark.timeout(120)
@pytest.mark.parametrize("task", ["noop", "naps"])
def test_acks_keep_up_with_the_slots_at_any_concurrency(
    tasks_app: Conveyor, spawn: Spawn, redis_url: str, task: str
) -> None:
    """Old code: at -c 100 the pending list grew past 15,000 while no ack was sent."""
    jobs = 6000
    stream = tasks_app.keys("default").stream("normal")
    report = []
    for concurrency in (1, 10, 100, 500):
        tasks_app.enqueue_many([tasks_app.get_task(task).s() for _ in range(jobs)])
        with PelSampler(redis_url, stream) as pel:
            worker = spawn(concurrency=concurrency).wait_ready()
            wait_for(pel.drained, 60, f"{jobs} {task} jobs acked at -c {concurrency}")
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit(20) == 0
        lag = exit_ack_lag(worker.log())
        report.append((concurrency, pel.peak, lag))
        assert lag["count"] == jobs
        assert pel.peak <= most_held(concurrency), report
    # The ack lag itself (issue 9's "p99 <= 20 ms") is a speed, so it is measured and
    # reported by the benchmark (bench/hot_path.py, make bench), not asserted here: on these
    # 2-core machines the same code measured p99 9-15 ms in-process on a quiet hour and
    # 23-39 ms with the worker in a subprocess on another day. What this test holds is the
    # structure that keeps acks up with the slots (the old code's pending list grew past
    # 15,000 while no ack was sent): every job acked, the pending list within its bound.
    print(report)


@pytest.mark.timeout(90)
def test_a_sigkilled_worker_reruns_at_most_what_it_could_hold(
    tasks_app: Conveyor, spawn: Spawn, tmp_path: Path, r: redis.Redis
) -> None:
    """20,000 fast jobs at -c 100, the first worker SIGKILLed part-way: nothing is lost and
    re-runs stay within slots + prefetch + one ack batch (old code: thousands)."""
    jobs, concurrency = 20_000, 100
    path = tmp_path / "ledger"
    path.touch()
    ledger = tasks_app.get_task("ledger")
    tasks_app.enqueue_many([ledger.s(str(path), i) for i in range(jobs)])

    def runs() -> int:
        return path.read_bytes().count(b"\n")

    first = spawn(concurrency=concurrency, lease=1.0).wait_ready()
    wait_for(lambda: runs() >= jobs // 4, 30, "a quarter of the jobs run")
    first.signal(signal.SIGKILL)
    first.wait_exit(10)
    stream = tasks_app.keys("default").stream("normal")
    held = r.xpending(stream, GROUP)["pending"]
    assert 0 < runs() < jobs, "the worker must die part-way"
    second = spawn(concurrency=concurrency, lease=1.0).wait_ready()

    def all_done() -> bool:
        groups = r.xinfo_groups(stream)
        return groups[0]["pending"] == 0 and groups[0]["lag"] == 0

    wait_for(all_done, 60, "the second worker to finish the rest")
    second.signal(signal.SIGTERM)
    assert second.wait_exit(20) == 0
    counts = Counter(int(line) for line in path.read_text().split())
    assert set(counts) == set(range(jobs)), "jobs lost"
    twice = sum(n - 1 for n in counts.values())
    assert max(counts.values()) <= 2
    assert twice <= held <= most_held(concurrency), (twice, held, most_held(concurrency))
    print(f"re-runs {twice}, pending at the kill {held}, bound {most_held(concurrency)}")


@pytest.mark.timeout(120)
def test_result_sees_a_short_job_done_at_once_under_load(
    tasks_app: Conveyor, spawn: Spawn, r: redis.Redis
) -> None:
    """While a -c 100 worker drains a backlog of no-op jobs, a 1 ms job enqueued ahead of it
    (high priority) is reported done by job.result() within milliseconds, not once the
    backlog's acks land (old code: seconds)."""
    stream = tasks_app.keys("default").stream("normal")
    tasks_app.enqueue_many([tasks_app.get_task("noop").s() for _ in range(40_000)])
    naps = tasks_app.get_task("naps").using(priority="high")
    worker = spawn(concurrency=100).wait_ready()
    wait_for(lambda: r.xpending(stream, GROUP)["pending"] > 0, 10, "the drain to start")
    took = []
    for _ in range(20):
        t0 = time.perf_counter()
        naps.enqueue().result(timeout=10)
        took.append(time.perf_counter() - t0)
        time.sleep(0.01)
    backlog = r.xinfo_groups(stream)[0]["lag"]
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    took.sort()
    print(
        f"enqueue to result under load: median {took[10] * 1000:.1f} ms, "
        f"max {took[-1] * 1000:.1f} ms; backlog left {backlog}"
    )
    assert backlog > 0, "the backlog must still be draining: this measures under load"
    assert took[-1] < 0.5, took


def test_acks_of_a_queue_whose_group_vanished_are_counted_lost_and_the_worker_goes_on(
    app: Conveyor, r: redis.Redis
) -> None:
    """Redis restarted without persistence loses the consumer group under running jobs: their
    acks (complete.lua) meet NOGROUP. The worker counts them lost, the fetch loop creates the
    group again, and later jobs run; before, the completer's error ended the worker."""
    release = threading.Event()

    @app.task
    def held(i: int) -> int:
        release.wait(10)
        return i

    @app.task
    def later(i: int) -> int:
        return i

    stream = app.keys("default").stream("normal")
    # three slots, all busy: no blocking read is waiting on the stream when it goes
    with worker_thread(app, fast(concurrency=3, prefetch=0)) as w:
        running = [held.enqueue(i) for i in range(3)]
        wait_until(lambda: len(w.running) == 3, 10, "three jobs to start")
        r.delete(stream)  # the group goes with its stream, as after a restart from nothing
        release.set()
        wait_until(lambda: w.counts.get("lost", 0) == 3, 10, "the three acks to be refused")
        assert later.enqueue(7).result(timeout=10) == 7
        # result() can return before the worker reads its ack's reply and counts it
        wait_until(lambda: w.counts.get("done", 0) == 1, 10, "the later job to be counted")
    assert len(running) == 3  # worker_thread raised had the worker crashed


@pytest.mark.parametrize("what", ["stream", "group"])
def test_a_stream_or_group_deleted_under_an_idle_worker_is_created_again(
    app: Conveyor, r: redis.Redis, what: str
) -> None:
    """An idle worker waits in XREADGROUP BLOCK; deleting the stream (or destroying its group)
    unblocks that read with an UNBLOCKED error. The worker creates the group again and goes
    on; before, the error ended its fetch loop and the worker crashed."""

    @app.task
    def echo(i: int) -> int:
        return i

    stream = app.keys("default").stream("normal")
    with worker_thread(app, fast(block_ms=5000)) as w:
        assert echo.enqueue(1).result(timeout=10) == 1
        wait_until(lambda: not w.running, 10, "the worker to be idle")

        def blocked() -> bool:
            ids = {str(i) for i in w.fetcher._blocker._ids.values()}
            return any(c["id"] in ids and "b" in c["flags"] for c in r.client_list())

        wait_until(blocked, 10, "the worker's blocking read")
        if what == "stream":
            r.delete(stream)
        else:
            r.xgroup_destroy(stream, GROUP)
        assert echo.enqueue(2).result(timeout=10) == 2
