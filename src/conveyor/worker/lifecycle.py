"""What a worker tells the app's hooks, middleware and events stream about each job.

The worker holds one Lifecycle when anything listens (``app.hooks.active``) and None
otherwise, so with everything off a job costs a None check at each point and no Redis
command. The points: a job starts, its function returns (``ran``: a consumer span ends), an
attempt fails, and the counts the worker already keeps (transitions.py ``count``), which
say how each delivery ended: done, retried, dead, cancelled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..broker.operations import Delivery
from ..events import EventWriter
from ..hooks import CARRIED, Hooks, JobEvent, Running
from . import outcomes

if TYPE_CHECKING:
    from ..app import Conveyor
    from ..broker import Broker
    from ..context import JobContext
    from .executor import Outcome

log = logging.getLogger("conveyor.worker")

#: Set (to "1") by `conveyor worker --metrics-port` for the worker processes it starts.
METRICS_ENV: Final = "CONVEYOR_WORKER_METRICS"
#: The worker's counts (transitions.py) that end a job as the hooks name it; the others
#: (lost, bounced, limited, skipped: a queued job the client's cancel had ended, told there)
#: are not a job event.
KINDS: Final = {
    "done": "succeeded",
    "retried": "retried",
    "dead": "dead",
    "cancelled": "cancelled",
    "expired": "expired",
}


@dataclass(slots=True)
class _Run:
    t0: float
    attempt: int
    spans: list[Running] | None = None
    duration: float | None = None


class Lifecycle:
    def __init__(self, app: Conveyor, consumer: str, broker: Broker) -> None:
        self.hooks: Hooks = app.hooks
        self.consumer = consumer
        #: runs started here and not yet ended, by job id
        self.runs: dict[str, _Run] = {}
        settings = app.hooks.events
        self.events = EventWriter(broker, app.namespace, settings) if settings else None

    @classmethod
    def of(cls, app: Conveyor, consumer: str, broker: Broker) -> Lifecycle | None:
        """The worker's Lifecycle, or None when nothing listens (the hot path's one check)."""
        if os.environ.get(METRICS_ENV) == "1":
            from ..metrics import instrument

            instrument(app)
        if not app.hooks.active:
            return None
        return cls(app, consumer, broker)

    def start(self) -> None:
        if self.events is not None:
            self.events.start()

    async def close(self) -> None:
        if self.events is not None:
            await self.events.close()

    def emit(self, event: JobEvent) -> None:
        self.hooks.emit(event)
        if self.events is not None:
            self.events.add(event)

    # -- points of a run --------------------------------------------------------------------
    def started(self, job: JobContext, d: Delivery) -> None:
        """The job's function is about to run (called in the context it runs in)."""
        now = time.time()
        try:
            ready_ms = int(outcomes.ready_at(d))
            wait = max(0.0, now - ready_ms / 1000)
        except ValueError:
            wait = None
        event = JobEvent(
            "started",
            job.id,
            d.queue,
            job.task,
            job.attempt,
            self.consumer,
            now,
            queue_wait=wait,
        )
        run = _Run(time.perf_counter(), job.attempt)
        runners = self.hooks.runners
        if runners:
            carried: dict[str, str] = {}
            for mw in runners:
                try:
                    span = mw.running(event, d.fields)
                except Exception:
                    log.exception("middleware %r failed to start a run", mw)
                    continue
                if span is not None:
                    run.spans = [*(run.spans or ()), span]
                    carried.update(getattr(span, "fields", None) or {})
            # Read when this run hands on a workflow's next step (after its span ended):
            # set for every run, so a slot's next job never carries this one's.
            CARRIED.set(carried)
        self.runs[job.id] = run
        self.emit(event)

    def ran(self, job_id: str, outcome: Outcome | None) -> None:
        """The function returned (``outcome``) or was interrupted (None: a shutdown)."""
        run = self.runs.get(job_id)
        if run is None:
            return
        run.duration = time.perf_counter() - run.t0
        error = None if outcome is not None and outcome.ok else _error(outcome)
        for span in reversed(run.spans or ()):
            try:
                span.done(error)
            except Exception:
                log.exception("middleware failed to end a run")
        if outcome is None:
            del self.runs[job_id]

    def failed(self, d: Delivery, job_id: str, task: str, attempt: int, outcome: Outcome) -> None:
        """An attempt raised or timed out; ``count`` says next what became of the job."""
        run = self.runs.get(job_id)
        self.emit(
            JobEvent(
                "failed",
                job_id,
                d.queue,
                task,
                attempt,
                self.consumer,
                time.time(),
                duration=run.duration if run is not None else None,
                error=outcome.error,
                traceback=outcome.traceback,
                reason=outcome.reason,
            )
        )

    def ended(
        self,
        what: str,
        job_id: str,
        d: Delivery,
        reason: str | None = None,
        error: str | None = None,
    ) -> None:
        """A delivery ended as the worker counted it (``what``: done, retried, dead...)."""
        run = self.runs.pop(job_id, None)
        kind = KINDS.get(what)
        if kind is None:
            return
        self.emit(
            JobEvent(
                kind,
                job_id,
                d.queue,
                _field(d.fields, b"task"),
                run.attempt if run is not None else _attempt(d.fields),
                self.consumer,
                time.time(),
                duration=run.duration if run is not None and kind == "succeeded" else None,
                error=error,
                reason=reason,
            )
        )


def _error(outcome: Outcome | None) -> str:
    if outcome is None:
        return "interrupted: the worker stopped while it ran (handed back)"
    return outcome.error or outcome.reason or "failed"


def _field(fields: Mapping[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode(errors="replace")


def _attempt(fields: Mapping[bytes, bytes]) -> int:
    try:
        return int(fields.get(b"attempt", b"1"))
    except ValueError:
        return 1
