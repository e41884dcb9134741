"""Ending a delivery that did not succeed: a retry through the delayed set, dead letters, a
bounce back for another worker, or a rejection that touches no record.

Each ending is one script (retry.lua, dead.lua, bounce.lua, reject.lua) that first checks
this worker still owns the entry; connection errors are retried, since a transition that did
not run can run again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from ..backoff import Backoff
from ..broker import Broker, Call, operations, workflow_calls
from ..broker.operations import Delivery
from ..broker.workflow_calls import MemberEnd
from ..cancellation import UNIQUE_FIELD, cancelled_record
from ..errors import ConnectionFailed
from ..keys import QueueKeys
from ..producer import delayed_payload
from ..settings import TaskOptions
from ..signing import Signer, resign
from ..task import Task
from ..wire import Envelope
from ..workflows import handoff
from ..workflows.handles import MEMBER_FAILED
from . import outcomes
from .executor import Outcome
from .lifecycle import Lifecycle

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")

DEFAULTS = TaskOptions()
#: what retry.lua's reply means for the counts: parked, or ended cancelled (it was marked)
RETRIED = {1: "retried", 2: "cancelled"}
#: What a chord member cancelled by job.cancel() stands for in its chord.
CANCELLED_ERROR = "cancelled by job.cancel()"
#: Reasons a chord member ends with that no replay undoes (not dead-lettered).
NO_REPLAY = frozenset({"cancelled", "expired"})


def unique_of(d: Delivery) -> str:
    """The unique key a job holds until it ends (its entry's ``unique`` field), or ""."""
    raw = d.fields.get(UNIQUE_FIELD_BYTES)
    return raw.decode(errors="replace") if raw else ""


#: Waits between attempts while Redis is unreachable: full jitter, so that a fleet of
#: workers does not reconnect in one burst when Redis comes back.
RECONNECT = Backoff(base=0.25, cap=5.0)
UNIQUE_FIELD_BYTES = UNIQUE_FIELD.encode()


class Transitions:
    def __init__(
        self,
        broker: Broker,
        keys: dict[str, QueueKeys],
        consumer: str,
        signer: Signer | None,
        counts: dict[str, int],
        *,
        bounce_delay: float = 1.0,
        unknown_task_wait: float = 90.0,
    ) -> None:
        self.broker = broker
        self.keys = keys
        self.consumer = consumer
        self.signer = signer
        self.counts = counts
        #: how long a job for a task this worker lacks waits in the delayed set per bounce
        self.bounce_delay = bounce_delay
        #: how long no live worker may register a task before its jobs are dead-lettered
        self.unknown_task_wait = unknown_task_wait
        #: the hooks' view of each job (lifecycle.py), None when nothing listens
        self.lifecycle: Lifecycle | None = None

    async def failed(
        self, d: Delivery, env: Envelope, task: Task[Any, Any], job_id: str, outcome: Outcome
    ) -> None:
        error = outcome.error or "unknown error"
        if self.lifecycle is not None:
            self.lifecycle.failed(d, job_id, task.name, env.attempt, outcome)
        history = outcomes.next_history(env, error, self.consumer)
        if env.attempt <= task.options.retries and not outcome.final:
            delay = task.options.backoff.delay(env.attempt)
            fields = outcomes.moved_fields(
                env, d, self.signer, attempt=env.attempt + 1, id=job_id, history=history
            )
            ok = await self.call(
                operations.retry(
                    self.keys[d.queue],
                    self.consumer,
                    d,
                    job_id,
                    delayed_payload(fields, d.level),
                    int(delay * 1000),
                    outcomes.retry_record(env, error),
                    cancelled_record=cancelled_record("cancelled while running"),
                    ttl_ms=int(task.options.result_ttl * 1000),
                    unique=unique_of(d),
                    publish=self.broker.publish_command,
                )
            )
            log.warning(
                "job %s (%s) failed on attempt %d/%d, retrying in %.2fs: %s",
                job_id,
                task.name,
                env.attempt,
                task.options.retries + 1,
                delay,
                error,
            )
            self.count(RETRIED.get(ok, "lost"), job_id, d)
            if ok == 2:
                await self.tell_chord(d, job_id, "cancelled", CANCELLED_ERROR, None)
            return
        await self.dead(
            d,
            job_id,
            env,
            outcome.reason or "failed",
            error,
            traceback=outcome.traceback,
            history=history,
            ttl_ms=int(task.options.result_ttl * 1000),
        )

    async def dead(
        self,
        d: Delivery,
        job_id: str,
        env: Envelope | None,
        reason: str,
        error: str,
        *,
        traceback: str | None = None,
        history: list[dict[str, Any]] | None = None,
        ttl_ms: int | None = None,
    ) -> None:
        record = outcomes.dead_record(
            task=env.task if env else None,
            attempt=env.attempt if env else None,
            reason=reason,
            error=error,
            traceback=traceback,
            worker=self.consumer,
        )
        fields = outcomes.dead_fields(
            d,
            job_id=job_id,
            reason=reason,
            error=error,
            traceback=traceback,
            history=list(history if history is not None else (env.history if env else [])),
            worker=self.consumer,
        )
        ttl = ttl_ms if ttl_ms is not None else int(DEFAULTS.result_ttl * 1000)
        member = await self.tell_chord(d, job_id, reason, error, self.owns(d))
        dead_id = await self.call(
            operations.dead(
                self.keys[d.queue],
                self.consumer,
                d,
                job_id,
                record,
                ttl,
                fields,
                self.broker.publish_command,
                unique_of(d),
                member,
            )
        )
        log.warning("job %s moved to the dead-letter stream (%s): %s", job_id, reason, error)
        self.count("dead" if dead_id else "lost", job_id, d, reason, error)

    async def tell_chord(
        self, d: Delivery, job_id: str, reason: str, error: str, owned: Call[Any] | None
    ) -> MemberEnd | None:
        """Before a chord member ends without a result (dead, cancelled, expired), what its
        chord must hear: under on_error="fail" its callback is recorded dead, naming the
        member; under "include" the error takes the member's slot.

        A chord on this queue hears it from the script that ends the member (the returned
        MemberEnd goes in its arguments): one step, run only if this worker still owns the
        entry. A chord on another queue is told first (forward-then-end: a repeat after a
        crash changes nothing), and only once ``owned`` (truthy: this worker owns the entry
        and may end it) says so, so a worker that lost its lease writes nothing there; a
        result that comes later still replaces an error until the callback is added.
        ``owned`` None: a script this worker ran has ended the member already (retry.lua,
        requeue.lua or limit_gate.lua found it marked cancelled): the chord is told after
        the fact, wherever it sits (a crash in between leaves it untold; ChordHandle then
        raises the member's JobCancelled rather than wait). None when there is nothing to
        pass to the ending script."""
        flow = outcomes.flow_of(d)
        if flow is None or flow.member is None:
            return None
        m = flow.member
        keys = self._keys_of(m.queue)
        if m.on_error == "include":
            value = handoff.error_value(job_id, reason, error)
        else:
            task = d.fields.get(b"task", b"?").decode(errors="replace")
            value = outcomes.dead_record(
                task=None,
                attempt=None,
                reason=MEMBER_FAILED,
                error=f"{flow.describe(task)} {_ended(reason)}: {error}; "
                + (
                    "replay it to let the chord finish"
                    if reason not in NO_REPLAY
                    else "the chord cannot finish"
                ),
                traceback=None,
                worker=self.consumer,
            )
        ttl = int(DEFAULTS.result_ttl * 1000)
        if owned is not None and m.queue == d.queue:
            return MemberEnd(
                keys.chord(flow.id),
                keys.stream(m.level),
                keys.record(m.callback),
                m.level,
                m.on_error,
                m.index,
                m.size,
                value,
                ttl,
            )
        if owned is not None and await self.call(owned) != 1:  # True, or expire's 1
            return None
        if m.on_error == "include":
            report = handoff.chord_report(self._keys_of, flow, value, error=True)
            await self.call(workflow_calls.chord_report(report))
        else:
            await self.call(
                workflow_calls.chord_failed(
                    keys.chord(flow.id),
                    m.index,
                    keys.record(m.callback),
                    value,
                    ttl,
                    keys.done_channel,
                    self.broker.publish_command,
                )
            )
        return None

    def owns(self, d: Delivery) -> Call[bool]:
        """Whether this worker still holds the entry (a read: the ending script checks
        again, in the step that ends it)."""
        return operations.owns(self.keys[d.queue], d, self.consumer)

    def _keys_of(self, queue: str) -> QueueKeys:
        """The keys of any queue of this namespace (a chord's callback may live on a queue
        this worker does not serve)."""
        known = self.keys.get(queue)
        if known is not None:
            return known
        namespace = next(iter(self.keys.values())).namespace
        return QueueKeys(namespace, queue)

    async def reject(self, d: Delivery, job_id: str, reason: str, error: str) -> None:
        """Dead-letter an entry that must not touch a record (its id may name another job)."""
        fields = outcomes.dead_fields(
            d,
            job_id=job_id,
            reason=reason,
            error=error,
            traceback=None,
            history=None,
            worker=self.consumer,
        )
        dead_id = await self.call(operations.reject(self.keys[d.queue], self.consumer, d, fields))
        log.warning("entry %s/%s rejected (%s): %s", d.queue, d.entry_id, reason, error)
        self.count("dead" if dead_id else "lost", job_id, d, reason, error)

    async def bounce(
        self, d: Delivery, env: Envelope, job_id: str, *, registered: bool, known: str
    ) -> None:
        """Hand a job of a task this worker lacks back for another worker (retry.lua).

        It waits a short delay in the delayed set (no busy loop) and comes back as a new
        entry with the same attempt, so neither an attempt nor a delivery is counted. While
        no live worker registers the task, each bounce is counted in the ``bounces`` field;
        after ``unknown_task_wait`` worth of them the job is dead-lettered.
        """
        bounces = _int_field(d.fields, b"bounces") + 1 if not registered else 0
        if bounces > max(1, round(self.unknown_task_wait / self.bounce_delay)):
            error = (
                f"unknown task {env.task!r}: no live worker of this namespace registers it "
                f"(this one knows: {known}); deploy a worker that does, then replay this job"
            )
            await self.dead(d, job_id, env, "unknown_task", error)
            return
        fields = outcomes.moved_fields(env, d, self.signer, id=job_id)
        if bounces:
            fields["bounces"] = bounces
        fields = resign(fields, self.signer, d.queue, d.level)
        ok = await self.call(
            operations.retry(
                self.keys[d.queue],
                self.consumer,
                d,
                job_id,
                delayed_payload(fields, d.level),
                int(self.bounce_delay * 1000),
                outcomes.scheduled_record(env),
                cancelled_record=cancelled_record("cancelled while queued"),
                unique=unique_of(d),
                publish=self.broker.publish_command,
            )
        )
        log.info(
            "job %s is for task %r, which this worker does not register; handed back %s",
            job_id,
            env.task,
            "for a worker that does" if registered else "in case a worker that does starts",
        )
        self.count({1: "bounced", 2: "cancelled"}.get(ok, "lost"), job_id, d)
        if ok == 2:
            await self.tell_chord(d, job_id, "cancelled", CANCELLED_ERROR, None)

    def count(
        self,
        what: str,
        job_id: str,
        d: Delivery | None = None,
        reason: str | None = None,
        error: str | None = None,
    ) -> None:
        """Count how a delivery ended (and tell the hooks, when any listen)."""
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.lifecycle is not None and d is not None:
            self.lifecycle.ended(what, job_id, d, reason, error)
        if what == "lost":
            log.warning("job %s: lease lost before it ended here; another worker has it", job_id)

    async def call(self, call: Call[T]) -> T:
        """Run a state transition, retrying through connection errors (it is idempotent)."""
        failures = 0
        while True:
            try:
                return await self.broker.acall(call)
            except ConnectionFailed as exc:
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning("Redis unreachable, retrying in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)


def _ended(reason: str) -> str:
    """How a member ended, for the callback's dead record."""
    if reason in NO_REPLAY:
        return f"was {reason}"
    return f"failed for good ({reason})"


def _int_field(fields: Mapping[bytes, bytes], name: bytes) -> int:
    try:
        return max(0, int(fields.get(name, b"0")))
    except ValueError:
        return 0
