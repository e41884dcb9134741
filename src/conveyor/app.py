"""The Conveyor app: where tasks are registered and how code reaches its Redis."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from .backoff import Backoff
from .broker import Broker, ClientOptions
from .cron import CronSchedule
from .errors import ConfigurationError, EnqueueRejected, TaskNotFound
from .job import Job
from .keys import QueueKeys, parse_job_id, validate_name
from .settings import TaskOptions
from .signing import Signer
from .task import Signature, Task
from .wire import DEFAULT_MAX_BYTES

P = ParamSpec("P")
R = TypeVar("R")

#: Jobs per pipeline in enqueue_many: large enough to amortize the round trip, small enough
#: not to hold Redis for long.
BATCH = 500
TASK_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TaskOptions))


class TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...


class Conveyor:
    """A registry of tasks bound to one Redis (URL, or CONVEYOR_REDIS_URL, REDIS_URL, localhost).

    ``namespace`` prefixes every key, so several apps can share one Redis.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = "conveyor",
        default_queue: str = "default",
        client_options: ClientOptions | None = None,
        max_payload_bytes: int = DEFAULT_MAX_BYTES,
        signing_keys: Sequence[bytes | str] | None = None,
        redact: Callable[[str, dict[str, str]], dict[str, str]] | None = None,
    ) -> None:
        self.namespace = validate_name("namespace", namespace)
        self.default_queue = validate_name("queue", default_queue)
        self.broker = Broker(url, client_options)
        self.max_payload_bytes = max_payload_bytes
        #: signs every job this app enqueues; its workers run only jobs signed with a key
        self.signer = Signer(signing_keys) if signing_keys else None
        self._redact = redact
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: list[CronSchedule] = []
        self._keys: dict[str, QueueKeys] = {}

    @property
    def url(self) -> str:
        return self.broker.url

    def __repr__(self) -> str:
        return f"<Conveyor {self.namespace} tasks={len(self.tasks)}>"

    def rebind(self, *, url: str | None = None, namespace: str | None = None) -> None:
        """Point the app at another Redis or namespace before it is used (CLI overrides)."""
        if url:
            self.broker.close()
            self.broker = Broker(url, self.broker.options)
        if namespace:
            self.namespace = validate_name("namespace", namespace)
            self._keys.clear()

    def redacted(self, fields: dict[str, str]) -> dict[str, str]:
        """A job's fields as views may show them (CLI, dead letters, history).

        The ``redact`` hook given to the app gets the task name and the fields, and returns
        what may be displayed (e.g. with personal data in ``args`` masked).
        """
        if self._redact is None:
            return fields
        return self._redact(fields.get("task", ""), dict(fields))

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys(self.namespace, queue)
        return keys

    # -- registering --------------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: str = "normal",
        retries: int = 3,
        backoff: Backoff | float | None = None,
        timeout: float | None = None,
        max_deliveries: int = 5,
        result_ttl: float = 24 * 3600,
    ) -> TaskDecorator: ...

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Any:
        """Register a function (async or sync) as a task; usable bare or with options.

        Options are those of TaskOptions; ``backoff`` may also be a base delay in seconds
        (exponential, full jitter).
        """
        unknown = set(options) - TASK_OPTION_NAMES
        if unknown:
            raise ConfigurationError(
                f"unknown task option(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(sorted(TASK_OPTION_NAMES))}"
            )
        backoff = options.get("backoff")
        if isinstance(backoff, int | float):
            options["backoff"] = Backoff(base=float(backoff))
        elif backoff is None:
            options.pop("backoff", None)
        if options.get("queue") is None:
            options["queue"] = self.default_queue
        task_options = TaskOptions(**options)

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f.__name__
            if task_name in self.tasks:
                raise ConfigurationError(
                    f"a task named {task_name!r} is already registered; pass name=... to one"
                )
            t: Task[Any, Any] = Task(self, f, task_name, task_options)
            self.tasks[task_name] = t
            return t

        return register(fn) if fn is not None else register

    def cron(
        self, expression: str, *, grace: float = 60.0, **options: Any
    ) -> Callable[[Callable[[], Any]], Task[[], Any]]:
        """Register a task that runs at every tick of a cron expression (UTC), once per tick.

        Takes the options of ``task``; the function takes no arguments.
        """

        def register(fn: Callable[[], Any]) -> Task[[], Any]:
            t: Task[[], Any] = self.task(**options)(fn)
            try:
                self.schedules.append(CronSchedule(expression, t, grace))
            except ConfigurationError:
                del self.tasks[t.name]
                raise
            return t

        return register

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise TaskNotFound(f"no task named {name!r} (registered: {known})") from None

    # -- jobs -----------------------------------------------------------------------------------
    def job(self, job_id: str) -> Job[Any]:
        """A handle on any job, from its id alone."""
        parse_job_id(job_id)
        return Job(self, job_id)

    def enqueue(self, task_name: str, *args: Any, **kwargs: Any) -> Job[Any]:
        """Enqueue a registered task by name."""
        return self.get_task(task_name).enqueue(*args, **kwargs)

    def enqueue_many(self, signatures: Iterable[Signature]) -> list[Job[Any]]:
        """Enqueue many jobs (any tasks) with one pipelined round trip per batch of 500."""
        sigs = list(signatures)
        jobs: list[Job[Any]] = []
        for start in range(0, len(sigs), BATCH):
            batch = sigs[start : start + BATCH]
            calls = [s.task._immediate(s.args, s.kwargs) for s in batch]
            try:
                ids = self.broker.call_many(calls)
            except EnqueueRejected as exc:
                raise _partial(exc, jobs, batch, len(sigs)) from exc
            jobs += [s.task._job(i) for s, i in zip(batch, ids, strict=True)]
        return jobs

    async def enqueue_many_async(self, signatures: Iterable[Signature]) -> list[Job[Any]]:
        sigs = list(signatures)
        jobs: list[Job[Any]] = []
        for start in range(0, len(sigs), BATCH):
            batch = sigs[start : start + BATCH]
            calls = [s.task._immediate(s.args, s.kwargs) for s in batch]
            try:
                ids = await self.broker.acall_many(calls)
            except EnqueueRejected as exc:
                raise _partial(exc, jobs, batch, len(sigs)) from exc
            jobs += [s.task._job(i) for s, i in zip(batch, ids, strict=True)]
        return jobs

    def close(self) -> None:
        self.broker.close()

    async def aclose(self) -> None:
        await self.broker.aclose()


def _partial(
    exc: EnqueueRejected, earlier: list[Job[Any]], batch: list[Signature], total: int
) -> EnqueueRejected:
    """Redis refused part of a bulk enqueue: say which jobs were added, so none is sent twice."""
    added = earlier + [
        s.task._job(reply) for s, reply in zip(batch, exc.added, strict=True) if reply is not None
    ]
    return EnqueueRejected(
        f"{len(added)} of {total} jobs were added before Redis refused the rest: {exc}",
        added=added,
    )
