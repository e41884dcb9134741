"""Which job is running: readable from inside a task (async or sync) with current_job().

The context also carries the two ways a task talks back to its worker while it runs:
``cancelled()`` (set by the lease beat when ``job.cancel()`` marked the job in Redis: a sync
task polls it, an async one is cancelled outright) and ``progress()``, which stores the
latest fraction and message with the job (progress.lua) for ``job.progress()`` and
``conveyor status``.

Progress design: ``progress()`` is a blocking call through the app's sync broker, right for
a sync task in a thread (it does not touch the event loop); an async task awaits
``progress_async()`` on the worker's loop instead, so it never blocks other jobs. A job in
the process pool has no Redis connection, so there both raise ConfigurationError.

``emit(chunk)`` adds a partial result to the job's chunk stream (streams.py), read live by
``job.stream()`` and ``conveyor.sse(job)``: the same split, ``emit`` blocking for sync tasks
and ``await emit_async`` for async ones. A generator task's yields go the same way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .streams import ChunkWriter

#: stores one progress report: (fraction, message) -> None, and its awaitable twin
Report = Callable[[float, str], None]
#: Orders a cancel mark (lease thread) against a sync job's return (its thread): rare and
#: short, so one lock serves every job.
_MARK = threading.Lock()
AsyncReport = Callable[[float, str], Awaitable[None]]


#: Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
#: about 4x the cost of a plain one, and this is built once per job on the hot path.
@dataclass(slots=True)
class JobContext:
    id: str
    task: str
    queue: str
    #: 1 on the first run; grows with each retry after an exception
    attempt: int
    #: how often this entry was handed out (more than 1 after a worker died running it)
    deliveries: int
    worker: str
    #: [cancelled, returned, run]: plain values under one module lock, not two Events and a
    #: Lock per job (those cost more than a short job on the hot path); returned is set when
    #: the function returned or raised: a cancel mark read later is not this run's. run is 0
    #: until the job writes to its chunk stream, then its streams.Run (what it wrote).
    _flags: list[Any] = field(default_factory=lambda: [False, False, 0], compare=False, repr=False)
    _report: Report | None = field(default=None, compare=False, repr=False)
    _areport: AsyncReport | None = field(default=None, compare=False, repr=False)
    #: the worker's chunk writer (one per worker, shared: nothing allocated per job)
    _writer: ChunkWriter | None = field(default=None, compare=False, repr=False)

    def cancelled(self) -> bool:
        """True once ``job.cancel()`` reached this job (within one lease-renewal interval).

        A sync task checks it between steps and returns (or raises) early; whatever it
        does then, the job ends ``cancelled``, never retried.
        """
        return bool(self._flags[0])

    def _mark_cancelled(self) -> bool:
        """Set the flag unless the function already returned (the lease thread calls it):
        a sync job ends ``cancelled`` exactly when this returned True before it ended."""
        with _MARK:
            if self._flags[1]:
                return False
            self._flags[0] = True
            return True

    def _returned(self) -> None:
        with _MARK:
            self._flags[1] = True

    def progress(self, fraction: float, message: str = "") -> None:
        """Store how far the job is (0.0 to 1.0) and what it is doing: a blocking call,
        for sync tasks (an async task awaits ``progress_async``)."""
        if self._report is None:
            raise ConfigurationError(_NO_PROGRESS)
        self._report(fraction, message)

    async def progress_async(self, fraction: float, message: str = "") -> None:
        """``progress()`` for async tasks: awaited on the worker's loop."""
        if self._areport is None:
            raise ConfigurationError(_NO_PROGRESS)
        await self._areport(fraction, message)

    def emit(self, chunk: Any) -> None:
        """Add a partial result (any JSON value) to the job's chunk stream, for
        ``job.stream()`` and ``conveyor.sse(job)``: a blocking call, for sync tasks (an async
        task awaits ``emit_async``). Raises PayloadError for a chunk JSON cannot carry."""
        if self._writer is None:
            raise ConfigurationError(_NO_STREAM)
        if _on_event_loop():
            raise ConfigurationError(
                "emit() blocks, and this runs on the worker's event loop: in an async task, "
                "await current_job().emit_async(chunk) (or yield the chunk)"
            )
        self._writer.emit(self, chunk)

    async def emit_async(self, chunk: Any) -> None:
        """``emit()`` for async tasks: awaited on the worker's loop."""
        if self._writer is None:
            raise ConfigurationError(_NO_STREAM)
        await self._writer.aemit(self, chunk)

    def public(self) -> dict[str, object]:
        """The plain fields (what crosses to a process-pool child)."""
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "attempt": self.attempt,
            "deliveries": self.deliveries,
            "worker": self.worker,
        }


_NO_PROGRESS = (
    "progress() is only available to tasks run by a worker in a thread or on its loop, "
    "not in the process pool; report progress from a thread or async task instead"
)

_NO_STREAM = (
    "emit() is only available to tasks run by a worker in a thread or on its loop, not in "
    "the process pool (nor inside a micro-batch, which runs for several jobs at once)"
)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_current: ContextVar[JobContext | None] = ContextVar("conveyor_current_job", default=None)


def current_job() -> JobContext:
    """The job this task call runs for; raises LookupError when called outside a worker."""
    ctx = _current.get()
    if ctx is None:
        raise LookupError("current_job() is only available inside a task run by a worker")
    return ctx
