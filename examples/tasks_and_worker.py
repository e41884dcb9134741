"""A producer and a worker process with a registry of tasks, and results read back.

Covers the tutorial's "miniature Celery": a producer enqueues send_email, resize_image and
generate_report; a separate worker process runs them; the producer reads each job's state
and its stored result (the tutorial's challenge 5, "job result storage").

Run it (starts its own worker process, then stops it):

    python examples/tasks_and_worker.py

Or in two terminals, the way you would deploy it:

    EXAMPLE_NAMESPACE=tutorial conveyor worker examples.tasks_and_worker:app
    EXAMPLE_NAMESPACE=tutorial python examples/tasks_and_worker.py --no-worker
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from conveyor import Conveyor, Job, JobState
from conveyor.testing import delete_namespace

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-tasks-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)  # Redis: CONVEYOR_REDIS_URL, REDIS_URL or localhost


# -- the task registry: any function decorated with @app.task ---------------------------------
@app.task
def send_email(to: str, subject: str) -> str:
    return f"sent {subject!r} to {to}"


@app.task
def resize_image(path: str, width: int, height: int) -> dict[str, object]:
    return {"path": path, "size": [width, height], "worker_pid": os.getpid()}


@app.task(retries=1)
async def generate_report(kind: str, period: str) -> str:  # async tasks work the same way
    return f"{kind} report for {period}: 42 rows"


# -- the producer -------------------------------------------------------------------------------
def main() -> int:
    print(f"namespace {NAMESPACE}")
    worker = None
    if "--no-worker" not in sys.argv:
        # `conveyor worker examples.tasks_and_worker:app -c 4`, in this script's namespace
        cmd = ["worker", "examples.tasks_and_worker:app", "--concurrency", "4"]
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "--log-level", "WARNING", *cmd],
            cwd=Path(__file__).resolve().parent.parent,  # where `examples.` imports from
            env={**os.environ, "EXAMPLE_NAMESPACE": NAMESPACE},
        )
    try:
        jobs: list[Job[Any]] = [
            send_email.enqueue("user@example.com", "Welcome!"),
            resize_image.enqueue("/uploads/photo.jpg", 800, 600),
            app.enqueue("generate_report", "monthly", "2026-06"),  # by name, as other code would
        ]
        for job in jobs:
            print(f"enqueued {job.id}: {job.status().value}")
        results = [job.result(timeout=30) for job in jobs]  # waits on Redis, no polling loop
        for job, result in zip(jobs, results, strict=True):
            record = job.info().record
            attempt = record.attempt if record else None
            print(f"{job.status().value:<6} {job.id} attempt {attempt}: {result}")
        ok = all(job.status() is JobState.DONE for job in jobs)
        ok = ok and results[0] == "sent 'Welcome!' to user@example.com"
        ok = ok and results[1]["size"] == [800, 600] and results[1]["worker_pid"] != os.getpid()
    finally:
        if worker is not None:
            worker.terminate()  # SIGTERM: graceful, running jobs finish first
            worker.wait(30)
        delete_namespace(app)
    print("all 3 jobs done, results read back" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
