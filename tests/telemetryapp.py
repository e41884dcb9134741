"""Tasks for the telemetry tests: ``tests.telemetryapp:app``, with its events stream on.

Its Redis URL comes from CONVEYOR_REDIS_URL, its namespace from TEST_NAMESPACE. Every run
writes one line to the ledger file named by TELEMETRY_LEDGER (appended, so two worker
processes can share it): ``start <task> <job id> <attempt>``, then ``ok`` or ``fail``; the
tests compare the Prometheus counters with those lines.
"""

from __future__ import annotations

import asyncio
import os

from conveyor import Backoff, Conveyor, current_job

FAST = Backoff(base=0.01, cap=0.02, jitter=False)


def _ledger(what: str) -> None:
    path = os.environ.get("TELEMETRY_LEDGER")
    if not path:
        return
    job = current_job()
    line = f"{what} {job.task} {job.id} {job.attempt}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def register_tasks(app: Conveyor) -> None:
    @app.task
    async def ok(i: int) -> int:
        _ledger("start")
        _ledger("ok")
        return i

    @app.task(retries=2, backoff=FAST)
    async def flaky(i: int) -> int:
        """Fails on its first attempt, succeeds on its second."""
        _ledger("start")
        if current_job().attempt == 1:
            _ledger("fail")
            raise RuntimeError(f"flaky {i} failed once")
        _ledger("ok")
        return i

    @app.task
    async def sleepy(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @app.task
    async def current_span() -> int:
        """The span id current while the task runs (0 without OpenTelemetry)."""
        try:
            from opentelemetry import trace
        except ImportError:
            return 0
        return int(trace.get_current_span().get_span_context().span_id)

    @app.task(retries=1, backoff=FAST)
    def doomed(i: int) -> None:
        """Fails every time: one retry, then the dead-letter stream."""
        _ledger("start")
        _ledger("fail")
        raise ValueError(f"doomed {i}")


app = Conveyor(namespace=os.environ.get("TEST_NAMESPACE", "telemetryapp"), events=True)
register_tasks(app)
