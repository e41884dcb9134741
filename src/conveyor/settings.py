"""Settings as small frozen objects that reject bad values when they are made."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backoff import Backoff
from .errors import ConfigurationError
from .keys import LEVELS, validate_name
from .limits.policy import parse_rate, positive_int

EXECUTORS = ("thread", "process")


def _positive(owner: str, name: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(
            f"{owner}.{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, "
            f"not {value!r}"
        )


@dataclass(frozen=True)
class Durability:
    """Wait, after an enqueue, until ``replicas`` replicas have it (``WAIT``), at most
    ``timeout`` seconds; with ``aof`` also until it is fsynced to the master's and those
    replicas' AOF (``WAITAOF``, Redis 7.2+, checked at run time).

    Replication is asynchronous: a master that fails before a replica received a job loses
    it, even though the enqueue returned. Waiting narrows that window to "the master and
    ``replicas`` replicas failed together" at the cost of one round trip to the replicas.
    """

    replicas: int = 1
    timeout: float = 1.0
    aof: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.replicas, int) or self.replicas < 0:
            raise ConfigurationError(
                f"Durability.replicas must be an int >= 0, not {self.replicas!r}"
            )
        _positive("Durability", "timeout", self.timeout)

    @property
    def timeout_ms(self) -> int:
        return max(1, int(self.timeout * 1000))


@dataclass(frozen=True)
class TaskOptions:
    """How a task's jobs are queued, retried and kept.

    ``retries`` counts extra attempts after the first failure. ``max_deliveries`` bounds how
    often a job may be handed out without finishing (its worker dies each time) before it
    is dead-lettered. ``result_ttl`` is how long the result and final state stay readable.

    Flow control: ``rate`` ("100/s", "20/m", per key with ``rate_key``) and ``concurrency``
    (per key with ``concurrency_key``) are global across all workers; a key function gets
    the job's bound arguments and returns a str or int. ``expires`` drops a job not started
    within that many seconds of becoming ready. ``executor="process"`` runs a sync task in
    the worker's subprocess pool, where a timeout or cancel can kill it.

    Micro-batches: with ``batch_size`` the function gets a list of up to that many jobs'
    items (each job's one argument) in one call, gathered from what is ready within
    ``batch_wait`` seconds of the first, and returns one result or exception per item.
    """

    queue: str = "default"
    priority: str = "normal"
    retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None
    max_deliveries: int = 5
    result_ttl: float = 24 * 3600
    rate: str | None = None
    rate_burst: int = 1
    rate_key: Callable[..., Any] | None = None
    concurrency: int | None = None
    concurrency_key: Callable[..., Any] | None = None
    expires: float | None = None
    executor: str = "thread"
    batch_size: int | None = None
    batch_wait: float = 0.05

    def __post_init__(self) -> None:
        validate_name("queue", self.queue)
        if self.batch_size is not None:
            if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
                raise ConfigurationError(
                    f"TaskOptions.batch_size must be an int >= 1, not {self.batch_size!r}"
                )
            if self.batch_size < 1:
                raise ConfigurationError(
                    f"TaskOptions.batch_size must be >= 1, not {self.batch_size!r}"
                )
        if isinstance(self.batch_wait, bool) or not isinstance(self.batch_wait, int | float):
            raise ConfigurationError(
                f"TaskOptions.batch_wait must be a number of seconds, not {self.batch_wait!r}"
            )
        _positive("TaskOptions", "batch_wait", self.batch_wait, allow_zero=True)
        if self.rate is not None:
            parse_rate(self.rate, "rate")
        positive_int(self.rate_burst, "rate_burst")
        if self.concurrency is not None:
            positive_int(self.concurrency, "concurrency")
        for name in ("rate_key", "concurrency_key"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ConfigurationError(f"{name} must be a function of the task's arguments")
        if self.rate_key is not None and self.rate is None:
            raise ConfigurationError("rate_key needs a rate (e.g. rate='20/s')")
        if self.concurrency_key is not None and self.concurrency is None:
            raise ConfigurationError("concurrency_key needs a concurrency limit")
        if self.expires is not None:
            if isinstance(self.expires, bool):
                raise ConfigurationError("expires must be a number of seconds, not a bool")
            _positive("TaskOptions", "expires", self.expires)
        if self.executor not in EXECUTORS:
            raise ConfigurationError(
                f"executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}"
            )
        if self.priority not in LEVELS:
            raise ConfigurationError(
                f"TaskOptions.priority must be one of {', '.join(LEVELS)}, not {self.priority!r}"
            )
        if self.retries < 0:
            raise ConfigurationError("TaskOptions.retries must be >= 0")
        if self.timeout is not None:
            _positive("TaskOptions", "timeout", self.timeout)
        if self.max_deliveries < 1:
            raise ConfigurationError("TaskOptions.max_deliveries must be >= 1")
        _positive("TaskOptions", "result_ttl", self.result_ttl, allow_zero=True)


@dataclass(frozen=True)
class Leases:
    """A running job belongs to its worker for ``timeout`` seconds after the last renewal.

    Renewals run every ``timeout / 3`` from a thread of their own; a worker that stops
    renewing (dead, frozen, partitioned) loses its jobs to XAUTOCLAIM after ``timeout``.
    """

    timeout: float = 30.0
    reclaim_every: float | None = None

    def __post_init__(self) -> None:
        _positive("Leases", "timeout", self.timeout)
        if self.reclaim_every is not None:
            _positive("Leases", "reclaim_every", self.reclaim_every)
        if self.timeout < 0.3:
            raise ConfigurationError("Leases.timeout must be >= 0.3 seconds")

    @property
    def renew_every(self) -> float:
        return self.timeout / 3

    @property
    def reclaim_interval(self) -> float:
        return self.reclaim_every if self.reclaim_every is not None else self.timeout / 2


@dataclass(frozen=True)
class Retention:
    """How much finished history ready streams keep above the safe point.

    Entries that are undelivered or pending are never trimmed, whatever these say.
    """

    keep_count: int = 10_000
    keep_seconds: float = 0
    trim_every: float = 5.0
    max_trim: int = 10_000

    def __post_init__(self) -> None:
        if self.keep_count < 0:
            raise ConfigurationError("Retention.keep_count must be >= 0")
        _positive("Retention", "keep_seconds", self.keep_seconds, allow_zero=True)
        _positive("Retention", "trim_every", self.trim_every)
        _positive("Retention", "max_trim", self.max_trim)


@dataclass(frozen=True)
class WorkerSettings:
    """One worker process: how many jobs at once, from which queues, how it stops.

    ``queues`` None means every queue the app's tasks use. The last three end a worker
    process on its own: ``burst`` once its queues and their delayed sets are empty (exit
    0), ``max_jobs`` after that many jobs and ``max_memory_mb`` past that resident size
    (the supervisor of `conveyor worker` then starts a fresh process; see
    worker/lifetime.py). Every field can also be set with a flag of `conveyor worker`, a
    ``CONVEYOR_*`` environment variable or the app's defaults (see worker_config.py).
    """

    queues: tuple[str, ...] | None = None
    concurrency: int = 10
    #: jobs fetched ahead of a free slot. None adapts: a worker buffers about 50 ms of work
    #: at its recent mean job time (at most max(2 x concurrency, 256) jobs), so fast jobs
    #: come in big batches that hide the fetch round trip, and a worker never sits on long
    #: jobs another worker could start. An int fixes it (0: never).
    prefetch: int | None = None
    leases: Leases = field(default_factory=Leases)
    retention: Retention = field(default_factory=Retention)
    shutdown_grace: float = 30.0
    block_ms: int = 2000
    promote_every: float = 0.25
    max_payload_bytes: int = 1024 * 1024
    #: subprocesses for tasks with ``executor="process"`` (started only when a task asks)
    pool_size: int = 2
    burst: bool = False
    max_jobs: int | None = None
    max_memory_mb: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.queues, str):
            # queues="default" would otherwise be read as the queues d, e, f, a, u, l, t.
            object.__setattr__(self, "queues", (self.queues,))
        _positive("WorkerSettings", "max_payload_bytes", self.max_payload_bytes)
        if self.queues is not None and not self.queues:
            raise ConfigurationError("WorkerSettings.queues must name at least one queue")
        for q in self.queues or ():
            validate_name("queue", q)
        if self.concurrency < 1:
            raise ConfigurationError("WorkerSettings.concurrency must be >= 1")
        _positive("WorkerSettings", "shutdown_grace", self.shutdown_grace, allow_zero=True)
        if not 1 <= self.block_ms <= 10_000:
            raise ConfigurationError("WorkerSettings.block_ms must be within 1..10000")
        _positive("WorkerSettings", "promote_every", self.promote_every)
        if self.prefetch is not None and self.prefetch < 0:
            raise ConfigurationError("WorkerSettings.prefetch must be >= 0")
        positive_int(self.pool_size, "WorkerSettings.pool_size")
        if not isinstance(self.burst, bool):
            raise ConfigurationError(f"WorkerSettings.burst must be a bool, not {self.burst!r}")
        if self.max_jobs is not None and (
            isinstance(self.max_jobs, bool)
            or not isinstance(self.max_jobs, int)
            or self.max_jobs < 1
        ):
            raise ConfigurationError(
                f"WorkerSettings.max_jobs must be an int >= 1, not {self.max_jobs!r} (a process "
                "would restart before its first job); leave it unset (None) for no limit"
            )
        if self.max_memory_mb is not None:
            _positive("WorkerSettings", "max_memory_mb", self.max_memory_mb)
