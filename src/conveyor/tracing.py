"""OpenTelemetry traces: a producer span per enqueue, a consumer span per run, linked.

Needs the ``otel`` extra (``pip install conveyor-queue[otel]``: opentelemetry-api only; the
application brings the SDK and exporter it wants). ``conveyor.tracing.instrument(app)``
turns it on, in the producing process and in the tasks module the workers import; without
it nothing is traced and nothing is spent.

The enqueue's span context travels in the entry as the W3C ``traceparent`` (and
``tracestate``) fields, written before the entry is signed, so a signed app signs them like
every other field and a worker trusts them as much as the job. Retries, bounces and waits
for a limit carry them on (outcomes.CARRIED_FIELDS). The run's span is a child of the
producer span and also links to it, following the messaging semantic conventions
(``messaging.system``, ``messaging.destination.name``, ``messaging.message.id``,
``messaging.operation.name``/``type``); it is the current span while a task runs (an async
one on the loop, a sync one in its thread), so spans the task makes are its children.

A workflow's next step added by a worker (complete.lua, forward_step.lua) carries the trace
context of the run that added it, so its consumer span is a child of that run's span. A cron
fire makes a producer span of its own (a new trace, nothing parents it), which the fired
jobs' consumer spans link to. A chord's callback carries what its launch carried (none: the
launch is not traced), since the script of the member that completes the chord adds it from
fields stored at launch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .errors import ConfigurationError
from .hooks import JobEvent, Middleware

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from .app import Conveyor

SYSTEM: Final = "conveyor"
#: The trace context fields an entry carries (W3C Trace Context).
FIELDS: Final = ("traceparent", "tracestate")
_FIELDS_BYTES: Final = tuple(f.encode() for f in FIELDS)


def _otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigurationError(
            "tracing needs opentelemetry-api: pip install 'conveyor-queue[otel]'"
        ) from None
    return trace


class Tracing(Middleware):
    """The producer and consumer spans of an app's jobs (see the module's doc)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        trace = _otel()
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace = trace
        self.tracer = trace.get_tracer("conveyor", tracer_provider=tracer_provider)
        self.propagator = TraceContextTextMapPropagator()

    def producing(self, task: str | None, queue: str | None, count: int) -> _Producing:
        trace = self.trace
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
        }
        if queue is not None:
            attributes["messaging.destination.name"] = queue
        if task is not None:
            attributes["conveyor.task"] = task
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        span = self.tracer.start_span(
            f"send {queue}" if queue else "send",
            kind=trace.SpanKind.PRODUCER,
            attributes=attributes,
        )
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        return _Producing(span, {k: v for k, v in carrier.items() if k in FIELDS}, count)

    def running(self, event: JobEvent, fields: Mapping[bytes, bytes]) -> _Running:
        trace = self.trace
        carrier = {
            name: fields[raw].decode(errors="replace")
            for name, raw in zip(FIELDS, _FIELDS_BYTES, strict=True)
            if raw in fields
        }
        parent = self.propagator.extract(carrier) if carrier else None
        links = []
        if parent is not None:
            producer = trace.get_current_span(parent).get_span_context()
            if producer.is_valid:
                links.append(trace.Link(producer))
        span = self.tracer.start_span(
            f"process {event.queue}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": event.queue,
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.message.id": event.job_id,
                "messaging.consumer.group.name": "conveyor",
                "messaging.client.id": event.worker or "",
                "conveyor.task": event.task,
                "conveyor.attempt": event.attempt,
            },
        )
        from opentelemetry import context

        current = trace.set_span_in_context(span)
        token = context.attach(current)
        out: dict[str, str] = {}
        self.propagator.inject(out, context=current)
        return _Running(span, token, trace, {k: v for k, v in out.items() if k in FIELDS})


class _Producing:
    def __init__(self, span: Span, fields: dict[str, str], count: int) -> None:
        self.span = span
        self.fields = fields
        self.count = count

    def done(self, job_ids: list[str], error: BaseException | None) -> None:
        if len(job_ids) == 1 and self.count == 1:
            self.span.set_attribute("messaging.message.id", job_ids[0])
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self.span.end()


class _Running:
    def __init__(self, span: Span, token: object, trace: Any, fields: dict[str, str]) -> None:
        self.span = span
        self.token = token
        self.trace = trace
        #: this run's trace context, carried by a workflow step it hands on (hooks.CARRIED)
        self.fields = fields

    def done(self, error: str | None) -> None:
        from opentelemetry import context

        if error is not None:
            self.span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, error[:500]))
        self.span.end()
        context.detach(self.token)  # type: ignore[arg-type]


def instrument(app: Conveyor, tracer_provider: TracerProvider | None = None) -> Tracing:
    """Trace the app's enqueues and runs with OpenTelemetry (the global tracer provider
    unless one is given). Once per app: a second call returns the first instance."""
    for mw in app.hooks.middleware:
        if isinstance(mw, Tracing):
            return mw
    tracing = Tracing(tracer_provider)
    app.use(tracing)
    return tracing
