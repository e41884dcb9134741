"""Hooks, middleware and the events stream, with a real worker on a real Redis."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from conveyor import ConfigurationError, Conveyor, JobFailed, chain
from conveyor.events import EventStream, latest, read
from conveyor.hooks import EVENTS, JobEvent, Middleware
from conveyor.keys import events_key
from conveyor.worker import Worker
from tests.conftest import fast, wait_until, worker_thread
from tests.telemetryapp import register_tasks


class Recorder(Middleware):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def _add(self, event: JobEvent) -> None:
        with self.lock:
            self.seen.append((event.kind, event.task, event.attempt))

    enqueued = started = succeeded = failed = retried = dead = cancelled = expired = _add


def test_hooks_see_each_step_of_a_jobs_life_in_order(app: Conveyor) -> None:
    register_tasks(app)
    rec = Recorder()
    app.use(rec)
    errors: list[JobEvent] = []
    app.on("failed")(errors.append)
    with worker_thread(app, fast()):
        ok = app.tasks["ok"].enqueue(1)
        flaky = app.tasks["flaky"].enqueue(2)
        doomed = app.tasks["doomed"].enqueue(3)
        assert ok.result(10) == 1
        assert flaky.result(10) == 2
        with pytest.raises(JobFailed):
            doomed.result(10)
        wait_until(lambda: ("dead", "doomed", 2) in rec.seen, 5, "the dead event")

    def of(task: str) -> list[tuple[str, int]]:
        """The worker's events in order (``enqueued`` is told by the producer once Redis
        acknowledged the add, so a fast worker may start the job before it)."""
        return [(k, attempt) for k, t, attempt in rec.seen if t == task and k != "enqueued"]

    assert sorted(t for k, t, _ in rec.seen if k == "enqueued") == ["doomed", "flaky", "ok"]
    assert of("ok") == [("started", 1), ("succeeded", 1)]
    assert of("flaky") == [
        ("started", 1),
        ("failed", 1),
        ("retried", 1),
        ("started", 2),
        ("succeeded", 2),
    ]
    assert of("doomed") == [
        ("started", 1),
        ("failed", 1),
        ("retried", 1),
        ("started", 2),
        ("failed", 2),
        ("dead", 2),
    ]
    assert [e.error for e in errors if e.task == "doomed"] == ["ValueError: doomed 3"] * 2
    assert all(e.traceback and "ValueError" in e.traceback for e in errors if e.task == "doomed")


def test_a_running_job_cancelled_tells_the_cancelled_hook(app: Conveyor) -> None:
    register_tasks(app)
    rec = Recorder()
    app.use(rec)
    with worker_thread(app, fast()):
        job = app.tasks["sleepy"].enqueue(30)
        wait_until(lambda: ("started", "sleepy", 1) in rec.seen, 5, "the job to start")
        job.cancel()
        wait_until(lambda: ("cancelled", "sleepy", 1) in rec.seen, 5, "the cancelled event")
    worker_events = [k for k, t, _ in rec.seen if t == "sleepy" and k != "enqueued"]
    assert worker_events == ["started", "cancelled"]
    assert job.status().value == "cancelled"


def test_a_hook_that_raises_is_logged_and_never_fails_the_job(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    register_tasks(app)
    calls: list[str] = []

    @app.on("started")
    @app.on("succeeded")
    @app.on("enqueued")
    def broken(event: JobEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("the hook is broken")

    with caplog.at_level(logging.ERROR, logger="conveyor.hooks"), worker_thread(app, fast()):
        job = app.tasks["ok"].enqueue(7)  # the enqueue itself survives the hook too
        assert job.result(10) == 7
        wait_until(lambda: "succeeded" in calls, 5, "the succeeded hook")
    assert sorted(calls) == ["enqueued", "started", "succeeded"]
    assert job.status().value == "done"
    logged = [r for r in caplog.records if "the hook is broken" in str(r.exc_info)]
    assert len(logged) == 3


async def test_an_async_hook_runs_on_the_workers_loop(app: Conveyor) -> None:
    from conveyor.testing import result_async, worker_task

    register_tasks(app)
    done: list[str] = []

    @app.on("succeeded")
    async def record(event: JobEvent) -> None:
        done.append(event.job_id)

    async with worker_task(app, fast()):
        job = await app.tasks["ok"].enqueue_async(3)
        assert await result_async(job, 10) == 3
        for _ in range(100):
            if done:
                break
            import asyncio

            await asyncio.sleep(0.01)
    assert done == [job.id]


def test_an_async_hook_told_of_a_sync_enqueue_runs_before_the_enqueue_returns(
    app: Conveyor,
) -> None:
    """No loop runs in a plain sync caller: the hook is run to its end there, not handed to
    asyncio.ensure_future (which, outside a loop, makes one that never runs: it was
    silently dropped)."""
    register_tasks(app)
    seen: list[str] = []

    @app.on("enqueued")
    async def record(event: JobEvent) -> None:
        seen.append(event.job_id)

    job = app.tasks["ok"].enqueue(1)
    assert seen == [job.id]


def test_a_slow_sync_hook_is_logged_with_what_it_costs_the_worker(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    register_tasks(app)

    @app.on("enqueued")
    def slow(event: JobEvent) -> None:
        time.sleep(0.15)

    with caplog.at_level(logging.WARNING, logger="conveyor.hooks"):
        app.tasks["ok"].enqueue(1)
    [record] = [r for r in caplog.records if "took" in r.getMessage()]
    assert "slow" in record.getMessage() and "every job waits" in record.getMessage()


def test_bad_hook_registrations_are_refused(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="unknown event 'finished'"):
        app.on("finished")
    with pytest.raises(ConfigurationError, match="Middleware"):
        app.use(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="maxlen"):
        EventStream(maxlen=0)
    assert not app.hooks.active


def test_events_stream_holds_what_workers_did(redis_url: str, namespace: str) -> None:
    app = Conveyor(redis_url, namespace=namespace, events=EventStream(maxlen=1000))
    register_tasks(app)
    with worker_thread(app, fast()):
        jobs = [app.tasks["ok"].enqueue(i) for i in range(5)]
        flaky = app.tasks["flaky"].enqueue(9)
        for j in jobs:
            j.result(10)
        flaky.result(10)
        wait_until(lambda: len(read(app, count=1000)) >= 15, 5, "15 events in the stream")
    events = read(app, count=1000)
    kinds = [(e.kind, e.task) for e in events]
    assert kinds.count(("started", "ok")) == 5
    assert kinds.count(("succeeded", "ok")) == 5
    assert [k for k, t in kinds if t == "flaky"] == [
        "started",
        "failed",
        "retried",
        "started",
        "succeeded",
    ]
    failed = next(e for e in events if e.kind == "failed")
    assert failed.error == "RuntimeError: flaky 9 failed once"
    assert all(e.worker and e.queue == "default" for e in events)
    assert all(e.duration_ms is not None for e in events if e.kind == "succeeded")
    # Reading on from an id returns only what came after it; latest() the tail.
    assert read(app, after=events[-3].id) == events[-2:]
    assert latest(app, 2) == events[-2:]
    # An entry someone else wrote there is read as an unknown event, not a crash.
    app.broker.client.xadd(events_key(namespace), {"event": "{not json"})
    assert latest(app, 1)[0].kind == "unknown"


def test_with_everything_off_the_worker_has_no_lifecycle_and_writes_no_events(
    app: Conveyor, r: object
) -> None:
    register_tasks(app)
    worker = Worker(app, fast())
    assert worker.lifecycle is None and worker.transitions.lifecycle is None
    with worker_thread(app, fast()):
        assert app.tasks["ok"].enqueue(1).result(10) == 1
    assert not app.broker.client.exists(events_key(app.namespace))


def _stream_kinds(app: Conveyor, task: str) -> list[str]:
    return [e.kind for e in read(app, count=1000) if e.task == task]


def test_a_queued_job_cancelled_is_told_once_by_the_client_not_again_by_the_worker(
    redis_url: str, namespace: str
) -> None:
    """cancel.lua ends a queued job at once: the cancelling process tells the hooks and the
    events stream; the worker that later takes its entry only skips it (told nothing)."""
    app = Conveyor(redis_url, namespace=namespace, events=True)
    register_tasks(app)
    rec = Recorder()
    app.use(rec)
    job = app.tasks["ok"].enqueue(1)
    assert job.cancel("not needed").outcome.value == "will_skip"
    assert rec.seen.count(("cancelled", "ok", 1)) == 1
    assert _stream_kinds(app, "ok") == ["cancelled"]
    (event,) = [e for e in read(app) if e.kind == "cancelled"]
    assert event.job_id == job.id and event.queue == "default" and event.worker == ""
    assert event.reason == "not needed"
    with worker_thread(app, fast()) as worker:
        wait_until(lambda: worker.counts.get("skipped") == 1, 5, "the worker to skip it")
    assert worker.counts["cancelled"] == 0
    assert rec.seen.count(("cancelled", "ok", 1)) == 1
    assert "started" not in [k for k, _, _ in rec.seen]
    assert _stream_kinds(app, "ok") == ["cancelled"]
    assert job.status().value == "cancelled"


async def test_a_delayed_job_cancelled_async_tells_the_cancelled_hook(app: Conveyor) -> None:
    register_tasks(app)
    seen: list[JobEvent] = []
    app.on("cancelled")(seen.append)
    job = app.tasks["ok"].enqueue_in(60, 2)
    assert (await job.cancel_async()).outcome.value == "cancelled"
    assert [(e.job_id, e.task, e.queue) for e in seen] == [(job.id, "ok", "default")]
    # Cancelling again ends nothing, so tells nothing.
    assert (await job.cancel_async()).outcome.value == "already_ended"
    assert len(seen) == 1


def test_a_workflow_handle_cancel_tells_the_steps_it_ended(app: Conveyor) -> None:
    """The queued first step is ended (told); steps not added yet are recorded cancelled
    but were never enqueued, so they are not told either."""
    register_tasks(app)
    seen: list[JobEvent] = []
    app.on("cancelled")(seen.append)
    ok = app.tasks["ok"]
    handle = chain(ok.s(1), ok.s(), ok.s()).enqueue()
    results = handle.cancel()
    assert [r.outcome.value for r in results] == ["will_skip", "cancelled", "cancelled"]
    assert [e.job_id for e in seen] == [handle.jobs[0].id]


def test_a_job_that_expires_before_it_starts_tells_the_expired_hook(
    redis_url: str, namespace: str
) -> None:
    app = Conveyor(redis_url, namespace=namespace, events=True)
    seen: list[JobEvent] = []
    app.on("expired")(seen.append)

    @app.task(expires=0.05)
    async def stale() -> None:
        return None

    job = stale.enqueue()
    time.sleep(0.2)  # it waits past its expires before any worker runs
    with worker_thread(app, fast()):
        wait_until(lambda: seen, 5, "the expired event")
        wait_until(lambda: _stream_kinds(app, stale.name) == ["expired"], 5, "it in the stream")
    (event,) = seen
    assert (event.job_id, event.task, event.queue) == (job.id, stale.name, "default")
    assert event.worker
    assert job.status().value == "expired"


def test_expired_is_a_kind_hooks_and_middleware_can_watch(app: Conveyor) -> None:
    assert "expired" in EVENTS
    app.on("expired")(lambda e: None)  # accepted, not refused as unknown
    assert hasattr(Middleware, "expired")
