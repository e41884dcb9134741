"""Stopping a worker: hand back what it holds, so no job waits for a lease timeout.

Jobs not started yet and jobs still running after the grace period go back to their stream
at once (requeue.lua), never to the dead letters: being interrupted is not a failure. A job
whose slot died under it stays in the PEL instead (it may be what killed the slot): another
worker reclaims it after one lease timeout, and max_deliveries bounds how often that repeats.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import redis

from ..broker import operations, text
from ..broker.operations import Delivery
from ..cancellation import cancelled_record
from ..keys import job_id_for
from ..signing import resign
from . import acklag, outcomes
from .cancellation import cancel_and_wait
from .transitions import CANCELLED_ERROR, DEFAULTS, unique_of

if TYPE_CHECKING:
    from .runtime import Worker

log = logging.getLogger("conveyor.worker")


async def shut_down(w: Worker) -> None:
    grace = w.settings.shutdown_grace
    w.handoff.close()
    await w.maintenance.stop()  # no reclaim may hand out more work from here on
    for d in w.handoff.leftovers():
        await requeue(w, d)
    if w.running:
        log.info("waiting up to %.1fs for %d running job(s)", grace, len(w.running))
    pending: set[asyncio.Task[None]] = set()
    live = [t for t in w.slots if not t.done()]
    if live:
        _, pending = await asyncio.wait(live, timeout=grace)
    busy = [n for n, t in enumerate(w.slots) if t in pending and n in w.running]
    unfinished = [w.running[n] for n in busy]
    w.executor.stopping = True
    await cancel_and_wait(pending)
    await w.completer.close(timeout=max(grace, 5.0))
    for d in unfinished:
        await requeue(w, d)
    if w.lease is not None:
        w.lease.stop()
        w.lease.join(timeout=5)
    retired = True
    for keys in w.keys.values():
        try:
            retired &= await w.transitions.call(operations.retire(keys, w.consumer))
        except redis.ResponseError as exc:
            if not operations.group_lost(exc):
                raise
            # the group went with the queue's state (see Fetcher.loop): nothing to hand back
    if w.lease is not None:
        w.lease.unregister()
    w.executor.shutdown()
    await w.fetcher.close()
    try:
        acklag.write(w.ack_lag, w.consumer)
    except OSError as exc:
        log.warning("could not write the ack lag to $%s: %s", acklag.REPORT_ENV, exc)
    log.info(
        "worker %s stopped (%s)%s",
        w.consumer,
        ", ".join(f"{k} {v}" for k, v in w.counts.items()),
        "" if retired else "; it still holds pending jobs, which will be reclaimed",
    )


def result_ttl_ms(w: Worker, d: Delivery) -> int:
    """How long the record of ``d``'s job is kept once it ends: its task's ``result_ttl``
    (the default for a task this worker does not register)."""
    task = w.app.tasks.get(d.fields.get(b"task", b"").decode(errors="replace"))
    return int((task.options if task is not None else DEFAULTS).result_ttl * 1000)


async def requeue(w: Worker, d: Delivery) -> None:
    """Give an unfinished job back to its stream now, so any worker can run it at once."""
    job_id = job_id_for(d.queue, d.level, d.entry_id)
    fields: dict[str, Any] = {k.decode(errors="replace"): v for k, v in d.fields.items()}
    # Not a new attempt: the job keeps when it first became ready (its `expires` clock).
    # A changed entry needs a fresh signature (it goes back to the same queue and level).
    fields = resign(
        {"id": job_id, **fields, outcomes.READY_AT_FIELD.decode(): outcomes.ready_at(d)},
        w.app.signer,
        d.queue,
        d.level,
    )
    new_id = await w.transitions.call(
        operations.requeue(
            w.keys[d.queue],
            w.consumer,
            d,
            text(fields["id"]),
            fields,
            cancelled_record=cancelled_record("cancelled while running"),
            ttl_ms=result_ttl_ms(w, d),
            unique=unique_of(d),
            publish=w.broker.publish_command,
        )
    )
    w.held.discard(d.queue, d.level, d.entry_id)
    lease = w.flow.lease_of(d.queue, text(fields["id"]))
    if lease is not None:  # give its concurrency slot back now, not after a lease timeout
        await w.transitions.call(w.runner.admission.release_call(d, lease))
    if new_id == "cancelled":
        log.info("job %s was cancelled; it ended so instead of being requeued", fields["id"])
        await w.transitions.tell_chord(d, text(fields["id"]), "cancelled", CANCELLED_ERROR, None)
    elif new_id:
        log.info("requeued unfinished job %s", text(fields["id"]))
