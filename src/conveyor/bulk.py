"""Bulk enqueue: many jobs in batches, each batch added by one script per ready stream.

While Redis adds one batch, the next is encoded (broker/lines.py), so the producer and Redis
work side by side; a batch is sent only once the one before it has been answered, so what a
refused or uncertain batch leaves added is exactly the batches before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import producer
from .broker import Call
from .broker.lines import aline, line
from .errors import EnqueueRejected, EnqueueUncertain, NotReplicated
from .hooks import Enqueuing
from .job import Job
from .settings import Durability
from .task import Signature, TaskHost

if TYPE_CHECKING:
    from .app import Conveyor

T = TypeVar("T")

#: Jobs per batch: large enough to amortize the round trip, small enough not to hold Redis
#: for long (about a millisecond of script).
BATCH = 500

Added = list[tuple[bool, str]]
#: A task's option fields as a hashable key: jobs with the same share one bulk script.
Extra = tuple[tuple[str, str | int], ...]
#: Calls adding a batch, each with the positions in the batch of the jobs it adds.
Plan = list[tuple[list[int], Call[Added]]]


@dataclass
class _Batch:
    """A batch sent and not yet answered."""

    sigs: Sequence[Signature]
    plan: Plan
    seen: Enqueuing | None


def enqueue_many(app: Conveyor, sigs: list[Signature], d: Durability | None) -> list[Job[Any]]:
    jobs: list[Job[Any]] = []
    try:
        with line(app.broker, d) as wire:
            sent: _Batch | None = None
            for start in range(0, len(sigs), BATCH):
                batch = _prepared(app, sigs[start : start + BATCH])  # Redis runs ``sent``
                replies = _received(sent, wire.read, jobs, len(sigs)) if sent else None
                try:
                    _sent(batch.seen, wire.send, [call for _, call in batch.plan])
                finally:
                    if sent is not None:
                        _landed(sent, replies, jobs)  # Redis runs ``batch``
                sent = batch
            if sent is not None:
                _landed(sent, _received(sent, wire.read, jobs, len(sigs)), jobs)
    except EnqueueUncertain as exc:
        # The batches before the last one sent are known to be in; only its fate is unknown.
        raise EnqueueUncertain(app.url, exc.__cause__, batch=True, added=jobs) from exc
    return jobs


async def enqueue_many_async(
    app: Conveyor, sigs: list[Signature], d: Durability | None
) -> list[Job[Any]]:
    jobs: list[Job[Any]] = []
    try:
        async with aline(app.broker, d) as wire:
            sent: _Batch | None = None
            for start in range(0, len(sigs), BATCH):
                batch = _prepared(app, sigs[start : start + BATCH])
                replies = await _areceived(sent, wire.read(), jobs, len(sigs)) if sent else None
                try:
                    await _asent(batch.seen, wire.send([call for _, call in batch.plan]))
                finally:
                    if sent is not None:
                        _landed(sent, replies, jobs)
                sent = batch
            if sent is not None:
                _landed(sent, await _areceived(sent, wire.read(), jobs, len(sigs)), jobs)
    except EnqueueUncertain as exc:
        raise EnqueueUncertain(app.url, exc.__cause__, batch=True, added=jobs) from exc
    return jobs


def _prepared(app: Conveyor, sigs: Sequence[Signature]) -> _Batch:
    seen = app.hooks.enqueuing(None, None, len(sigs)) if app.hooks.active else None
    return _Batch(sigs, _plan(sigs, seen.fields if seen is not None else None), seen)


def _received(
    b: _Batch, read: Callable[[], list[Any]], earlier: list[Job[Any]], total: int
) -> list[Any]:
    try:
        return _sent(b.seen, read)
    except EnqueueRejected as exc:
        raise _partial(exc, earlier, b.sigs, b.plan, total) from exc
    except NotReplicated as exc:
        _unconfirmed(exc, b, earlier)
        raise


async def _areceived(
    b: _Batch, reading: Awaitable[list[Any]], earlier: list[Job[Any]], total: int
) -> list[Any]:
    try:
        return await _asent(b.seen, reading)
    except EnqueueRejected as exc:
        raise _partial(exc, earlier, b.sigs, b.plan, total) from exc
    except NotReplicated as exc:
        _unconfirmed(exc, b, earlier)
        raise


def _unconfirmed(exc: NotReplicated, b: _Batch, earlier: list[Job[Any]]) -> None:
    """Added on the master, not confirmed by replicas: the caller decides, knowing all."""
    exc.added = earlier + [j for j in _jobs(b.sigs, b.plan, exc.added) if j is not None]


def _landed(b: _Batch, replies: list[Any] | None, jobs: list[Job[Any]]) -> None:
    assert replies is not None
    added = _jobs(b.sigs, b.plan, replies)
    if b.seen is not None:
        b.seen.added(_named(b.sigs, added), None)
    jobs += [job for job in added if job is not None]


def _plan(batch: Sequence[Signature], traced: dict[str, str] | None = None) -> Plan:
    """One script per ready stream for the batch; a job with a unique key goes alone (its
    script checks the key). ``traced``: fields the hooks add to every entry (trace context)."""
    plan: Plan = []
    streams: dict[tuple[TaskHost, str, str, Extra], list[int]] = {}
    for i, s in enumerate(batch):
        task = s.task
        fields = {**traced, **(task._extra or {})} if traced else task._extra
        if task._unique is not None:
            plan.append(([i], _as_list(task._immediate(s.args, s.kwargs, fields))))
        else:
            o = task.options
            extra = tuple(sorted(fields.items())) if fields else ()
            streams.setdefault((task.app, o.queue, o.priority, extra), []).append(i)
    for (app, queue, level, extra), positions in streams.items():
        jobs: list[producer.BulkJob] = [
            (batch[i].task.name, batch[i].args, batch[i].kwargs, batch[i].task.hint_for)
            for i in positions
        ]
        call = producer.immediate_many(
            app.keys(queue), level, jobs, app.max_payload_bytes, app.signer, dict(extra)
        )
        plan.append((positions, call))
    return plan


def _as_list(call: Call[tuple[bool, str]]) -> Call[Added]:
    parse = call.parse
    return Call(call.command, lambda reply: [parse(reply)], call.script, call.accepts_errors)


def _jobs(
    batch: Sequence[Signature], plan: Plan, replies: Sequence[Added | None]
) -> list[Job[Any] | None]:
    """The batch's jobs in order; None for those of a call Redis refused."""
    jobs: list[Job[Any] | None] = [None] * len(batch)
    for (positions, _), added in zip(plan, replies, strict=True):
        if added is not None:
            for i, one in zip(positions, added, strict=True):
                jobs[i] = batch[i].task._job(one)
    return jobs


def _sent(seen: Enqueuing | None, send: Callable[..., T], *args: Any) -> T:
    """``send(*args)``; an error ends the hooks' view of the enqueue (a producer span)."""
    try:
        return send(*args)
    except BaseException as exc:
        if seen is not None:
            seen.added([], exc)
        raise


async def _asent(seen: Enqueuing | None, sending: Awaitable[T]) -> T:
    try:
        return await sending
    except BaseException as exc:
        if seen is not None:
            seen.added([], exc)
        raise


def _named(
    batch: Sequence[Signature], jobs: Sequence[Job[Any] | None]
) -> list[tuple[str, str, str]]:
    """(job id, task, queue) of each job added (created: not a unique key's earlier job)."""
    return [
        (job.id, s.task.name, s.task.options.queue)
        for s, job in zip(batch, jobs, strict=True)
        if job is not None and job.created
    ]


def _partial(
    exc: EnqueueRejected,
    earlier: list[Job[Any]],
    batch: Sequence[Signature],
    plan: Plan,
    total: int,
) -> EnqueueRejected:
    """Redis refused part of a bulk enqueue: say which jobs were added, so none is sent twice."""
    added = earlier + [job for job in _jobs(batch, plan, exc.added) if job is not None]
    return EnqueueRejected(
        f"{len(added)} of {total} jobs were added before Redis refused the rest: {exc}",
        added=added,
    )
