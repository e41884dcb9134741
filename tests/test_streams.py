"""Streamed partial results (streams.py, chunk_append.lua): generator tasks and emit(), read
live or after the end by job.stream(), against a real Redis and a real worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest

from conveyor import Conveyor, JobFailed, JobState, current_job
from conveyor.errors import ConfigurationError
from conveyor.streams import append
from tests.conftest import fast, wait_until, worker_thread


def test_sync_generator_chunks_are_read_in_order_and_its_return_is_the_result(
    app: Conveyor,
) -> None:
    @app.task
    def count(n: int) -> Generator[int, None, str]:
        yield from range(n)
        return "counted"

    with worker_thread(app, fast()):
        job = count.enqueue(50)
        assert list(job.stream()) == list(range(50))  # live, ends when the job ends
        assert job.result(timeout=5) == "counted"
        assert list(job.stream()) == list(range(50))  # after the end, the same again


def test_reader_attached_mid_way_sees_all_1000_chunks_once_in_order(app: Conveyor, r: Any) -> None:
    @app.task
    async def tokens(n: int) -> AsyncIterator[dict[str, int]]:
        for i in range(n):
            if i % 50 == 0:
                await asyncio.sleep(0.01)  # the reader attaches while these still come
            yield {"i": i}

    with worker_thread(app, fast()):
        job = tokens.enqueue(1000)
        key = app.keys(app.default_queue).chunks(job.id)
        from_start: list[Any] = []
        reader = threading.Thread(target=lambda: from_start.extend(job.stream()))
        reader.start()
        wait_until(lambda: r.xlen(key) >= 100, 10, "the first chunks")
        assert job.status() is JobState.RUNNING  # attaching mid-way, not after the end
        mid_way = list(job.stream())
        reader.join(10)
        assert mid_way == [{"i": i} for i in range(1000)]
        assert from_start == mid_way
        assert job.result(timeout=5) is None  # an async generator returns no value
        after_end = [c.value["i"] for c in job.chunks()]
        assert after_end == list(range(1000))
        assert r.xlen(key) == 1001  # 1000 chunks and the run's end, nothing doubled


async def test_stream_async_reads_live_on_the_event_loop(app: Conveyor) -> None:
    @app.task
    def words() -> Iterator[str]:
        for w in ("a", "b", "c"):
            time.sleep(0.02)
            yield w

    with worker_thread(app, fast()):
        job = await words.enqueue_async()
        got = [chunk async for chunk in job.stream_async()]
        assert got == ["a", "b", "c"]
        assert await job.status_async() is JobState.DONE


def test_emit_from_sync_and_async_tasks(app: Conveyor) -> None:
    @app.task
    def sync_emitter(n: int) -> int:
        for i in range(n):
            current_job().emit(f"s{i}")
        return n

    @app.task
    async def async_emitter(n: int) -> int:
        for i in range(n):
            await current_job().emit_async(f"a{i}")
        return n

    with worker_thread(app, fast()):
        s, a = sync_emitter.enqueue(3), async_emitter.enqueue(3)
        assert list(s.stream()) == ["s0", "s1", "s2"] and s.result(timeout=5) == 3
        assert list(a.stream()) == ["a0", "a1", "a2"] and a.result(timeout=5) == 3


def test_blocking_emit_on_the_event_loop_and_a_non_json_chunk_fail_clearly(
    app: Conveyor,
) -> None:
    @app.task(retries=0)
    async def blocks() -> None:
        current_job().emit("x")

    @app.task(retries=0)
    def not_json() -> Iterator[Any]:
        yield object()

    with worker_thread(app, fast()):
        b, n = blocks.enqueue(), not_json.enqueue()
        with pytest.raises(JobFailed, match="emit_async"):
            b.result(timeout=5)
        with pytest.raises(JobFailed, match="streamed chunk must be JSON"):
            n.result(timeout=5)
        assert list(n.stream()) == []  # ends: the job is dead


def test_a_retried_run_streams_again_and_the_reader_follows_it_to_the_end(
    app: Conveyor,
) -> None:
    from conveyor import Backoff

    @app.task(retries=1, backoff=Backoff(base=0.2, jitter=False))
    def flaky() -> Iterator[str]:
        attempt = current_job().attempt
        yield f"a{attempt}-0"
        yield f"a{attempt}-1"
        if attempt == 1:
            raise RuntimeError("first attempt fails")

    with worker_thread(app, fast()):
        job = flaky.enqueue()
        chunks = list(job.chunks())  # live through the failure, the backoff and the retry
        assert [(c.attempt, c.index, c.value) for c in chunks] == [
            (1, 0, "a1-0"),
            (1, 1, "a1-1"),
            (2, 0, "a2-0"),
            (2, 1, "a2-1"),
        ]
        assert job.status() is JobState.DONE
        resumed = list(job.stream(after=chunks[1].id))  # resume after a given chunk
        assert resumed == ["a2-0", "a2-1"]


def test_reader_stops_for_a_job_that_ends_without_running(app: Conveyor) -> None:
    @app.task
    def never() -> Iterator[int]:
        yield 1

    job = never.enqueue()  # no worker: it stays queued
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.extend(job.stream()))
    reader.start()
    time.sleep(0.1)
    assert reader.is_alive()  # queued: the reader waits for it
    job.cancel()
    reader.join(5)
    assert not reader.is_alive() and got == []


def test_chunks_expire_with_the_job_record(app: Conveyor, r: Any) -> None:
    @app.task(result_ttl=0.5)
    def short() -> Iterator[int]:
        yield from range(3)

    with worker_thread(app, fast()):
        job = short.enqueue()
        assert job.result(timeout=5) is None
    key = app.keys(app.default_queue).chunks(job.id)
    assert 0 < r.pttl(key) <= 500
    assert list(job.stream()) == [0, 1, 2]  # after the end, until expiry
    wait_until(lambda: not r.exists(key), 3, "the chunk stream to expire")
    started = time.monotonic()
    assert list(job.stream()) == []  # gone with the record: the reader ends at once
    assert time.monotonic() - started < 0.5


def test_a_resent_chunk_is_not_doubled_and_the_stream_is_bounded(
    app: Conveyor, r: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor import streams

    keys = app.keys("q")
    key = keys.chunks("q:n:1-0")
    assert key.startswith(keys.prefix)  # shares the queue's hash tag
    first = app.broker.call(append(keys, "q:n:1-0", "1.1", 0, "c", b'"x"', 60_000))
    again = app.broker.call(append(keys, "q:n:1-0", "1.1", 0, "c", b'"x"', 60_000))
    assert first == again and r.xlen(key) == 1
    app.broker.call(append(keys, "q:n:1-0", "2.1", 0, "c", b'"y"', 60_000))  # a new run
    assert r.xlen(key) == 2
    monkeypatch.setattr(streams, "MAX_CHUNKS", 100)
    for i in range(1, 400):
        app.broker.call(append(keys, "q:n:1-0", "2.1", i, "c", b"1", 60_000))
    assert 100 <= r.xlen(key) < 300  # MAXLEN ~ 100 trims whole nodes


def test_bad_input_is_refused_clearly(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="process pool does not have"):

        @app.task(executor="process")
        def gen() -> Iterator[int]:
            yield 1

    @app.task
    def ok() -> Iterator[int]:
        yield 1

    with pytest.raises(ConfigurationError, match="entry id"):
        next(ok.enqueue().stream(after="nope"))


def test_a_plain_job_writes_no_chunk_stream(app: Conveyor, r: Any) -> None:
    @app.task
    def plain(x: int) -> int:
        return x

    with worker_thread(app, fast()):
        job = plain.enqueue(1)
        assert job.result(timeout=5) == 1
    assert not r.exists(app.keys(app.default_queue).chunks(job.id))
    assert list(job.stream()) == []


def test_a_cancelled_async_generator_ends_its_readers(app: Conveyor) -> None:
    @app.task
    async def endless() -> AsyncIterator[int]:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.01)

    with worker_thread(app, fast()):
        job = endless.enqueue()
        got: list[int] = []
        reader = threading.Thread(target=lambda: got.extend(job.stream()))
        reader.start()
        wait_until(lambda: len(got) >= 5, 10, "some chunks")
        job.cancel()
        reader.join(5)
        assert not reader.is_alive() and job.status() is JobState.CANCELLED
        assert got == list(range(len(got)))


def test_emit_in_the_process_pool_is_a_clear_error(app: Conveyor) -> None:
    from tests import streams_pool_tasks

    task = app.task(executor="process", retries=0, name="emits")(streams_pool_tasks.emits)
    with worker_thread(app, fast(pool_size=1)):
        job = task.enqueue()
        with pytest.raises(JobFailed, match="ConfigurationError: emit\\(\\) is only available"):
            job.result(timeout=30)
    assert list(job.stream()) == []


def test_around_task_hooks_wrap_a_generator_task_run(app: Conveyor) -> None:
    import contextlib
    import contextvars

    from conveyor import JobContext

    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")

    @app.around_task
    @contextlib.contextmanager
    def as_tenant(job: JobContext) -> Iterator[None]:
        token = tenant.set(f"t-{job.task}")
        try:
            yield
        finally:
            tenant.reset(token)

    @app.task
    def sync_gen() -> Iterator[str]:
        yield tenant.get()

    @app.task
    async def async_gen() -> AsyncIterator[str]:
        yield tenant.get()

    with worker_thread(app, fast()):
        assert list(sync_gen.enqueue().stream()) == ["t-sync_gen"]
        assert list(async_gen.enqueue().stream()) == ["t-async_gen"]
