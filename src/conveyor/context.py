"""Which job is running: readable from inside a task (async or sync) with current_job()."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class JobContext:
    id: str
    task: str
    queue: str
    #: 1 on the first run; grows with each retry after an exception
    attempt: int
    #: how often this entry was handed out (more than 1 after a worker died running it)
    deliveries: int
    worker: str


_current: ContextVar[JobContext | None] = ContextVar("conveyor_current_job", default=None)


def current_job() -> JobContext:
    """The job this task call runs for; raises LookupError when called outside a worker."""
    ctx = _current.get()
    if ctx is None:
        raise LookupError("current_job() is only available inside a task run by a worker")
    return ctx
