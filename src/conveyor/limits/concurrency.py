"""Global concurrency limits: at most N jobs of a task (per key) run at once, on all workers.

Each running job holds a lease in a sorted set scored by its expiry on Redis' clock, taken
by the gate of a delivery (gate.py, limit_gate.lua), extended by the worker's lease beat
(concurrency_renew.lua) and given back when the job ends (concurrency_release.lua). A
worker that dies stops renewing, so its slots come back after one lease timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..broker.calls import Call, run_script, text
from ..broker.operations import Delivery
from ..keys import GROUP, QueueKeys
from .admission import Release, parse_release
from .policy import key_part, positive_int


def _suffix(task: str, key: object) -> str:
    base = key_part(task, "task name")
    return base if key is None else f"{base}:{key_part(key, 'concurrency_key')}"


def leases_key(keys: QueueKeys, task: str, key: object = None) -> str:
    """``ns:{queue}:conc:<task>[:<key>]``: job ids scored by lease expiry (ms)."""
    return f"{keys.prefix}conc:{_suffix(task, key)}"


def waiters_key(keys: QueueKeys, task: str, key: object = None) -> str:
    """``ns:{queue}:concwait:<task>[:<key>]``: parked job ids scored by first arrival."""
    return f"{keys.prefix}concwait:{_suffix(task, key)}"


@dataclass(frozen=True)
class Held:
    """A lease a worker holds: the job and the limiter it counts against."""

    task: str
    key: object
    job_id: str


@dataclass(frozen=True)
class ConcurrencyLimit:
    """A task's ``concurrency=`` option, validated when the task is declared.

    ``retry_ms`` bounds how long a parked job waits when no release wakes it (a holder
    died): it comes back then, or when the earliest lease expires if that is sooner.
    """

    limit: int
    retry_ms: int = 1000

    @classmethod
    def parse(cls, value: object, retry_ms: object = 1000) -> ConcurrencyLimit:
        return cls(
            positive_int(value, "concurrency"), positive_int(retry_ms, "concurrency_retry_ms")
        )


def release(
    keys: QueueKeys, consumer: str, d: Delivery, job_id: str, *, task: str, key: object = None
) -> Call[Release]:
    """Give back the lease of a job that ended on this consumer, waking the oldest waiter.

    Send it after (or pipelined right behind) the transition that ended the delivery: when
    another consumer holds the entry by then, the lease counts for that run and is kept.
    """
    return run_script(
        "concurrency_release",
        [
            leases_key(keys, task, key),
            waiters_key(keys, task, key),
            keys.delayed,
            keys.stream(d.level),
        ],
        [job_id, GROUP, d.entry_id, consumer],
        parse_release,
    )


def renew(keys: QueueKeys, held: Sequence[Held], lease_ms: int) -> Call[list[str]]:
    """Extend every lease a worker holds in one queue, in one script; the reply lists the
    job ids whose lease had already expired (lost)."""

    def parse(reply: Any) -> list[str]:
        return [text(x) for x in reply]

    return run_script(
        "concurrency_renew",
        [leases_key(keys, h.task, h.key) for h in held],
        [lease_ms, *(h.job_id for h in held)],
        parse,
    )
