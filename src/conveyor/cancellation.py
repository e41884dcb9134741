"""Cancelling a job wherever it is, and reading the cancel marks a worker must act on.

One script (cancel.lua) decides by where the job is: a delayed job ends at once, a queued
one ends at once and is skipped when its entry is delivered (the entry is not deleted, so
XINFO lag stays true), a running one is marked in the queue's ``cancelled`` set, which its
worker reads on the lease beat (a mark in Redis cannot be missed the way a message can).
Calls are built here once and run by either face of the Broker.

A cancel that ends a job here (delayed or queued) is told to the app's hooks, metrics and
events stream by the cancelling process, as a ``cancelled`` event with no worker: the
worker that later takes the queued entry (end_cancelled.lua answers ``skipped``) tells
nothing more. A running job's cancel is told by its worker when it ends.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .broker import Broker, Call, command, run_script, text
from .broker.calls import Arg
from .broker.workflow_calls import MemberEnd, member_tail
from .errors import ConveyorError, JobNotFound
from .events import Host, tell, tell_async
from .hooks import JobEvent
from .keys import GROUP, QueueKeys, parse_job_id
from .wire import JobRecord, encode_record

#: Record state of a job stopped by job.cancel().
CANCELLED_STATE = "cancelled"
#: Stream field naming the unique key a job holds until it ends (``unique_for=None``).
UNIQUE_FIELD = "unique"


#: The detail of ALREADY_ENDED for a job acked so long ago that its record's TTL passed (not
#: the ``expires`` option's ``expired`` state).
RECORD_EXPIRED = "record_expired"


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"  # was delayed or retrying: ended now
    WILL_SKIP = "will_skip"  # was queued: ended now, its entry is skipped when delivered
    SIGNALLED = "signalled"  # running: marked, its worker ends it within one lease beat
    ALREADY_ENDED = "already_ended"  # done, dead, cancelled, expired, record gone: no change


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    #: the state it had ended in (ALREADY_ENDED; ``record_expired`` when it ended so long ago
    #: that its record's TTL passed, not the ``expires`` option's ``expired``), or the
    #: consumer running it (SIGNALLED)
    detail: str = ""
    #: the job's task (CANCELLED, WILL_SKIP; empty for a workflow step not added yet)
    task: str = ""

    @property
    def stopped(self) -> bool:
        """True when the job will not (or no longer) run: not only said so, but done."""
        return self.outcome in (CancelOutcome.CANCELLED, CancelOutcome.WILL_SKIP)


@dataclass(frozen=True)
class _Reply:
    code: int
    detail: str


_OUTCOMES = {
    1: CancelOutcome.CANCELLED,
    2: CancelOutcome.WILL_SKIP,
    3: CancelOutcome.SIGNALLED,
    4: CancelOutcome.ALREADY_ENDED,
}
_NEEDS_UNIQUE = 5


def cancelled_record(reason: str | None = None) -> bytes:
    """The record of a cancelled job (the scripts stamp ``finished_at`` on Redis' clock)."""
    return encode_record(JobRecord(state=CANCELLED_STATE, reason=reason))


def cancel_call(
    keys: QueueKeys,
    job_id: str,
    *,
    ttl_ms: int,
    reason: str | None = None,
    unique_name: str = "",
    publish: str = "PUBLISH",
    before_added: bool = False,
) -> Call[_Reply]:
    """One run of cancel.lua. ``unique_name`` is the job's until-done unique key, which the
    script asks for (and checks) when the job holds one. ``before_added``: the id is a
    workflow step that may not exist yet; with no record it is recorded cancelled, and the
    step before it will not add it."""
    loc = parse_job_id(job_id)
    key_list = [
        keys.record(job_id),
        *keys.streams,
        keys.delayed,
        keys.payloads,
        keys.cancelled,
    ]
    if unique_name:
        key_list.append(keys.unique(unique_name))
    args: list[Arg] = [
        GROUP,
        job_id,
        loc.level or "",
        loc.entry_id or "",
        cancelled_record(reason),
        ttl_ms,
        f"{keys.done_channel} {publish}",
        unique_name,
        "1" if before_added else "",
    ]
    return run_script(
        "cancel", key_list, args, lambda r: _Reply(int(r[0]), text(r[1]) if r[1] else "")
    )


def _result(job_id: str, reply: _Reply) -> CancelResult:
    if reply.code == 0:
        raise JobNotFound(
            f"cannot cancel job {job_id}: Redis holds nothing for it (never enqueued, or it "
            "ended and its record expired). Check the id (`conveyor status JOB_ID`)."
        )
    outcome = _OUTCOMES[reply.code]
    if outcome in (CancelOutcome.CANCELLED, CancelOutcome.WILL_SKIP):
        return CancelResult(outcome, "", reply.detail)
    return CancelResult(outcome, reply.detail)


def ended_event(job_id: str, result: CancelResult, reason: str | None) -> JobEvent | None:
    """The ``cancelled`` event of a job this cancel ended (None when it ended none, or a
    workflow step not added yet, which never was enqueued either)."""
    if not result.stopped or not result.task:
        return None
    queue = parse_job_id(job_id).queue
    return JobEvent("cancelled", job_id, queue, result.task, at=time.time(), reason=reason)


def result_of(job_id: str, reply: _Reply) -> CancelResult:
    """What a reply of cancel_call means; JobNotFound for an unknown id."""
    return _result(job_id, reply)


def tell_ended(
    app: Host, job_ids: Sequence[str], results: Sequence[CancelResult], reason: str | None
) -> None:
    """Tell the app's hooks of each job these cancels ended (a workflow handle's cancel)."""
    if app.hooks.active:
        for job_id, result in zip(job_ids, results, strict=True):
            event = ended_event(job_id, result, reason)
            if event is not None:
                tell(app, event)


async def tell_ended_async(
    app: Host, job_ids: Sequence[str], results: Sequence[CancelResult], reason: str | None
) -> None:
    if app.hooks.active:
        for job_id, result in zip(job_ids, results, strict=True):
            event = ended_event(job_id, result, reason)
            if event is not None:
                await tell_async(app, event)


def cancel(
    broker: Broker,
    keys: QueueKeys,
    job_id: str,
    *,
    ttl_ms: int,
    reason: str | None = None,
    app: Host | None = None,
) -> CancelResult:
    """Cancel a job; see CancelOutcome for what happened. Raises JobNotFound for an id
    Redis knows nothing about. A job holding a unique key until done costs a second call:
    the first names the key, the second frees it in the step that ends the job. ``app``:
    whose hooks to tell when this ends the job (nothing is sent when none listen)."""
    unique_name = ""
    for _ in range(2):
        publish = broker.publish_command
        reply = broker.call(
            cancel_call(
                keys,
                job_id,
                ttl_ms=ttl_ms,
                reason=reason,
                unique_name=unique_name,
                publish=publish,
            )
        )
        if reply.code != _NEEDS_UNIQUE:
            result = _result(job_id, reply)
            if app is not None and app.hooks.active:
                event = ended_event(job_id, result, reason)
                if event is not None:
                    tell(app, event)
            return result
        unique_name = reply.detail
    raise ConveyorError(f"cancel of job {job_id} did not settle on its unique key")


async def cancel_async(
    broker: Broker,
    keys: QueueKeys,
    job_id: str,
    *,
    ttl_ms: int,
    reason: str | None = None,
    app: Host | None = None,
) -> CancelResult:
    unique_name = ""
    for _ in range(2):
        publish = broker.publish_command
        reply = await broker.acall(
            cancel_call(
                keys,
                job_id,
                ttl_ms=ttl_ms,
                reason=reason,
                unique_name=unique_name,
                publish=publish,
            )
        )
        if reply.code != _NEEDS_UNIQUE:
            result = _result(job_id, reply)
            if app is not None and app.hooks.active:
                event = ended_event(job_id, result, reason)
                if event is not None:
                    await tell_async(app, event)
            return result
        unique_name = reply.detail
    raise ConveyorError(f"cancel of job {job_id} did not settle on its unique key")


def cancel_flags(keys: QueueKeys, job_ids: Sequence[str]) -> Call[set[str]]:
    """Which of the jobs a worker holds are marked cancelled: one SMISMEMBER, sent beside
    the lease renewal on each beat (a single-key read needs no script)."""
    ids = list(job_ids)
    if not ids:
        raise ValueError("cancel_flags needs at least one job id (with none, send nothing)")

    def parse(reply: Any) -> set[str]:
        return {job_id for job_id, hit in zip(ids, reply, strict=True) if int(hit)}

    return command("SMISMEMBER", keys.cancelled, *ids, parse=parse)


def end_cancelled(
    keys: QueueKeys,
    consumer: str,
    level: str,
    entry_id: str,
    job_id: str,
    *,
    ttl_ms: int,
    unique_name: str = "",
    reason: str | None = None,
    publish: str = "PUBLISH",
    member: MemberEnd | None = None,
) -> Call[str]:
    """End a running job its worker found marked: acked, recorded ``cancelled``, not
    retried; a chord member tells its chord on this queue (``member``) in the same step.
    Returns what the worker counts: ``cancelled`` (ended here), ``skipped`` (the entry of a
    job cancel.lua had ended, which its client told the hooks of), or ``lost`` (the worker
    no longer owns the entry: nothing changed)."""
    key_list = [keys.stream(level), keys.record(job_id), keys.cancelled]
    if unique_name:
        key_list.append(keys.unique(unique_name))
    args: list[Arg] = [
        GROUP,
        consumer,
        entry_id,
        job_id,
        cancelled_record(reason),
        ttl_ms,
        keys.done_channel,
        publish,
    ]
    args += member_tail(member, key_list)
    return run_script("end_cancelled", key_list, args, lambda r: _END_CANCELLED[int(r)])


_END_CANCELLED = {0: "lost", 1: "cancelled", 2: "skipped"}
