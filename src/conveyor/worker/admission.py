"""Whether a delivery may run now: its ``expires`` deadline and its task's rate and
concurrency limits, each one script, paid only by jobs that carry them; and the lease a
concurrency-limited job holds until its ack or release gives it back."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from ..broker import Call
from ..broker.operations import Delivery
from ..expiry import expire, expires_ms
from ..limits import Held, Release, leases_key, release, waiters_key
from ..producer import delayed_payload
from ..settings import TaskOptions
from ..task import Task
from ..wire import Envelope
from . import outcomes
from .transitions import CANCELLED_ERROR, unique_of

if TYPE_CHECKING:
    from .runtime import Worker

log = logging.getLogger("conveyor.worker")


class Admission:
    def __init__(self, worker: Worker) -> None:
        self.w = worker

    async def expired(
        self,
        d: Delivery,
        env: Envelope,
        job_id: str,
        raw: bytes | None,
        opts: TaskOptions,
    ) -> bool:
        """True when the job waited past its ``expires`` (the entry's field, else the
        task's option) and expire.lua ended it ``expired``: one script, on Redis' clock,
        paid only by jobs that carry the option."""
        w = self.w
        try:
            limit_ms = int(raw) if raw is not None else expires_ms(opts.expires)
        except ValueError:
            limit_ms = expires_ms(opts.expires)
        if not limit_ms or limit_ms <= 0:
            return False
        ending = functools.partial(
            expire,
            w.keys[d.queue],
            w.consumer,
            d.level,
            d.entry_id,
            job_id,
            limit_ms,
            ttl_ms=int(opts.result_ttl * 1000),
            unique_name=unique_of(d),
            attempt=env.attempt,
            publish=w.broker.publish_command,
            ready_at=outcomes.ready_at(d),
        )
        # A chord member tells its chord it expired: in expire.lua when the chord is on this
        # queue; else there, after a dry run found it expired and still this worker's.
        error = f"not started within {limit_ms / 1000:g} s of being ready"
        flow = outcomes.flow_of(d)
        elsewhere = flow is not None and flow.member is not None and flow.member.queue != d.queue
        if elsewhere:
            ended = await w.transitions.call(ending(dry_run=True))
            if ended == 1:
                await w.transitions.tell_chord(d, job_id, "expired", error, None)
                ended = await w.transitions.call(ending())
        else:  # no chord, or one on this queue: ``owned`` is never sent, expire.lua checks
            member = await w.transitions.tell_chord(d, job_id, "expired", error, ending())
            ended = await w.transitions.call(ending(member=member))
        if ended == 0:
            return False
        if ended == 1:
            log.info("job %s expired: not started within %d ms of being ready", job_id, limit_ms)
        w.transitions.count("expired" if ended == 1 else "lost", job_id, d)
        return True

    async def admit(
        self,
        d: Delivery,
        env: Envelope,
        task: Task[Any, Any],
        job_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> tuple[bool, Held | None]:
        """Pass a limited task's delivery through its gate (one script): run it now, or
        leave it parked in the delayed set (no attempt counted) until its next slot."""
        w = self.w
        opts = task.options
        limits = w.flow.limits_of(task.name, opts)
        if limits is None:
            return True, None
        rate_value = opts.rate_key(*args, **kwargs) if opts.rate_key is not None else None
        conc_value = (
            opts.concurrency_key(*args, **kwargs) if opts.concurrency_key is not None else None
        )
        moved = outcomes.moved_fields(env, d, w.app.signer, keep_clock=True, id=job_id)
        payload = delayed_payload(moved, d.level)
        admission = await w.transitions.call(
            limits.gate(
                w.keys[d.queue],
                w.consumer,
                d,
                job_id,
                payload,
                outcomes.scheduled_record(env),
                task=task.name,
                lease_ms=int(w.settings.leases.timeout * 1000),
                rate_key_value=rate_value,
                concurrency_key_value=conc_value,
                ttl_ms=int(opts.result_ttl * 1000),
                unique_name=unique_of(d),
                publish=w.broker.publish_command,
            )
        )
        if admission.outcome == "run":
            if limits.concurrency is None:
                return True, None
            held = Held(task.name, conc_value, job_id)
            w.flow.hold(d.queue, held)
            return True, held
        counted = {"wait": "limited", "cancelled": "cancelled"}
        w.transitions.count(counted.get(admission.outcome, "lost"), job_id, d)
        if admission.outcome == "cancelled":  # limit_gate.lua ended it: tell a chord
            await w.transitions.tell_chord(d, job_id, "cancelled", CANCELLED_ERROR, None)
        return False, None

    def lease_keys(self, d: Delivery, lease: Held | None) -> tuple[str, str] | None:
        """The keys of the lease the ack gives back (complete.lua), or None."""
        if lease is None:
            return None
        self.w.flow.unhold(d.queue, lease.job_id)
        keys = self.w.keys[d.queue]
        return leases_key(keys, lease.task, lease.key), waiters_key(keys, lease.task, lease.key)

    def release_call(self, d: Delivery, lease: Held) -> Call[Release]:
        self.w.flow.unhold(d.queue, lease.job_id)
        return release(
            self.w.keys[d.queue], self.w.consumer, d, lease.job_id, task=lease.task, key=lease.key
        )
