"""Runs one delivery to its end: checks, the task itself, and the transition that ends it.

Every path ends the delivery with exactly one script: the batched ack (completer.py), a
retry, dead letters, a bounce back for another worker, or a rejection that touches no
record. A job keeps its id through every move, so its record is the one that ends.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import progress
from ..broker import command
from ..broker.operations import Completion, Delivery
from ..broker.workflow_calls import Handoff
from ..cancellation import cancel_flags, end_cancelled
from ..context import JobContext
from ..errors import ConfigurationError, PayloadError
from ..expiry import EXPIRES_FIELD
from ..keys import QueueKeys, job_id_for, parse_job_id
from ..limits import Held
from ..streams import ChunkWriter
from ..task import Task
from ..wire import decode_fields, decode_json, decode_record, encode_json
from ..workflows import flow as workflow
from ..workflows import handoff
from . import outcomes
from .admission import Admission
from .batching import Batcher
from .executor import CANCELLED, Outcome
from .flow import Running
from .transitions import CANCELLED_ERROR, DEFAULTS, unique_of

if TYPE_CHECKING:
    from .runtime import Worker

log = logging.getLogger("conveyor.worker")

#: A job id longer than this in an entry's ``id`` field is not trusted to name a record.
MAX_JOB_ID = 200
#: Record states after which a job never runs again.
ENDED = frozenset({"done", "dead", "cancelled"})
EXPIRES_FIELD_BYTES = EXPIRES_FIELD.encode()
#: Dead reasons of signed copies refused before they ran (the job ran, or runs, elsewhere).
ENDED_COPY = "replayed_ended_job"
QUEUED_COPY = "duplicate_of_queued_job"


def entry_job_id(d: Delivery) -> str:
    """The job's id: the entry's ``id`` field when it is a valid id of this queue, else the
    id the entry itself gives the job. Used where the envelope could not be decoded."""
    raw = d.fields.get(b"id")
    if raw is not None and 0 < len(raw) <= MAX_JOB_ID:
        try:
            job_id = raw.decode()
            if parse_job_id(job_id).queue == d.queue:
                return job_id
        except (UnicodeDecodeError, ConfigurationError):
            pass
    return job_id_for(d.queue, d.level, d.entry_id)


class DeliveryRunner:
    """What a slot does with one delivery (the Worker holds the shared state)."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        #: (queue, level, entry_id) of fetched signed copies that must not run, with why:
        #: ENDED_COPY (the job's record had ended) or QUEUED_COPY (the job is queued or
        #: running from another entry)
        self._refused: dict[tuple[str, str, str], str] = {}
        app = worker.app
        #: writes the chunks of generator tasks and emit() (streams.py), shared by all jobs
        self.chunks = ChunkWriter(
            worker.broker, app.keys, _ttl_of(app.tasks), worker.settings.max_payload_bytes
        )
        #: gathers the jobs of tasks with batch_size into micro-batches (batching.py)
        self.batcher = Batcher(worker.executor, worker.settings.concurrency)
        #: a job's expiry and its task's rate and concurrency limits (admission.py)
        self.admission = Admission(worker)

    async def check_ended(self, got: list[Delivery]) -> None:
        """Before a fetched batch runs, find the signed copies of jobs that already ended.

        A signed entry that carries an id may be a replay of a job that ended (its
        signature still holds), or a copy of one still queued or running from another entry
        (a signed job's record names the entry it sits in: every script that adds one, from
        enqueue to promote, requeue and replay, writes it in the same step). This reads
        every such job's record in one MGET per queue and fetched batch, so signing adds no
        round trip per job. Unsigned apps skip it. Raises ConnectionFailed when Redis is
        unreachable, so the fetch loop keeps its batch and still hears a stop.
        """
        if self.w.app.signer is None:
            return
        by_queue: dict[str, list[tuple[Delivery, str]]] = {}
        for d in got:
            raw = d.fields.get(b"id")
            if raw is None:
                continue
            job_id = entry_job_id(d)
            if job_id.encode() == raw:  # a valid id of this queue, as handle() will see it
                by_queue.setdefault(d.queue, []).append((d, job_id))
        for queue, items in by_queue.items():
            keys = self.w.keys[queue]
            # Not retried here: the caller holds the batch through an outage and can stop.
            raws: list[bytes | None] = await self.w.broker.acall(
                command("MGET", *[keys.record(job_id) for _, job_id in items])
            )
            for (d, _), record in zip(items, raws, strict=True):
                why = _refusal(record, d.entry_id)
                if why is not None:
                    self._refused[(d.queue, d.level, d.entry_id)] = why

    async def drop_cancelled(self, got: list[Delivery]) -> list[Delivery]:
        """Of reclaimed deliveries, end those whose job was marked cancelled (its worker
        died before it read the mark) instead of running them again; the rest run. One
        SMISMEMBER per queue and reclaimed batch: the reclaim path only."""
        w = self.w
        by_queue: dict[str, list[tuple[Delivery, str]]] = {}
        for d in got:
            by_queue.setdefault(d.queue, []).append((d, entry_job_id(d)))
        dropped: set[tuple[str, str, str]] = set()
        for queue, items in by_queue.items():
            marked = await w.transitions.call(
                cancel_flags(w.keys[queue], [job_id for _, job_id in items])
            )
            for d, job_id in items:
                if job_id in marked:
                    name = d.fields.get(b"task", b"").decode(errors="replace")
                    task = w.app.tasks.get(name)
                    opts = task.options if task is not None else DEFAULTS
                    await self._end_cancelled(d, job_id, int(opts.result_ttl * 1000), None)
                    dropped.add((d.queue, d.level, d.entry_id))
        return [d for d in got if (d.queue, d.level, d.entry_id) not in dropped]

    async def process(self, d: Delivery, slot: asyncio.Task[Any] | None = None) -> None:
        """Run ``d`` in ``slot`` (the slot's task: an async job is stopped by cancelling it)."""
        acking = False
        try:
            acking = await self.handle(d, slot)
        finally:
            # Rejected before handle() looked (a bad signature, a malformed entry): forget it.
            self._refused.pop((d.queue, d.level, d.entry_id), None)
            if not acking:
                self.w.held.discard(d.queue, d.level, d.entry_id)

    async def handle(self, d: Delivery, slot: asyncio.Task[Any] | None = None) -> bool:
        """Run one delivery to its end; True when its ack was handed to the completer.

        A successful job frees its slot as soon as its function returns: the batched ack
        runs behind it, overlapping the next fetch, and the lease is kept until it lands.
        """
        w = self.w
        transitions = w.transitions
        signer = w.app.signer
        if signer is not None and not signer.verify(d.fields, d.queue, d.level):
            reason = "entry is not signed with any of this app's keys for this queue and level"
            await transitions.reject(d, entry_job_id(d), "bad_signature", reason)
            return False
        try:
            env = decode_fields(d.fields, max_bytes=w.settings.max_payload_bytes)
        except PayloadError as exc:
            await transitions.dead(d, entry_job_id(d), None, "malformed", f"malformed job: {exc}")
            return False
        job_id = env.id or job_id_for(d.queue, d.level, d.entry_id)
        why = self._refused.pop((d.queue, d.level, d.entry_id), None)
        if signer is not None and env.id is not None and why == ENDED_COPY:
            await transitions.reject(
                d,
                job_id,
                ENDED_COPY,
                f"a signed copy of job {job_id}, which already ended, was read again; "
                "it was not run (enqueue the task again to run it once more)",
            )
            return False
        if signer is not None and env.id is not None and why == QUEUED_COPY:
            await transitions.reject(
                d,
                job_id,
                QUEUED_COPY,
                f"a signed copy of job {job_id} was read while the job is still queued or "
                f"running from another entry; it was not run (the job runs once, from there)",
            )
            return False
        task = w.app.tasks.get(env.task)
        limit = task.options.max_deliveries if task else DEFAULTS.max_deliveries
        if d.deliveries > limit:
            await transitions.dead(
                d,
                job_id,
                env,
                "max_deliveries",
                f"delivered {d.deliveries} times without finishing (max_deliveries={limit}); "
                "its worker probably crashed or was killed while running it",
            )
            return False
        if task is None:
            registered = await w.live_tasks.registers(env.task, d.queue)
            known = ", ".join(sorted(w.app.tasks)) or "none"
            await transitions.bounce(d, env, job_id, registered=registered, known=known)
            return False
        flow: workflow.Flow | None = None
        given = env.args
        raw_flow = d.fields.get(workflow.FIELD_BYTES)
        if raw_flow is not None:
            try:
                flow = workflow.decode(raw_flow)
                if flow.gather:
                    given = [await self._gathered(d, flow), *env.args]
            except PayloadError as exc:
                await transitions.dead(d, job_id, env, "bad_arguments", str(exc))
                return False
        opts = task.options
        try:
            if opts.batch_size is None:
                args, kwargs = task.bind(given, env.kwargs)
            else:
                args, kwargs = self.batcher.bind(task, given, env.kwargs)
        except PayloadError as exc:
            await transitions.dead(d, job_id, env, "bad_arguments", str(exc))
            return False
        raw_expires = d.fields.get(EXPIRES_FIELD_BYTES)
        expiring = raw_expires is not None or opts.expires is not None
        if expiring and await self.admission.expired(d, env, job_id, raw_expires, opts):
            return False
        lease: Held | None = None
        if opts.rate is not None or opts.concurrency is not None:
            admitted, lease = await self.admission.admit(d, env, task, job_id, args, kwargs)
            if not admitted:
                return False
        log.debug("running %s %s args=%r kwargs=%r", task.name, job_id, args, kwargs)
        ttl = int(opts.result_ttl * 1000)
        keys = w.keys[d.queue]
        job = JobContext(
            job_id,
            task.name,
            d.queue,
            env.attempt,
            d.deliveries,
            w.consumer,
            _report=functools.partial(self._progress, keys, job_id, ttl),
            _areport=functools.partial(self._aprogress, keys, job_id, ttl),
            _writer=self.chunks,
        )
        process = opts.executor == "process"
        w.flow.started(
            Running(job, d.queue, None if process or not task.is_async else slot, process, lease)
        )
        life = w.lifecycle
        if life is not None:
            life.started(job, d)
        started = time.perf_counter()
        outcome: Outcome | None = None
        try:
            if opts.batch_size is None:
                outcome = await w.executor.run(task, args, kwargs, job)
            else:
                outcome = await self.batcher.run(task, args[0], job)
        finally:
            w.flow.ended(job_id)
            if life is not None:
                life.ran(job_id, outcome)
        ended = time.perf_counter()
        w.job_took(ended - started)
        # Ended by a cancel: an async job whose slot was cancelled or a pool job killed
        # (the outcome says so), or a sync thread job whose flag was set before it returned
        # (context.py): whatever it returned then, it ends cancelled, never retried.
        thread_job = not process and not task.is_async
        if outcome.reason == CANCELLED or (thread_job and job.cancelled()):
            await self._end_cancelled(d, job_id, ttl, lease)
            return False
        handoffs: tuple[Handoff, ...] = ()
        if outcome.ok:
            fate = "stored as JSON"
            try:
                record = outcomes.done_record(env, outcome.value, w.consumer, task.result_type)
                if flow is not None:
                    fate = "handed to the next step of its workflow"
                    handoffs = await self._hand_off(d, flow, outcome.value)
            except PayloadError as exc:
                # Running it again returns the same kind of value: fail now, without retries.
                error = f"the task's result cannot be {fate}: {exc}"
                outcome = Outcome(False, error=error, final=True, reason="bad_result")
            else:
                w.completer.submit(
                    d.queue,
                    Completion(
                        d.level,
                        d.entry_id,
                        job_id,
                        record,
                        ttl,
                        unique_of(d),
                        self.admission.lease_keys(d, lease),
                        handoffs,
                    ),
                    lambda stored: self._acked(d, job_id, stored),
                    ended,
                )
                return True
        await transitions.failed(d, env, task, job_id, outcome)
        if lease is not None:
            await transitions.call(self.admission.release_call(d, lease))
        return False

    async def _hand_off(self, d: Delivery, flow: workflow.Flow, value: Any) -> tuple[Handoff, ...]:
        """What a workflow job's ack adds (same queue), after forwarding to other queues what
        their scripts add there (workflows/handoff.py). PayloadError when the next step
        cannot carry the result."""
        w = self.w
        plan = handoff.on_success(
            w.app.keys,
            d.queue,
            flow,
            decode_json(encode_json(value)),
            w.app.signer,
            w.app.max_payload_bytes,  # the producer's limit: the next step is an enqueue
        )
        for call in plan.forwards:
            await w.transitions.call(call)
        return tuple(plan.handoffs)

    async def _gathered(self, d: Delivery, flow: workflow.Flow) -> list[Any]:
        """A chord callback's first argument: its members' results, in member order."""
        raws = await self.w.transitions.call(handoff.gather(self.w.keys[d.queue], flow))
        found = [r for r in raws if r is not None]
        if len(found) < len(raws):
            raise PayloadError(
                f"the results of chord {flow.id} are gone ({len(raws) - len(found)} of "
                f"{len(raws)} missing): its hash expired or was deleted"
            )
        return [decode_json(r) for r in found]

    def _acked(self, d: Delivery, job_id: str, stored: bool) -> None:
        self.w.held.discard(d.queue, d.level, d.entry_id)  # a lease was unheld at submit
        self.w.transitions.count("done" if stored else "lost", job_id, d)

    async def _end_cancelled(self, d: Delivery, job_id: str, ttl: int, lease: Held | None) -> None:
        """A job stopped by job.cancel(): acked and recorded ``cancelled``, never retried; a
        chord member tells its chord (Transitions.tell_chord), which would wait for it."""
        w = self.w
        member = await w.transitions.tell_chord(
            d, job_id, "cancelled", CANCELLED_ERROR, w.transitions.owns(d)
        )
        ended = await w.transitions.call(
            end_cancelled(
                w.keys[d.queue],
                w.consumer,
                d.level,
                d.entry_id,
                job_id,
                ttl_ms=ttl,
                unique_name=unique_of(d),
                publish=w.broker.publish_command,
                member=member,
            )
        )
        if lease is not None:
            await w.transitions.call(self.admission.release_call(d, lease))
        w.transitions.count(ended, job_id, d)

    def _progress(
        self, keys: QueueKeys, job_id: str, ttl: int, fraction: float, message: str
    ) -> None:
        self.w.app.broker.call(progress.report(keys, job_id, fraction, message, ttl_ms=ttl))

    async def _aprogress(
        self, keys: QueueKeys, job_id: str, ttl: int, fraction: float, message: str
    ) -> None:
        await self.w.broker.acall(progress.report(keys, job_id, fraction, message, ttl_ms=ttl))


def _ttl_of(tasks: dict[str, Task[Any, Any]]) -> Callable[[str], int]:
    """A task's result_ttl in ms, by name: how long its chunk stream is kept."""

    def ttl_ms(name: str) -> int:
        task = tasks.get(name)
        return int((task.options if task is not None else DEFAULTS).result_ttl * 1000)

    return ttl_ms


def _refusal(raw: bytes | None, entry_id: str) -> str | None:
    """Why a signed copy read from ``entry_id`` must not run, from its job's record: None
    when it may (no record, or one that names no other entry, is no proof of a copy)."""
    if not raw:
        return None
    try:
        record = decode_record(raw)
    except Exception:  # an unreadable record is no proof the job ended
        return None
    if record.state in ENDED:
        return ENDED_COPY
    if record.state == "queued" and record.entry and record.entry != entry_id:
        return QUEUED_COPY
    return None
