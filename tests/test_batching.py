"""Micro-batches (worker/batching.py): one call per batch, one outcome per job, against a
real Redis and real workers (in-process, and a SIGKILLed subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, JobFailed, JobState
from conveyor.errors import ConfigurationError
from conveyor.worker.batching import split
from conveyor.worker.executor import Outcome
from tests.conftest import fast, wait_until, worker_thread

ROOT = Path(__file__).resolve().parent.parent


def records(app: Conveyor, r: Any, jobs: list[Any]) -> list[dict[str, Any]]:
    keys = app.keys(app.default_queue)
    raws = r.mget([keys.record(j.id) for j in jobs])
    return [json.loads(raw) if raw else {} for raw in raws]


def test_10000_jobs_in_batches_of_32_each_end_once_with_their_own_result(
    app: Conveyor, r: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes: list[int] = []
    calls: Counter[int] = Counter()

    @app.task(batch_size=32, batch_wait=0.05)
    async def double(items: list[int]) -> list[int]:
        sizes.append(len(items))
        calls.update(items)
        await asyncio.sleep(0.001)  # a GPU call would await here
        return [2 * i for i in items]

    n = 10_000
    jobs = double.enqueue_many([(i,) for i in range(n)])
    with worker_thread(app, fast(concurrency=64)) as worker:
        wait_until(lambda: worker.counts["done"] >= n, 60, "10,000 jobs done")
    got = records(app, r, jobs)
    assert [g.get("state") for g in got] == ["done"] * n
    assert [g.get("result") for g in got] == [2 * i for i in range(n)]
    assert calls == Counter(range(n))  # every item in exactly one batch
    assert worker.counts["done"] == n and worker.counts["dead"] == 0
    mean = sum(sizes) / len(sizes)
    with capsys.disabled():
        print(f"\n10,000 jobs, batch_size 32: {len(sizes)} batches, mean size {mean:.1f}")
    assert mean > 16  # ready jobs fill the batches: far from one job per call


def test_a_poisoned_item_fails_alone(app: Conveyor, r: Any) -> None:
    @app.task(batch_size=8, batch_wait=0.05, retries=0)
    def parse(items: list[str]) -> list[Any]:
        return [ValueError(f"cannot parse {s!r}") if s == "poison" else s.upper() for s in items]

    words = ["a", "b", "poison", "c", "d"]
    jobs = parse.enqueue_many([(w,) for w in words])
    with worker_thread(app, fast(concurrency=8)):
        for job, word in zip(jobs, words, strict=True):
            if word == "poison":
                with pytest.raises(JobFailed, match="cannot parse 'poison'"):
                    job.result(timeout=5)
            else:
                assert job.result(timeout=5) == word.upper()
    dead = r.xrange(app.keys(app.default_queue).dead)
    assert len(dead) == 1 and dead[0][1][b"args"] == b'["poison"]'


def test_a_failed_batch_call_retries_each_job_alone(app: Conveyor, r: Any) -> None:
    from conveyor import Backoff

    seen: list[list[int]] = []

    @app.task(batch_size=4, batch_wait=0.05, retries=1, backoff=Backoff(base=0.05, jitter=False))
    def flaky(items: list[int]) -> list[int]:
        seen.append(sorted(items))
        if len(seen) == 1:
            raise RuntimeError("GPU fell over")
        return items

    jobs = flaky.enqueue_many([(i,) for i in range(4)])
    with worker_thread(app, fast(concurrency=4)):
        assert [j.result(timeout=5) for j in jobs] == [0, 1, 2, 3]
    assert seen[0] == [0, 1, 2, 3]
    assert sorted(i for batch in seen[1:] for i in batch) == [0, 1, 2, 3]  # each once more
    assert all(g["attempt"] == 2 for g in records(app, r, jobs))


def test_a_cancelled_error_raised_by_an_async_batch_fails_its_jobs_not_the_worker(
    app: Conveyor,
) -> None:
    @app.task(batch_size=4, batch_wait=0.05, retries=0)
    async def lookup(items: list[int]) -> list[int]:
        if -1 in items:
            raise asyncio.CancelledError()  # e.g. it awaited a call another task cancelled
        return items

    jobs = lookup.enqueue_many([(-1,), (1,), (2,), (3,)])
    with worker_thread(app, fast(concurrency=4)) as worker:
        for job in jobs:
            with pytest.raises(JobFailed, match="CancelledError"):
                job.result(timeout=5)
        assert all(not slot.done() for slot in worker.slots)  # every slot still runs
        assert lookup.enqueue(7).result(timeout=5) == 7
        assert worker.counts["dead"] == 4


def test_the_wrong_number_of_results_fails_the_batch_clearly(app: Conveyor) -> None:
    @app.task(batch_size=3, batch_wait=0.05, retries=0)
    def short(items: list[int]) -> list[int]:
        return items[:-1]

    jobs = short.enqueue_many([(i,) for i in range(3)])
    with worker_thread(app, fast(concurrency=4)):
        for job in jobs:
            with pytest.raises(JobFailed, match="returned 2 results for 3 items"):
                job.result(timeout=5)
    assert split("t", Outcome(True, "abc"), 3)[0].error == (
        "ValueError: batch task t must return a list with one result (or exception) per "
        "item, not str"
    )


def test_a_batch_waits_at_most_batch_wait_for_more_jobs(app: Conveyor) -> None:
    sizes: list[int] = []

    @app.task(batch_size=32, batch_wait=0.05)
    def echo(items: list[str]) -> list[str]:
        sizes.append(len(items))
        return items

    with worker_thread(app, fast(concurrency=32)):
        assert echo.enqueue("alone").result(timeout=5) == "alone"
    assert sizes == [1]


def test_a_cancelled_job_in_a_batch_ends_cancelled_and_the_others_finish(
    app: Conveyor,
) -> None:
    from conveyor import JobCancelled

    @app.task(batch_size=2, batch_wait=5.0)
    async def pair(items: list[str]) -> list[str]:
        return items

    with worker_thread(app, fast(concurrency=4)):
        waiting = pair.enqueue("first")  # waits up to 5 s for a second item
        wait_until(lambda: waiting.status() is JobState.RUNNING, 5, "the job to wait")
        waiting.cancel()
        with pytest.raises(JobCancelled):
            waiting.result(timeout=5)
        a, b = pair.enqueue("x"), pair.enqueue("y")
        assert (a.result(timeout=5), b.result(timeout=5)) == ("x", "y")


def test_a_sync_batch_job_cancelled_while_its_batch_fills_is_not_called(app: Conveyor) -> None:
    from conveyor import JobCancelled

    called: list[list[str]] = []

    @app.task(batch_size=2, batch_wait=1.0)
    def pair(items: list[str]) -> list[str]:
        called.append(items)
        return items

    with worker_thread(app, fast(concurrency=4)):
        waiting = pair.enqueue("first")  # waits up to 1 s for a second item
        wait_until(lambda: waiting.status() is JobState.RUNNING, 5, "the job to wait")
        waiting.cancel()  # a mark: the lease beat flags the job, its slot is not cancelled
        with pytest.raises(JobCancelled):
            waiting.result(timeout=5)
        assert called == []
        a, b = pair.enqueue("x"), pair.enqueue("y")
        assert (a.result(timeout=5), b.result(timeout=5)) == ("x", "y")
    assert called == [["x", "y"]]


def test_bad_batch_options_and_arguments_are_refused_clearly(app: Conveyor, r: Any) -> None:
    with pytest.raises(ConfigurationError, match="generator task cannot take batch_size"):

        @app.task(batch_size=8)
        def gen(items: list[int]) -> Any:
            yield from items

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigurationError, match="batch_size"):
            app.task(batch_size=bad)
    with pytest.raises(ConfigurationError, match="batch_wait"):
        app.task(batch_size=4, batch_wait=-1)
    with pytest.raises(ConfigurationError, match="exactly one positional parameter"):

        @app.task(batch_size=4)
        def two(a: list[int], b: int) -> list[int]:
            return a

    @app.task(batch_size=4, batch_wait=0.01, retries=0)
    def ints(items: list[int]) -> list[int]:
        return items

    extra, wrong = ints.enqueue(1, 2), ints.enqueue("x")  # type: ignore[call-arg, arg-type]
    with worker_thread(app, fast()):
        with pytest.raises(JobFailed, match="exactly one positional argument"):
            extra.result(timeout=5)
        with pytest.raises(JobFailed, match="the item of batch task ints"):
            wrong.result(timeout=5)
    reasons = [e[1][b"dead_reason"] for e in r.xrange(app.keys(app.default_queue).dead)]
    assert reasons == [b"bad_arguments", b"bad_arguments"]


def test_a_killed_worker_reruns_only_the_unacked_jobs_of_its_batches(
    app: Conveyor, r: Any, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    from tests import batching_app

    shout = app.task(batch_size=4, batch_wait=0.2, retries=0, name="shout")(batching_app.shout.fn)

    def start(n: int) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"worker{n}.log"
        cmd = [sys.executable, "-m", "tests.workerproc", "--url", redis_url]
        cmd += ["--namespace", namespace, "--app", "tests.batching_app:app", "--concurrency", "8"]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_until(lambda: re.search(r"^READY ", log.read_text(), re.M) is not None, 15, "READY")
        return proc, log

    first, _ = start(1)
    try:
        fast_jobs = shout.enqueue_many([(f"fast{i}",) for i in range(4)])
        wait_until(lambda: all(j.status() is JobState.DONE for j in fast_jobs), 10, "fast")
        slow_jobs = shout.enqueue_many([(f"slow{i}",) for i in range(4)])
        runs = f"{namespace}:runs"
        wait_until(lambda: r.hlen(runs) == 8, 10, "the slow batch to start")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
    second, _ = start(2)
    try:
        assert [j.result(timeout=15) for j in slow_jobs] == [f"SLOW{i}" for i in range(4)]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    counts = {k.decode(): int(v) for k, v in r.hgetall(runs).items()}
    assert counts == {**{f"fast{i}": 1 for i in range(4)}, **{f"slow{i}": 2 for i in range(4)}}
    assert [j.result(timeout=1) for j in fast_jobs] == [f"FAST{i}" for i in range(4)]
