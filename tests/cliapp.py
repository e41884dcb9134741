"""A small app for the CLI, supervisor and compatibility tests: ``tests.cliapp:app``.

Its Redis URL comes from CONVEYOR_REDIS_URL and its namespace from TEST_NAMESPACE, so each test
points the `conveyor` command (a real subprocess) at its own keys. Tests that enqueue or run
workers in-process call :func:`register_tasks` on their own app, to get the same tasks.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from conveyor import Backoff, Conveyor

#: Not a Conveyor app: `conveyor worker tests.cliapp:settings` must refuse it.
settings = {"answer": 42}


def register_tasks(app: Conveyor) -> dict[str, Any]:
    """Register add, fail, flaky and slow on ``app``; returns them by name."""

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(retries=0)
    def fail() -> None:
        raise RuntimeError("fail always fails")

    @app.task(retries=1, backoff=Backoff(base=0.05, cap=0.1, jitter=False))
    def flaky() -> None:
        """Fails on every attempt: one retry after 0.05 s, then the dead-letter stream."""
        raise ValueError("flaky failed again")

    @app.task
    async def slow(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    return {"add": add, "fail": fail, "flaky": flaky, "slow": slow}


app = Conveyor(namespace=os.environ.get("TEST_NAMESPACE", "cliapp"))
register_tasks(app)

#: An app whose URL is written in its code (read here from CLIAPP_URL, so a test can point it
#: at its Redis): the CLI must keep it over CONVEYOR_REDIS_URL, and `--url` must beat it.
explicit = Conveyor(
    os.environ.get("CLIAPP_URL", "redis://127.0.0.1:1/0"),
    namespace=os.environ.get("TEST_NAMESPACE", "cliapp"),
)
register_tasks(explicit)

#: Cron schedules for `conveyor cron ls` (apart from ``app``, whose workers must not fire).
cronapp = Conveyor(namespace=os.environ.get("TEST_NAMESPACE", "cliapp"))


@cronapp.cron("0 9 * * 1-5", tz="Europe/Paris", misfire="once")
def morning_report() -> None:
    return None


@cronapp.cron("*/15 * * * *", misfire="all", misfire_cap=10)
def sync_accounts() -> None:
    return None
