"""Job handles: the state, the result and the wait for it, from any process, given an id."""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import msgspec

from . import cancellation, progress, streams
from .broker import Broker, Call, operations
from .cancellation import CancelResult
from .errors import JobCancelled, JobExpired, JobFailed, JobNotFound, JobTimeout
from .hooks import Hooks
from .keys import JobLocation, QueueKeys, parse_job_id
from .progress import Progress
from .wire import JobRecord, decode_record

R = TypeVar("R")


class JobHost(Protocol):
    """What a job handle needs of its app: the broker and the key layout. The Conveyor app
    is one; job.py never imports app.py, so the dependency runs one way."""

    @property
    def broker(self) -> Broker: ...
    @property
    def hooks(self) -> Hooks: ...
    @property
    def namespace(self) -> str: ...

    def keys(self, queue: str) -> QueueKeys: ...


#: How long the record of a job cancelled by id is kept (the default ``result_ttl``: a
#: handle made from an id alone does not know its task's option).
CANCEL_RECORD_TTL_MS = 24 * 3600 * 1000
#: Published messages can be missed across a reconnect; re-read the state this often anyway.
RECHECK_SECONDS = 2.0


class JobState(str, enum.Enum):
    SCHEDULED = "scheduled"  # waiting in the delayed set for its first run
    QUEUED = "queued"  # in a ready stream, not yet delivered
    RUNNING = "running"  # delivered to a worker (in its pending list)
    RETRYING = "retrying"  # failed, waiting out its backoff in the delayed set
    DONE = "done"
    DEAD = "dead"  # failed for good, in the dead-letter stream
    CANCELLED = "cancelled"  # stopped by job.cancel() / `conveyor cancel`; never retried
    #: finished, but its record's TTL has passed; or, with a record whose ``reason`` says
    #: so, not run because it waited past its ``expires`` option (JobInfo.expired_by_option)
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # nothing in Redis knows this id

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED)


@dataclass(frozen=True)
class JobInfo:
    id: str
    state: JobState
    record: JobRecord | None
    due_ms: int | None = None
    consumer: str | None = None
    deliveries: int | None = None

    @property
    def expired_by_option(self) -> bool:
        """True when the job was not run because it waited past its ``expires`` option (its
        record says why), rather than finished long ago with its record gone."""
        return self.state is JobState.EXPIRED and self.record is not None

    @property
    def reason(self) -> str | None:
        """Why it was cancelled or expired, when the record says."""
        return self.record.reason if self.record else None


def interpret(job_id: str, w: operations.Whereabouts) -> JobInfo:
    record = decode_record(w.record) if w.record else None
    if w.place == "record" and record is not None:
        return JobInfo(job_id, JobState(record.state), record)
    if w.place == "delayed":
        state = JobState.RETRYING if record and record.state == "retrying" else JobState.SCHEDULED
        due = int(float(w.detail[0])) if w.detail and w.detail[0] else None
        return JobInfo(job_id, state, record, due_ms=due)
    if w.place == "running":
        return JobInfo(
            job_id, JobState.RUNNING, record, consumer=w.detail[0], deliveries=int(w.detail[1])
        )
    if w.place == "queued":
        return JobInfo(job_id, JobState.QUEUED, record)
    if w.place == "finished":
        return JobInfo(job_id, JobState.EXPIRED, record)
    return JobInfo(job_id, JobState.UNKNOWN, record)


class StepOf(Protocol):
    """The workflow a job is a step of (a workflows handle sets itself on its jobs). A later
    step has no record until the step before it ends, so its stream's reader asks the
    workflow whether the step is still to come instead of taking "unknown" for the end.
    When the workflow stopped before the step, the answer is False, or what its
    ``result()`` raises (JobFailed, JobCancelled, JobExpired, JobNotFound)."""

    def _step_may_come(self, job: Job[Any]) -> bool: ...

    async def _step_may_come_async(self, job: Job[Any]) -> bool: ...

    async def _end_async(self) -> dict[str, Any]:
        """Where the workflow stands, for the end event of a step that never came."""
        ...


class Job(Generic[R]):
    """A handle on one job. Cheap to make: it holds an id, and reads Redis when asked."""

    #: set by a workflow's handle on its steps (a class default: a plain job stores none)
    _workflow: StepOf | None = None

    def __init__(
        self,
        app: JobHost,
        job_id: str,
        convert: Callable[[Any], R] | None = None,
        *,
        created: bool = True,
    ) -> None:
        self.app = app
        self.id = job_id
        #: False when an enqueue with a unique key found this job already there
        self.created = created
        self._convert = convert

    @functools.cached_property
    def _location(self) -> JobLocation:
        return parse_job_id(self.id)

    @functools.cached_property
    def _keys(self) -> QueueKeys:
        return self.app.keys(self._location.queue)

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _status_call(self) -> Call[operations.Whereabouts]:
        loc = self._location
        return operations.status(self._keys, self.id, loc.level, loc.entry_id)

    def info(self) -> JobInfo:
        return interpret(self.id, self.app.broker.call(self._status_call()))

    async def info_async(self) -> JobInfo:
        return interpret(self.id, await self.app.broker.acall(self._status_call()))

    def status(self) -> JobState:
        return self.info().state

    async def status_async(self) -> JobState:
        return (await self.info_async()).state

    def _outcome(self, info: JobInfo) -> R:
        if info.state is JobState.DONE:
            value = info.record.result if info.record else None
            return self._convert(value) if self._convert else cast(R, value)
        if info.state is JobState.DEAD:
            rec = info.record
            raise JobFailed(self.id, rec.error if rec else None, rec.traceback if rec else None)
        if info.state is JobState.CANCELLED:
            raise JobCancelled(self.id, info.reason)
        if info.expired_by_option:
            raise JobExpired(self.id, info.reason)
        if info.state is JobState.EXPIRED:
            raise JobNotFound(f"job {self.id} finished, but its result has expired")
        raise JobNotFound(f"no job {self.id} in Redis (never enqueued, or its record expired)")

    # -- steering -------------------------------------------------------------------------
    def cancel(self, reason: str | None = None) -> CancelResult:
        """Stop the job wherever it is; the result says what happened (``outcome``).

        Delayed or retrying: removed and ended ``cancelled`` now. Queued: ended now; its
        entry is skipped when a worker reads it. Running: marked; the worker that runs it
        sees the mark on its next lease beat and stops it (an async task is cancelled, a
        process-pool task killed, a thread task sees ``current_job().cancelled()``).
        Already ended: nothing changes (``ALREADY_ENDED``, with the state in ``detail``).
        Raises JobNotFound for an id Redis knows nothing about.
        """
        return cancellation.cancel(
            self.app.broker,
            self._keys,
            self.id,
            ttl_ms=CANCEL_RECORD_TTL_MS,
            reason=reason,
            app=self.app,
        )

    async def cancel_async(self, reason: str | None = None) -> CancelResult:
        return await cancellation.cancel_async(
            self.app.broker,
            self._keys,
            self.id,
            ttl_ms=CANCEL_RECORD_TTL_MS,
            reason=reason,
            app=self.app,
        )

    def progress(self) -> Progress | None:
        """The latest progress the running task reported (``current_job().progress()``),
        or None when it reported none (or it expired with the job)."""
        return self.app.broker.call(progress.read(self._keys, self.id))

    async def progress_async(self) -> Progress | None:
        return await self.app.broker.acall(progress.read(self._keys, self.id))

    # -- streamed partial results ---------------------------------------------------------------
    def stream(self, *, after: str = "0-0") -> Iterator[Any]:
        """The chunks the job yields or ``emit()``s, from the start (or after the chunk
        whose ``Chunk.id`` is ``after``), live, ending when the job ends (done, dead,
        cancelled, expired). A retried or re-run job streams again from its first chunk;
        ``chunks()`` tells the runs apart. Works after the end too, until the job expires.

        An id Redis does not know ends the stream at once, empty; but a later step of a
        workflow, from its handle (``handle.last``, ``handle.jobs[i]``), is waited for
        while the steps before it run, and ends empty only if the workflow stops first."""
        return (chunk.value for chunk in self.chunks(after=after))

    def chunks(self, *, after: str = "0-0") -> Iterator[streams.Chunk]:
        """``stream()`` with each chunk's entry id, attempt, delivery and index."""
        return streams.read(self.app.broker, self._keys, self.id, self._ended, after=after)

    async def stream_async(self, *, after: str = "0-0") -> AsyncIterator[Any]:
        """``async for chunk in job.stream_async()``: ``stream()`` on the event loop."""
        async for chunk in self.chunks_async(after=after):
            yield chunk.value

    def chunks_async(self, *, after: str = "0-0") -> AsyncIterator[streams.Chunk]:
        return streams.read_async(
            self.app.broker, self._keys, self.id, self._ended_async, after=after
        )

    def _ended(self) -> bool:
        state = self.info().state
        if state is JobState.UNKNOWN and self._workflow is not None:
            try:
                return not self._workflow._step_may_come(self)
            except _STOPPED:
                return True
        return _has_ended(state)

    async def _ended_async(self) -> bool:
        state = (await self.info_async()).state
        if state is JobState.UNKNOWN and self._workflow is not None:
            try:
                return not await self._workflow._step_may_come_async(self)
            except _STOPPED:
                return True
        return _has_ended(state)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return its result; raise JobFailed if it died,
        JobCancelled if it was cancelled, JobExpired if it waited past its ``expires``.

        Waits on the queue's completion channel rather than polling.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        broker = self.app.broker
        broker.server_info()  # which pub/sub the scripts use depends on the server
        channel, sharded = self._keys.done_channel, broker.sharded_done
        with broker.pubsubs.subscribed(
            broker.client, channel, sharded, not broker.cluster
        ) as receive:
            record_key = self._keys.record(self.id).encode()
            while True:
                info = self.info()
                if info.state.finished or info.state is JobState.UNKNOWN:
                    return self._outcome(info)
                recheck = time.monotonic() + RECHECK_SECONDS
                while time.monotonic() < recheck:
                    left = _remaining(deadline, self.id, timeout)
                    msg = receive(min(left, RECHECK_SECONDS))
                    if msg and (found := _named(msg, record_key)) is not None:
                        if (ended := _ended_by(self.id, found)) is not None:
                            return self._outcome(ended)
                        break

    async def result_async(self, timeout: float | None = None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        broker = self.app.broker
        await broker.aserver_info()
        client = broker.aclient
        if broker.cluster:
            await client.initialize()  # the cluster pub/sub routes by the slot map
        channel, sharded = self._keys.done_channel, broker.sharded_done
        async with broker.pubsubs.asubscribed(
            client, channel, sharded, not broker.cluster
        ) as receive:
            record_key = self._keys.record(self.id).encode()
            while True:
                info = await self.info_async()
                if info.state.finished or info.state is JobState.UNKNOWN:
                    return self._outcome(info)
                recheck = time.monotonic() + RECHECK_SECONDS
                while time.monotonic() < recheck:
                    left = _remaining(deadline, self.id, timeout)
                    msg = await receive(min(left, RECHECK_SECONDS))
                    if msg and (found := _named(msg, record_key)) is not None:
                        if (ended := _ended_by(self.id, found)) is not None:
                            return self._outcome(ended)
                        break
                    if msg is None:
                        await asyncio.sleep(0)


#: What a workflow's result() raises when it stopped: a step after that is never added.
_STOPPED = (JobFailed, JobCancelled, JobExpired, JobNotFound)


def _has_ended(state: JobState) -> bool:
    """No more chunks can come: the job ended, or nothing in Redis knows it any more."""
    return state.finished or state is JobState.UNKNOWN


def _named(message: Any, record_key: bytes) -> bytes | None:
    """None unless a completion message names this job's record (a batch names many); else
    the record the message carries for it (complete.lua), or b"" when it carries none."""
    data = message.get("data") if isinstance(message, dict) else None
    if not isinstance(data, bytes):
        return None
    names, _, records = data.partition(b"\n\n")
    keys = names.split(b"\n")
    try:
        at = keys.index(record_key)
    except ValueError:
        return None
    inline = records.split(b"\n") if records else []
    return inline[at] if at < len(inline) else b""


def _ended_by(job_id: str, record: bytes) -> JobInfo | None:
    """The job's end from a record carried by its completion message; None when there is
    none (or it does not decode), so the waiter reads the record from Redis instead."""
    if not record:
        return None
    try:
        decoded = decode_record(record)
        info = JobInfo(job_id, JobState(decoded.state), decoded)
    except (ValueError, msgspec.MsgspecError):
        return None
    return info if info.state.finished else None


def _remaining(deadline: float | None, job_id: str, timeout: float | None) -> float:
    if deadline is None:
        return RECHECK_SECONDS
    left = deadline - time.monotonic()
    if left <= 0:
        raise JobTimeout(f"job {job_id} did not finish within {timeout} s")
    return left
