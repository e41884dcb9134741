"""Hooks and middleware: user code told what happens to each job (audit logs, Sentry, metrics).

``@app.on("failed")`` registers a function; ``app.use(obj)`` registers a middleware object
with a method per point it cares about (a subclass of ``Middleware``). Both get a JobEvent.
A hook that raises is logged and never fails the job or the enqueue. Hooks run in the
thread that saw the event (the worker's event loop for job events, the caller's for
``enqueued``), so they must be quick; an ``async def`` hook is scheduled on the worker's
loop instead of awaited.

Nothing here costs a job anything until a hook, a middleware or the events stream is on:
the producer and the worker check one attribute (``Hooks.active``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .events import EventStream

log = logging.getLogger("conveyor.hooks")

#: The points of a job's life hooks can watch, in the order they can happen.
EVENTS: Final = (
    "enqueued",
    "started",
    "succeeded",
    "failed",
    "retried",
    "dead",
    "cancelled",
    "expired",
)
F = TypeVar("F", bound=Callable[..., Any])

#: The entry fields (trace context) that a job the running one adds carries on: a workflow's
#: next step gets those of the step that added it. Set per run by the worker's Lifecycle
#: (only when a middleware brackets runs), in the slot's context; empty otherwise.
CARRIED: ContextVar[Mapping[str, str]] = ContextVar(
    "conveyor_carried", default=MappingProxyType({})
)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One thing that happened to a job.

    ``kind`` is one of EVENTS. ``failed`` is sent for every attempt that raised or timed out,
    then ``retried`` or ``dead`` says what became of the job. ``duration`` is the attempt's
    run time (succeeded, failed), ``queue_wait`` the time from ready to start (started).
    ``worker`` is the consumer name (None for ``enqueued``, and for ``cancelled`` when the
    client's cancel ended a queued or delayed job). No job arguments travel here.
    """

    kind: str
    job_id: str
    queue: str
    task: str
    attempt: int = 1
    worker: str | None = None
    at: float = 0.0
    duration: float | None = None
    queue_wait: float | None = None
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None


class Producing(Protocol):
    """What a middleware keeps around one enqueue (a producer span, say)."""

    @property
    def fields(self) -> Mapping[str, str]:
        """Entry fields to carry with the job (trace context), or none."""
        ...

    def done(self, job_ids: list[str], error: BaseException | None) -> None: ...


class Running(Protocol):
    """What a middleware keeps around one run of a job (a consumer span, say). It may also
    have a ``fields`` mapping: entry fields for the jobs this run hands on (a workflow's
    next step), so a next step's span has this run's span as its parent."""

    def done(self, error: str | None) -> None: ...


class Middleware:
    """Base class of middleware: override the points you need; each gets a JobEvent.

    ``producing`` and ``running`` bracket an enqueue and a run (tracing uses them):
    ``producing`` may return fields for the entry, ``running`` is entered in the context
    the task runs in (so a span made current there is the task's parent).
    """

    def enqueued(self, event: JobEvent) -> None: ...
    def started(self, event: JobEvent) -> None: ...
    def succeeded(self, event: JobEvent) -> None: ...
    def failed(self, event: JobEvent) -> None: ...
    def retried(self, event: JobEvent) -> None: ...
    def dead(self, event: JobEvent) -> None: ...
    def cancelled(self, event: JobEvent) -> None: ...
    def expired(self, event: JobEvent) -> None: ...

    def producing(self, task: str | None, queue: str | None, count: int) -> Producing | None:
        return None

    def running(self, event: JobEvent, fields: Mapping[bytes, bytes]) -> Running | None:
        return None


class Hooks:
    """The app's hooks, middleware and events setting (``app.hooks``)."""

    def __init__(self) -> None:
        self._fns: dict[str, list[Callable[[JobEvent], Any]]] = {}
        self.middleware: list[Middleware] = []
        #: the events stream's settings, or None when off (see events.py)
        self.events: EventStream | None = None
        #: False until anything is registered: the one check the hot paths make
        self.active = False
        #: per kind, what to call: the hooks, then the middleware that override the point
        self._targets: dict[str, list[Callable[[JobEvent], Any]]] = {}
        #: middleware that bracket enqueues and runs (override producing / running)
        self.producers: list[Middleware] = []
        self.runners: list[Middleware] = []

    def on(self, kind: str) -> Callable[[F], F]:
        if kind not in EVENTS:
            raise ConfigurationError(f"unknown event {kind!r}; one of: {', '.join(EVENTS)}")

        def register(fn: F) -> F:
            if not callable(fn):
                raise ConfigurationError(f"a hook for {kind!r} must be callable, not {fn!r}")
            self._fns.setdefault(kind, []).append(fn)
            self._changed()
            return fn

        return register

    def use(self, middleware: Middleware) -> None:
        if not isinstance(middleware, Middleware):
            raise ConfigurationError(
                f"middleware must subclass conveyor.hooks.Middleware, not {type(middleware)!r}"
            )
        if middleware not in self.middleware:
            self.middleware.append(middleware)
        self._changed()

    def enable_events(self, settings: EventStream) -> None:
        self.events = settings
        self._changed()

    def _changed(self) -> None:
        """Work out once what each point calls, so a job pays only for what listens."""
        self.active = True
        self._targets = {
            kind: [
                *self._fns.get(kind, ()),
                *(getattr(mw, kind) for mw in self.middleware if _overrides(mw, kind)),
            ]
            for kind in EVENTS
        }
        self.producers = [mw for mw in self.middleware if _overrides(mw, "producing")]
        self.runners = [mw for mw in self.middleware if _overrides(mw, "running")]

    def emit(self, event: JobEvent) -> None:
        """Tell every hook and middleware; one that raises is logged and skipped."""
        for fn in self._targets.get(event.kind, ()):
            _call(fn, event)

    def enqueuing(self, task: str | None, queue: str | None, count: int = 1) -> Enqueuing:
        return Enqueuing(self, task, queue, count)


def _overrides(mw: Middleware, name: str) -> bool:
    return getattr(type(mw), name, None) is not getattr(Middleware, name)


#: A sync hook slower than this is logged: in a worker it runs on the event loop, so every
#: job of that worker waits for it (hand slow work to a thread or a queue of your own).
SLOW_HOOK_SECONDS: Final = 0.1
#: Async hooks scheduled on a running loop: held here until done, since the loop keeps only
#: a weak reference to a task and one nobody holds may vanish before it runs.
_PENDING: set[asyncio.Task[Any]] = set()


def _call(fn: Callable[[JobEvent], Any], event: JobEvent) -> None:
    started = time.perf_counter()
    try:
        result = fn(event)
        if inspect.isawaitable(result):
            _schedule(result, fn, event)
    except Exception:
        log.exception("hook %s raised on %s of job %s", _name(fn), event.kind, event.job_id)
    took = time.perf_counter() - started
    if took > SLOW_HOOK_SECONDS:
        log.warning(
            "hook %s took %.2f s on %s of job %s; in a worker every job waits while a hook "
            "runs: keep hooks quick",
            _name(fn),
            took,
            event.kind,
            event.job_id,
        )


def _schedule(result: Any, fn: Callable[..., Any], event: JobEvent) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # No running loop (an async hook told of a sync enqueue): run it to its end here.
        # asyncio.ensure_future would instead make a loop that never runs, and drop it.
        try:
            asyncio.run(_awaited(result))
        except Exception:
            log.exception("hook %s raised on %s of job %s", _name(fn), event.kind, event.job_id)
        return
    task = loop.create_task(_awaited(result))
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)

    def logged(t: asyncio.Future[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error(
                "hook %s raised on %s of job %s",
                _name(fn),
                event.kind,
                event.job_id,
                exc_info=t.exception(),
            )

    task.add_done_callback(logged)


async def _awaited(result: Any) -> Any:
    return await result


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))


class Enqueuing:
    """One enqueue (or one bulk batch) as the hooks see it: the fields middleware add to its
    entries, then an ``enqueued`` event per job added."""

    def __init__(self, hooks: Hooks, task: str | None, queue: str | None, count: int) -> None:
        self.hooks = hooks
        self._open: list[Producing] = []
        fields: dict[str, str] = {}
        for mw in hooks.producers:
            try:
                p = mw.producing(task, queue, count)
            except Exception:
                log.exception("middleware %r failed to start an enqueue", mw)
                continue
            if p is not None:
                self._open.append(p)
                fields.update(p.fields)
        self.fields = fields

    def extra(self, base: Mapping[str, str | int] | None) -> dict[str, str | int] | None:
        """The option fields of the entries, with the middleware's fields added."""
        if not self.fields:
            return dict(base) if base else None
        return {**self.fields, **(base or {})}

    def added(self, jobs: Iterable[tuple[str, str, str]], error: BaseException | None) -> None:
        """``jobs``: (job id, task, queue) of each job actually added."""
        added = list(jobs)
        for p in self._open:
            try:
                p.done([j for j, _, _ in added], error)
            except Exception:
                log.exception("middleware failed to end an enqueue")
        now = time.time()
        for job_id, task, queue in added:
            self.hooks.emit(JobEvent("enqueued", job_id, queue, task, at=now))
