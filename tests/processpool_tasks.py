"""Functions the process-pool tests run in spawned subprocesses (imported there by name)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from conveyor import Conveyor, current_job

#: never connects: a child imports this module and must not talk to Redis
app = Conveyor("redis://127.0.0.1:1/0", namespace="processpool")


def add(a: int, b: int) -> int:
    return a + b


def boom(message: str) -> None:
    raise ValueError(message)


def nap(seconds: float) -> dict[str, Any]:
    """Sleeps (the pool's scheduling is under test, not the shared CPUs)."""
    started = time.time()
    time.sleep(seconds)
    return {"pid": os.getpid(), "started": started, "ended": time.time()}


def spin() -> None:
    """CPU-bound forever: only a kill stops it."""
    n = 0
    while True:
        n += 1


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def exit3() -> None:
    os._exit(3)


def who() -> dict[str, Any]:
    job = current_job()
    return {"id": job.id, "attempt": job.attempt, "pid": os.getpid()}


def not_json() -> object:
    return object()


def pid() -> int:
    return os.getpid()


def redis_opened() -> bool:
    """Whether importing the app here opened a Redis client (it must not)."""
    return app.broker._client is not None


@app.task
def double(n: int) -> int:
    """An @app.task: the child calls its .fn with arguments converted to annotated types."""
    assert type(n) is int
    return n * 2


class Maths:
    @staticmethod
    def square(n: int) -> int:
        return n * n


def echo(value: Any) -> Any:
    return value
