"""The chaos tasks, registered identically by the producer (to enqueue) and the workers (to run).

Every task takes the job's sequence number first and writes ``START``/``DONE`` lines to the
worker's ledger (see ``ledger.py``). Options are fixed here so the checker knows, for each
task, how a job of it must end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from conveyor import Backoff, Conveyor, current_job

from .ledger import Ledger

NAMESPACE = "chaos"
QUEUE = "default"

JOB_RETRIES = 3
#: Good jobs may share a worker with jobs that kill it (scenario 6); a generous limit keeps a
#: good job from being dead-lettered for its neighbours' crimes.
JOB_MAX_DELIVERIES = 10
RAISE_RETRIES = 2
SUICIDE_MAX_DELIVERIES = 2
DEP_RETRIES = 40
DEP_BACKOFF = Backoff(base=1.0, cap=60.0, jitter=True)

#: Set by the worker process before it runs anything; the producer never runs tasks.
LEDGER: Ledger | None = None
#: A file whose existence means "the dependency is down" (scenario 7).
DEP_FLAG_ENV = "CHAOS_DEPENDENCY_DOWN_FLAG"


class DependencyDown(RuntimeError):
    pass


def _write(line: str) -> None:
    if LEDGER is None:
        raise RuntimeError("chaos task run outside a chaos worker (no ledger)")
    LEDGER.write(line)


def start(seq: int) -> None:
    _write(f"START {seq} {current_job().attempt} {os.getpid()} {time.time():.6f}")


def done(seq: int) -> None:
    _write(f"DONE {seq} {os.getpid()} {time.time():.6f}")


def register(app: Conveyor) -> None:
    @app.task(
        name="chaos_job",
        retries=JOB_RETRIES,
        backoff=Backoff(base=0.05, cap=0.5),
        max_deliveries=JOB_MAX_DELIVERIES,
        result_ttl=600,
    )
    async def chaos_job(seq: int, ms: int = 0) -> int:
        """Sleep ``ms`` milliseconds; the common good job."""
        start(seq)
        if ms:
            await asyncio.sleep(ms / 1000)
        done(seq)
        return seq

    @app.task(
        name="chaos_ttl", retries=JOB_RETRIES, max_deliveries=JOB_MAX_DELIVERIES, result_ttl=60
    )
    async def chaos_ttl(seq: int) -> int:
        """A quick job whose result is kept 60 s (scenario 10)."""
        start(seq)
        done(seq)
        return seq

    @app.task(name="chaos_raise", retries=RAISE_RETRIES, backoff=Backoff(base=0.05, cap=0.2))
    async def chaos_raise(seq: int) -> None:
        """Fails on every attempt: must end dead ('failed') after exactly its retries."""
        start(seq)
        raise RuntimeError(f"chaos_raise {seq} always fails")

    @app.task(name="chaos_suicide", retries=0, max_deliveries=SUICIDE_MAX_DELIVERIES)
    async def chaos_suicide(seq: int) -> None:
        """SIGKILLs the worker running it, every time: must end dead ('max_deliveries')."""
        start(seq)
        os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.sleep(60)  # pragma: no cover - never reached

    @app.task(name="chaos_long", retries=0, max_deliveries=JOB_MAX_DELIVERIES)
    async def chaos_long(seq: int, seconds: float) -> int:
        """A long job (scenario 5): runs far longer than the lease timeout."""
        start(seq)
        await asyncio.sleep(seconds)
        done(seq)
        return seq

    @app.task(name="chaos_dep", retries=DEP_RETRIES, backoff=DEP_BACKOFF)
    async def chaos_dep(seq: int, ms: int = 0) -> int:
        """Needs a dependency that may be down (scenario 7): fails while the flag file exists."""
        start(seq)
        flag = os.environ.get(DEP_FLAG_ENV)
        if flag and os.path.exists(flag):  # noqa: ASYNC240 - a stat, deliberately simple
            raise DependencyDown("dependency unavailable")
        if ms:
            await asyncio.sleep(ms / 1000)
        done(seq)
        return seq

    @app.task(name="chaos_blob", retries=JOB_RETRIES, max_deliveries=JOB_MAX_DELIVERIES)
    async def chaos_blob(seq: int, blob: str, ms: int = 0) -> int:
        """Carries a payload (scenario 9)."""
        start(seq)
        if ms:
            await asyncio.sleep(ms / 1000)
        done(seq)
        return len(blob)


def chaos_app(url: str, **kwargs: object) -> Conveyor:
    app = Conveyor(url, namespace=NAMESPACE, default_queue=QUEUE, **kwargs)  # type: ignore[arg-type]
    register(app)
    return app
