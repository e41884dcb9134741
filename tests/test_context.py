"""current_job(): tasks see their own job id, attempt and deliveries, sync or async."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, current_job
from tests.conftest import worker_thread


def test_tasks_see_their_job_and_attempt(app: Conveyor) -> None:
    seen: list[tuple[str, int, int]] = []

    @app.task(retries=2, backoff=0.05)
    def flaky() -> str:
        job = current_job()
        seen.append((job.id, job.attempt, job.deliveries))
        if job.attempt < 3:
            raise RuntimeError("again")
        return job.task

    @app.task
    async def whoami() -> dict[str, object]:
        job = current_job()
        return {"id": job.id, "queue": job.queue, "worker": job.worker}

    a = flaky.enqueue()
    b = whoami.enqueue()
    with worker_thread(app) as worker:
        assert a.result(timeout=15) == "flaky"
        assert b.result(timeout=15) == {"id": b.id, "queue": "default", "worker": worker.consumer}
    assert seen == [(a.id, 1, 1), (a.id, 2, 1), (a.id, 3, 1)]


def test_current_job_outside_a_worker_raises() -> None:
    with pytest.raises(LookupError, match="inside a task"):
        current_job()
