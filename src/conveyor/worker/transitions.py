"""Ending a delivery that did not succeed: a retry through the delayed set, or dead letters.

Each ending is one script (retry.lua, dead.lua) that first checks this worker still owns
the entry; connection errors are retried, since a transition that did not run can run again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from ..backoff import Backoff
from ..broker import Broker, Call, operations
from ..broker.operations import Delivery
from ..errors import ConnectionFailed
from ..keys import QueueKeys
from ..producer import delayed_payload
from ..settings import TaskOptions
from ..signing import Signer
from ..task import Task
from ..wire import Envelope, envelope_fields
from . import outcomes
from .executor import Outcome

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")

DEFAULTS = TaskOptions()
#: Waits between attempts while Redis is unreachable: full jitter, so that a fleet of
#: workers does not reconnect in one burst when Redis comes back.
RECONNECT = Backoff(base=0.25, cap=5.0)


class Transitions:
    def __init__(
        self,
        broker: Broker,
        keys: dict[str, QueueKeys],
        consumer: str,
        signer: Signer | None,
        counts: dict[str, int],
    ) -> None:
        self.broker = broker
        self.keys = keys
        self.consumer = consumer
        self.signer = signer
        self.counts = counts

    async def failed(
        self, d: Delivery, env: Envelope, task: Task[Any, Any], job_id: str, outcome: Outcome
    ) -> None:
        error = outcome.error or "unknown error"
        history = [*env.history, outcomes.attempt_entry(env, error, self.consumer)]
        if env.attempt <= task.options.retries:
            delay = task.options.backoff.delay(env.attempt)
            fields = envelope_fields(
                env, self.signer, attempt=env.attempt + 1, id=job_id, history=history
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
            self.count("retried" if ok else "lost", job_id)
            return
        await self.dead(
            d,
            job_id,
            env,
            "failed",
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
        dead_id = await self.call(
            operations.dead(self.keys[d.queue], self.consumer, d, job_id, record, ttl, fields)
        )
        log.warning("job %s moved to the dead-letter stream (%s): %s", job_id, reason, error)
        self.count("dead" if dead_id else "lost", job_id)

    def count(self, what: str, job_id: str) -> None:
        self.counts[what] += 1
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
