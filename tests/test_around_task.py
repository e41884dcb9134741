"""app.around_task: a context manager entered around every run, where the function runs."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

import pytest

from conveyor import Conveyor, JobContext, JobFailed
from tests.conftest import fast, worker_thread

tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")


def test_around_task_wraps_sync_and_async_runs_in_their_own_thread_and_context(
    app: Conveyor,
) -> None:
    seen: list[tuple[str, str, str]] = []

    @app.around_task
    @contextlib.contextmanager
    def as_tenant(job: JobContext) -> Iterator[None]:
        token = tenant.set(f"t-{job.task}")
        seen.append(("enter", job.task, threading.current_thread().name))
        try:
            yield
        finally:
            tenant.reset(token)
            seen.append(("exit", job.task, threading.current_thread().name))

    @app.task
    def sync_task() -> list[str]:
        return [tenant.get(), threading.current_thread().name]

    @app.task
    async def async_task() -> str:
        return tenant.get()

    with worker_thread(app, fast()):
        name, thread = sync_task.enqueue().result(timeout=10)
        assert name == "t-sync_task"
        assert async_task.enqueue().result(timeout=10) == "t-async_task"
    assert ("enter", "sync_task", thread) in seen
    assert ("exit", "sync_task", thread) in seen
    assert [s[:2] for s in seen if s[1] == "async_task"] == [
        ("enter", "async_task"),
        ("exit", "async_task"),
    ]
    assert tenant.get() == "none"


def test_an_error_entering_around_task_fails_that_run_not_the_worker(app: Conveyor) -> None:
    @app.around_task
    @contextlib.contextmanager
    def refuse(job: JobContext) -> Iterator[None]:
        if job.task == "refused":
            raise RuntimeError("no database")
        yield

    @app.task(retries=0)
    def refused() -> None:
        raise AssertionError("must not run")

    @app.task
    def fine() -> str:
        return "ok"

    with worker_thread(app, fast()):
        with pytest.raises(JobFailed, match="RuntimeError: no database"):
            refused.enqueue().result(timeout=10)
        assert fine.enqueue().result(timeout=10) == "ok"
