"""conveyor.testing's burst helpers: run the real worker until nothing is left to run."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, JobState
from conveyor.testing import (
    remaining,
    run_until_empty,
    wait_until_empty_async,
    worker_task,
)
from tests.conftest import fast


def test_run_until_empty_runs_retries_delayed_jobs_and_the_jobs_tasks_enqueue(
    app: Conveyor,
) -> None:
    ran: list[str] = []

    @app.task(retries=2, backoff=0.05)
    def flaky() -> None:
        ran.append("flaky")
        if ran.count("flaky") < 3:
            raise RuntimeError("not yet")

    @app.task(queue="other")
    def child(i: int) -> None:
        ran.append(f"child {i}")

    @app.task
    def parent() -> None:
        for i in range(3):
            child.enqueue(i)

    jobs = [flaky.enqueue(), parent.enqueue(), child.enqueue_in(0.3, 9)]
    assert remaining(app) == {
        "default": {"ready": 2, "running": 0, "delayed": 0},
        "other": {"ready": 0, "running": 0, "delayed": 1},
    }
    run_until_empty(app, fast(), timeout=20)
    assert remaining(app) == {}
    assert sorted(ran) == ["child 0", "child 1", "child 2", "child 9", "flaky", "flaky", "flaky"]
    assert [j.status() for j in jobs] == [JobState.DONE] * 3


async def test_wait_until_empty_async_times_out_naming_what_is_left(app: Conveyor) -> None:
    @app.task
    def later() -> None:
        pass

    later.enqueue_in(3600)
    async with worker_task(app, fast()):
        with pytest.raises(TimeoutError, match=r"default: 1 delayed"):
            await wait_until_empty_async(app, timeout=0.3)
