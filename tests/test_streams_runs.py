"""The runs of a chunk stream (streams.py, chunk_append.lua): every run has a name of its
own, writes its entries one at a time in order, keeps its stream while the job runs, and
stops writing once it is over; against a real Redis and a real worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest

from conveyor import Backoff, Conveyor, JobFailed, JobState, current_job
from conveyor.dead_letters import list_dead, replay
from tests.conftest import fast, wait_until, worker_thread


def entries(app: Conveyor, r: Any, job_id: str) -> list[tuple[str, int, str]]:
    """(run, index, chunk JSON or "end:<outcome>") of every entry, in stream order."""
    key = app.keys(app.default_queue).chunks(job_id)
    out = []
    for _, f in r.xrange(key):
        what = f[b"c"].decode() if b"c" in f else "end:" + f[b"end"].decode()
        out.append((f[b"run"].decode(), int(f[b"n"]), what))
    return out


def runs(rows: list[tuple[str, int, str]]) -> list[str]:
    """The run names, in the order their first entries came."""
    return list(dict.fromkeys(run for run, _, _ in rows))


def test_a_replayed_job_streams_its_new_run_although_attempt_and_delivery_repeat(
    app: Conveyor, r: Any
) -> None:
    fail = [True]

    @app.task(retries=0)
    def gen() -> Generator[str, None, str]:
        name = "first" if fail[0] else "replayed"
        for i in range(3):
            yield f"{name}-{i}"
        if fail[0]:
            raise RuntimeError("model offline")
        return "ok"

    with worker_thread(app, fast()):
        job = gen.enqueue()
        with pytest.raises(JobFailed):
            job.result(timeout=5)
        fail[0] = False
        (dead,) = list_dead(app, app.default_queue)
        replay(app, app.default_queue, dead.entry_id)  # attempt 1, delivery 1 again
        assert job.result(timeout=5) == "ok"
    chunks = list(job.chunks())
    assert [c.value for c in chunks] == [f"first-{i}" for i in range(3)] + [
        f"replayed-{i}" for i in range(3)
    ]
    assert {(c.attempt, c.delivery) for c in chunks} == {(1, 1)}
    assert len({c.run for c in chunks}) == 2  # told apart by their names alone
    rows = entries(app, r, job.id)
    first, second = runs(rows)
    assert [w for run, _, w in rows if run == second] == [
        '"replayed-0"',
        '"replayed-1"',
        '"replayed-2"',
        "end:ok",
    ]
    assert rows[3] == (first, 3, "end:error")


def test_a_job_requeued_at_shutdown_streams_its_next_run_and_its_old_thread_stops(
    app: Conveyor, r: Any
) -> None:
    yielded: list[tuple[int, int]] = []  # (run number, chunk) as the generator yields them
    started = [0]

    @app.task
    def slow() -> Iterator[int]:
        started[0] += 1
        me = started[0]
        for i in range(8):
            yielded.append((me, i))
            yield i
            time.sleep(0.1)

    job = slow.enqueue()
    with worker_thread(app, fast(shutdown_grace=0.1)):
        wait_until(lambda: len(yielded) >= 3, 5, "the first chunks")
    assert job.status() is JobState.QUEUED  # handed back; its thread still sleeps
    with worker_thread(app, fast()):
        assert job.result(timeout=10) is None
        time.sleep(0.3)  # what the old thread would still write, had it not stopped
    rows = entries(app, r, job.id)
    old, new = runs(rows)
    old_rows = [row for row in rows if row[0] == old]
    assert rows[: len(old_rows)] == old_rows  # nothing of the old run after the new one
    assert [w for run, _, w in rows if run == new] == [str(i) for i in range(8)] + ["end:ok"]
    assert len([y for y in yielded if y[0] == 1]) < 8  # the old generator was closed
    assert [c.value for c in job.chunks() if c.run == new] == list(range(8))


def test_concurrent_emits_of_one_job_are_all_stored_in_index_order(app: Conveyor, r: Any) -> None:
    @app.task
    async def fan() -> int:
        job = current_job()
        await asyncio.gather(*(job.emit_async(f"a{i}") for i in range(20)))
        return 20

    @app.task
    def threads() -> int:
        job = current_job()

        def emit_some(t: int) -> None:
            for i in range(10):
                job.emit(f"t{t}-{i}")

        workers = [threading.Thread(target=emit_some, args=(t,)) for t in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return 40

    with worker_thread(app, fast()):
        a, t = fan.enqueue(), threads.enqueue()
        assert (a.result(timeout=5), t.result(timeout=5)) == (20, 40)
    assert [c.value for c in a.chunks()] == [f"a{i}" for i in range(20)]
    assert sorted(c.value for c in t.chunks()) == sorted(
        f"t{n}-{i}" for n in range(4) for i in range(10)
    )
    for job, n in ((a, 20), (t, 40)):
        rows = entries(app, r, job.id)
        assert [i for _, i, _ in rows] == list(range(n + 1))  # the end last, nothing lost
        assert rows[-1][2] == "end:ok"


def test_a_running_jobs_chunks_outlive_its_result_ttl_and_expire_with_its_record(
    app: Conveyor, r: Any
) -> None:
    @app.task(result_ttl=1.0)
    def think() -> Generator[str, None, str]:
        yield "token-0"
        yield "token-1"
        time.sleep(1.5)  # still running, longer than result_ttl after the last chunk
        return "answer"

    key = app.keys(app.default_queue).chunks
    with worker_thread(app, fast()):
        job = think.enqueue()
        wait_until(lambda: r.xlen(key(job.id)) == 2, 5, "the first chunks")
        time.sleep(1.1)  # past result_ttl since the last write
        assert job.status() is JobState.RUNNING
        assert r.xlen(key(job.id)) == 2
        assert r.pttl(key(job.id)) > 23 * 3600 * 1000  # kept about a day past result_ttl
        assert job.result(timeout=5) == "answer"
        assert 0 < r.pttl(key(job.id)) <= 1000  # from the run's end: as long as the record
        assert list(job.stream()) == ["token-0", "token-1"]


def test_a_timed_out_generator_thread_stops_streaming_into_its_retry(app: Conveyor, r: Any) -> None:
    yielded: list[tuple[int, int]] = []

    @app.task(timeout=0.5, retries=1, backoff=Backoff(base=0.05, jitter=False))
    def slow() -> Generator[str, None, str]:
        attempt = current_job().attempt
        for i in range(6):
            yielded.append((attempt, i))
            yield f"attempt{attempt}-{i}"
            time.sleep(0.2 if attempt == 1 else 0.05)
        return f"done by attempt {attempt}"

    with worker_thread(app, fast()):
        job = slow.enqueue()
        assert job.result(timeout=10) == "done by attempt 2"
        time.sleep(0.8)  # what the abandoned thread would still write, had it not stopped
    rows = entries(app, r, job.id)
    first, second = runs(rows)
    assert first.startswith("1.") and second.startswith("2.")
    first_rows = [row for row in rows if row[0] == first]
    assert rows[: len(first_rows)] == first_rows  # the first run ends before the retry
    assert first_rows[-1][2] == "end:error"  # its end written when it timed out
    assert [w for run, _, w in rows if run == second][-1] == "end:ok"
    assert len([y for y in yielded if y[0] == 1]) < 6  # the abandoned generator was closed


def test_an_async_generator_that_times_out_or_raises_cancelled_error_marks_its_end(
    app: Conveyor, r: Any
) -> None:
    @app.task(timeout=0.3, retries=0)
    async def stalls() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(5)
        yield 2

    @app.task(retries=0)
    async def cancelled_inside() -> AsyncIterator[int]:
        yield 1
        raise asyncio.CancelledError()  # it awaited something another task cancelled

    with worker_thread(app, fast()):
        jobs = stalls.enqueue(), cancelled_inside.enqueue()
        for job in jobs:
            with pytest.raises(JobFailed):
                job.result(timeout=5)
    for job in jobs:
        assert [w for _, _, w in entries(app, r, job.id)] == ["1", "end:error"]


async def test_an_abandoned_runs_end_lands_after_the_write_its_thread_has_under_way(
    app: Conveyor, r: Any
) -> None:
    from conveyor.context import JobContext
    from conveyor.streams import ChunkWriter

    class Held:
        """The app's broker, whose sync calls wait for ``go`` (a slow network)."""

        def __init__(self) -> None:
            self.go = threading.Event()
            self.waiting = threading.Event()

        def call(self, c: Any) -> Any:
            self.waiting.set()
            self.go.wait(5)
            return app.broker.call(c)

        async def acall(self, c: Any) -> Any:
            return await app.broker.acall(c)

    held = Held()
    writer = ChunkWriter(held, app.keys, lambda name: 60_000, 1_000_000)  # type: ignore[arg-type]
    job = JobContext("default:n:1-0", "t", "default", 1, 1, "w", _writer=writer)
    thread = threading.Thread(target=writer.emit, args=(job, "under way"))
    thread.start()
    assert held.waiting.wait(5)
    abandoning = asyncio.create_task(writer.abandon(job))  # e.g. its timeout, on the loop
    await asyncio.sleep(0.2)
    assert not abandoning.done()  # the end waits for the write under way
    held.go.set()
    await asyncio.wait_for(abandoning, 5)
    thread.join(5)
    assert [w for _, _, w in entries(app, r, job.id)] == ['"under way"', "end:error"]
    assert writer.emit(job, "later") is False  # the run is over: nothing more is written
    assert len(entries(app, r, job.id)) == 2
