"""OpenTelemetry spans of enqueues and runs, collected with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import Conveyor, JobFailed, chain
from conveyor import tracing as conveyor_tracing
from conveyor.hooks import JobEvent
from conveyor.keys import job_id_for
from tests.conftest import fast, wait_until, worker_thread
from tests.telemetryapp import register_tasks

SIGNING_KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    yield exp, provider
    provider.shutdown()


def spans(exp: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exp.get_finished_spans() if s.kind == kind]


def check_pair(producer: ReadableSpan, consumer: ReadableSpan, job_id: str) -> None:
    assert producer.context is not None and consumer.context is not None
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    for span, operation in ((producer, "send"), (consumer, "process")):
        attrs = dict(span.attributes or {})
        assert attrs["messaging.system"] == "conveyor"
        assert attrs["messaging.destination.name"] == "default"
        assert attrs["messaging.message.id"] == job_id
        assert attrs["messaging.operation.name"] == operation
        assert attrs["messaging.operation.type"] == operation
        assert span.name == f"{operation} default"


def test_one_producer_and_one_consumer_span_per_job_linked(
    app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exp, provider = exporter
    register_tasks(app)
    conveyor_tracing.instrument(app, provider)
    with worker_thread(app, fast()):
        jobs = [app.tasks["ok"].enqueue(i) for i in range(20)]
        for job in jobs:
            assert job.result(10) is not None
        wait_until(lambda: len(spans(exp, SpanKind.CONSUMER)) == 20, 5, "20 consumer spans")
    producers = {
        dict(s.attributes or {})["messaging.message.id"]: s for s in spans(exp, SpanKind.PRODUCER)
    }
    consumers = {
        dict(s.attributes or {})["messaging.message.id"]: s for s in spans(exp, SpanKind.CONSUMER)
    }
    assert sorted(producers) == sorted(consumers) == sorted(j.id for j in jobs)
    assert len(exp.get_finished_spans()) == 40
    for job in jobs:
        check_pair(producers[job.id], consumers[job.id], job.id)
        assert consumers[job.id].status.status_code == StatusCode.UNSET


def test_the_consumer_span_is_current_while_an_async_task_runs(
    app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exp, provider = exporter
    register_tasks(app)
    conveyor_tracing.instrument(app, provider)
    with worker_thread(app, fast()):
        span_id = app.tasks["current_span"].enqueue().result(10)
        wait_until(lambda: len(spans(exp, SpanKind.CONSUMER)) == 1, 5, "the consumer span")
    (consumer,) = spans(exp, SpanKind.CONSUMER)
    assert consumer.context is not None and span_id == consumer.context.span_id


def test_retries_keep_the_trace_and_failures_mark_the_span(
    app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exp, provider = exporter
    register_tasks(app)
    conveyor_tracing.instrument(app, provider)
    with worker_thread(app, fast()):
        job = app.tasks["doomed"].enqueue(1)
        with pytest.raises(JobFailed):
            job.result(10)
        wait_until(lambda: len(spans(exp, SpanKind.CONSUMER)) == 2, 5, "2 consumer spans")
    (producer,) = spans(exp, SpanKind.PRODUCER)
    runs = spans(exp, SpanKind.CONSUMER)
    assert [dict(s.attributes or {})["conveyor.attempt"] for s in runs] == [1, 2]
    for run in runs:  # the retry came back from the delayed set with the trace context
        check_pair(producer, run, job.id)
        assert run.status.status_code == StatusCode.ERROR
        assert "ValueError: doomed 1" in (run.status.description or "")


def test_a_signed_app_signs_the_trace_context(
    redis_url: str, namespace: str, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exp, provider = exporter
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[SIGNING_KEY])
    register_tasks(app)
    conveyor_tracing.instrument(app, provider)
    job = app.tasks["ok"].enqueue(5)
    client = app.broker.client
    stream = app.keys("default").stream("normal")
    ((entry_id, fields),) = client.xrange(stream)
    assert fields[b"traceparent"].startswith(b"00-")
    # A copy whose trace context was changed is refused like any other tampered entry.
    forged = {**fields, b"traceparent": b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"}
    forged_id = client.xadd(stream, forged).decode()
    with worker_thread(app, fast()):
        assert job.result(10) == 5
        dead = app.keys("default").dead
        wait_until(lambda: client.xlen(dead) == 1, 5, "the forged copy in dead letters")
    ((_, dead_fields),) = client.xrange(dead)
    assert dead_fields[b"dead_reason"] == b"bad_signature"
    assert dead_fields[b"dead_from"] == f"normal:{forged_id}".encode()
    (consumer,) = spans(exp, SpanKind.CONSUMER)
    (producer,) = spans(exp, SpanKind.PRODUCER)
    check_pair(producer, consumer, job.id)
    assert job.id != job_id_for("default", "normal", entry_id.decode())  # a minted id


def test_a_bulk_enqueue_is_one_producer_span_its_jobs_link_to(
    app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exp, provider = exporter
    register_tasks(app)
    conveyor_tracing.instrument(app, provider)
    with worker_thread(app, fast()):
        jobs = app.tasks["ok"].enqueue_many([(i,) for i in range(10)])
        for job in jobs:
            job.result(10)
        wait_until(lambda: len(spans(exp, SpanKind.CONSUMER)) == 10, 5, "10 consumer spans")
    (producer,) = spans(exp, SpanKind.PRODUCER)
    assert dict(producer.attributes or {})["messaging.batch.message_count"] == 10
    for run in spans(exp, SpanKind.CONSUMER):
        assert [link.context.span_id for link in run.links] == [producer.context.span_id]


def test_without_instrument_no_trace_fields_are_written(app: Conveyor) -> None:
    register_tasks(app)
    app.tasks["ok"].enqueue(1)
    ((_, fields),) = app.broker.client.xrange(app.keys("default").stream("normal"))
    assert b"traceparent" not in fields
    assert not app.hooks.active


def test_the_consumer_span_is_current_while_a_sync_task_runs(
    app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    """A sync task runs in a thread: the span must travel there in the run's context."""
    exp, provider = exporter
    conveyor_tracing.instrument(app, provider)

    @app.task
    def span_in_thread() -> int:
        return int(trace.get_current_span().get_span_context().span_id)

    with worker_thread(app, fast()):
        span_id = span_in_thread.enqueue().result(10)
        wait_until(lambda: len(spans(exp, SpanKind.CONSUMER)) == 1, 5, "the consumer span")
    (consumer,) = spans(exp, SpanKind.CONSUMER)
    assert consumer.context is not None and span_id == consumer.context.span_id != 0


def test_a_workflows_next_step_is_a_child_of_the_step_that_added_it(
    app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    """The second step is added by the first's ack (same queue, complete.lua), the third by
    forward_step.lua (another queue): each consumer span's parent is the step before."""
    exp, provider = exporter
    conveyor_tracing.instrument(app, provider)

    @app.task
    def first(x: int) -> int:
        return x + 1

    @app.task
    async def second(x: int) -> int:
        return x * 2

    @app.task(queue="elsewhere")
    def third(x: int) -> int:
        return x - 1

    with worker_thread(app, fast()):
        handle = chain(first.s(1), second.s(), third.s()).enqueue()
        assert handle.result(timeout=10) == 3
        wait_until(lambda: len(spans(exp, SpanKind.CONSUMER)) == 3, 5, "3 consumer spans")
    by_task = {dict(s.attributes or {})["conveyor.task"]: s for s in spans(exp, SpanKind.CONSUMER)}
    runs = [by_task[first.name], by_task[second.name], by_task[third.name]]
    for before, after in pairwise(runs):
        assert before.context is not None and after.context is not None
        assert after.parent is not None and after.parent.span_id == before.context.span_id
        assert after.context.trace_id == before.context.trace_id
        assert [link.context.span_id for link in after.links] == [before.context.span_id]


def test_a_cron_fire_is_a_producer_span_its_job_links_to_and_an_enqueued_event(
    app: Conveyor, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exp, provider = exporter
    conveyor_tracing.instrument(app, provider)
    enqueued: list[JobEvent] = []
    app.on("enqueued")(enqueued.append)

    @app.cron("* * * * * *", grace=5)  # six fields: every second
    def tick() -> None:
        return None

    with worker_thread(app, fast()):
        wait_until(lambda: spans(exp, SpanKind.CONSUMER), 10, "a cron job's consumer span")
    producers = {s.context.span_id: s for s in spans(exp, SpanKind.PRODUCER) if s.context}
    run = spans(exp, SpanKind.CONSUMER)[0]
    job_id = dict(run.attributes or {})["messaging.message.id"]
    producer = producers[run.links[0].context.span_id]
    assert run.parent is not None and run.parent.span_id == producer.context.span_id
    assert dict(producer.attributes or {})["conveyor.task"] == tick.name
    assert dict(producer.attributes or {})["messaging.message.id"] == job_id
    assert (job_id, tick.name, "default") in [(e.job_id, e.task, e.queue) for e in enqueued]
