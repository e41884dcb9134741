"""The app the flow-control tests run in real worker processes (``--app
tests.test_flow_tasks:app``, rebound to each test's URL and namespace). No tests here.

Every task writes to a ledger file outside Redis (``note``): one line per event with the
wall clock of this machine (all processes share it) and the pid, so the tests measure
rates, overlaps and cancellations without trusting Redis to report on itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from conveyor import Conveyor, current_job

app = Conveyor("redis://127.0.0.1:6379/0", namespace="flow-unbound")

#: The rate test's limit (jobs per second); the test reads it from here.
RATE = 50


def note(path: str, *parts: object) -> None:
    """Append one line ``<event> ... <time.time()> <pid>`` to ``path`` atomically."""
    line = " ".join(str(p) for p in (*parts, f"{time.time():.6f}", os.getpid())) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task(retries=0, rate=f"{RATE}/s")
async def rated(path: str, i: int) -> None:
    note(path, "RUN", i)


@app.task(retries=0, rate="20/s", rate_key=lambda tenant, *_: tenant)
async def per_tenant(tenant: str, path: str, i: int) -> None:
    note(path, "RUN", tenant, i)


@app.task(retries=0, concurrency=3)
async def limited(path: str, i: int, seconds: float) -> None:
    note(path, "START", i)
    await asyncio.sleep(seconds)
    note(path, "END", i)


@app.task(retries=0, concurrency=3)
def limited_sync(path: str, i: int, seconds: float) -> None:
    note(path, "START", i)
    time.sleep(seconds)
    note(path, "END", i)


@app.task(retries=3)
async def long_async(path: str, tag: str, seconds: float = 30.0) -> str:
    """Runs long; a cancel must run its ``finally`` and end it cancelled, not retried."""
    note(path, "START", tag)
    try:
        await asyncio.sleep(seconds)
    finally:
        note(path, "FINALLY", tag)
    note(path, "DONE", tag)
    return tag


@app.task(retries=3)
def cooperative(path: str, tag: str, seconds: float = 30.0) -> str:
    """A sync task that polls ``current_job().cancelled()`` between steps."""
    note(path, "START", tag)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if current_job().cancelled():
            note(path, "SAW_CANCEL", tag)
            return "stopped"
        time.sleep(0.02)
    note(path, "DONE", tag)
    return tag


@app.task(retries=3, executor="process")
def pool_long(path: str, tag: str, seconds: float = 30.0) -> str:
    note(path, "START", tag)
    time.sleep(seconds)
    note(path, "DONE", tag)
    return tag


@app.task(retries=1, executor="process", timeout=1.0)
def pool_hangs(path: str, tag: str) -> None:
    note(path, "START", tag)
    time.sleep(60)


@app.task(retries=0, executor="process")
def pool_crashes(path: str, tag: str) -> None:
    note(path, "START", tag)
    os.kill(os.getpid(), signal.SIGSEGV)


@app.task(retries=0, executor="process")
def pool_reports() -> None:
    """Progress needs Redis, which a pool child has none of: a clear error."""
    current_job().progress(0.5)


@app.task(retries=0, executor="process")
def pool_square(x: int) -> int:
    return x * x


@app.task(retries=0)
def reports(path: str, tag: str) -> str:
    """Reports progress, then waits until the test saw it (the file ``path + '.go'``)."""
    current_job().progress(0.4, "step 2 of 5")
    note(path, "REPORTED", tag)
    end = time.monotonic() + 20
    while time.monotonic() < end and not os.path.exists(path + ".go"):
        time.sleep(0.02)
    return tag


@app.task(retries=0)
async def reports_async(path: str, tag: str) -> str:
    await current_job().progress_async(0.75, "nearly")
    note(path, "REPORTED", tag)
    for _ in range(1000):  # until the test made the file ``path + '.go'`` (at most 20 s)
        if _go(path):
            break
        await asyncio.sleep(0.02)
    return tag


def _go(path: str) -> bool:
    return os.path.exists(path + ".go")


@app.task(retries=0, expires=1.0)
async def expiring(path: str, tag: str) -> None:
    note(path, "RUN", tag)


@app.task(retries=0)
async def plain(path: str, i: int) -> None:
    note(path, "RUN", i)


@app.task(retries=0, concurrency=1000)
async def wide() -> None:
    """A concurrency limit that a drain never reaches: the cost of the gate alone."""


@app.task(retries=0)
async def nothing() -> None:
    """No options at all: the hot-path cost test drains these."""
