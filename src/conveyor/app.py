"""The Conveyor app: where tasks are registered and how code reaches its Redis."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from . import bulk
from .backoff import Backoff
from .broker import Broker, ClientOptions
from .context import JobContext
from .cron import CronSchedule
from .errors import (
    ConfigurationError,
    TaskNotFound,
)
from .events import EventStream
from .hooks import Hooks, Middleware
from .job import Job
from .keys import QueueKeys, parse_job_id, validate_name
from .schedules import DEFAULT_MISFIRE_CAP, Misfire, SchedulePolicy
from .settings import Durability, TaskOptions, WorkerSettings
from .signing import Signer
from .task import Signature, Task, active
from .wire import DEFAULT_MAX_BYTES

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

TASK_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TaskOptions))
#: Makes the context manager entered around one run of a task (see Conveyor.around_task).
AroundTask = Callable[[JobContext], AbstractContextManager[object]]


class TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...


class Conveyor:
    """A registry of tasks bound to one Redis (URL, or CONVEYOR_REDIS_URL, REDIS_URL, localhost).

    ``namespace`` prefixes every key, so several apps can share one Redis. ``worker`` holds
    the defaults of this app's workers; flags of `conveyor worker` and ``CONVEYOR_*``
    variables override them field by field (see worker_config.py).
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
        durability: Durability | None = None,
        worker: WorkerSettings | None = None,
        events: bool | EventStream = False,
    ) -> None:
        self.namespace = validate_name("namespace", namespace)
        self.default_queue = validate_name("queue", default_queue)
        self.broker = Broker(url, client_options)
        self.max_payload_bytes = max_payload_bytes
        #: signs every job this app enqueues; its workers run only jobs signed with a key
        self.signer = Signer(signing_keys) if signing_keys else None
        self._redact = redact
        #: what every enqueue waits for unless a task's ``using(wait_replicas=...)`` says
        #: otherwise: replicas (WAIT) and AOF fsyncs (WAITAOF); see Durability
        self.durability = durability
        if worker is not None and not isinstance(worker, WorkerSettings):
            raise ConfigurationError(
                f"worker= takes a WorkerSettings(...), not {type(worker).__name__}"
            )
        #: what a worker of this app uses where no flag or CONVEYOR_* variable says otherwise
        self.worker_settings = worker or WorkerSettings()
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: list[CronSchedule] = []
        #: context managers entered around every task run by this app's workers
        self.task_wrappers: list[AroundTask] = []
        self._keys: dict[str, QueueKeys] = {}
        #: hooks, middleware (metrics, tracing) and the events stream: see hooks.py
        self.hooks = Hooks()
        if events:
            self.hooks.enable_events(EventStream() if events is True else events)

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

    def around_task(self, factory: AroundTask) -> AroundTask:
        """Enter ``factory(job)`` around every run of this app's tasks in its workers.

        What a framework needs around a task (Flask's application context, a tenant's
        settings) without wrapping each function. The context manager is entered where the
        function runs: in its thread for a sync task, in the job's own context for an async
        one (so a ContextVar it sets is the task's alone). An exception from it is that
        run's failure. Tasks with ``executor="process"`` run in a subprocess and get none.
        Workers read the list when they start; usable as a decorator.
        """
        self.task_wrappers.append(factory)
        return factory

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
        rate: str | None = None,
        rate_burst: int = 1,
        rate_key: Callable[..., Any] | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[..., Any] | None = None,
        expires: float | None = None,
        executor: str = "thread",
        batch_size: int | None = None,
        batch_wait: float = 0.05,
    ) -> TaskDecorator: ...

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Any:
        """Register a function (async or sync) as a task; usable bare or with options.

        Options are those of TaskOptions; ``backoff`` may also be a base delay in seconds
        (exponential, full jitter). Each is checked here, so a bad one fails at import
        (ConfigurationError naming it), not in a worker hours later: ``executor="process"``
        needs a sync function importable by name from a module (no lambda, no nested
        function), since a subprocess imports it to run it.
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
            _check_streaming_and_batches(f, task_name, task_options)
            if task_options.executor == "process":
                _check_process_task(f, task_name)
            t: Task[Any, Any] = Task(self, f, task_name, task_options)
            self.tasks[task_name] = t
            return t

        return register(fn) if fn is not None else register

    def cron(
        self,
        expression: str,
        *,
        grace: float = 60.0,
        tz: str = "UTC",
        misfire: Misfire = "skip",
        misfire_cap: int = DEFAULT_MISFIRE_CAP,
        **options: Any,
    ) -> Callable[[Callable[[], Any]], Task[[], Any]]:
        """Register a task that runs at every tick of a cron expression, once per tick.

        The expression is read in ``tz`` (an IANA zone; UTC by default). ``misfire`` says
        what becomes of ticks missed while no worker ran: ``"skip"`` (fire a tick only
        within ``grace`` seconds), ``"once"`` (fire the latest missed tick once) or
        ``"all"`` (each missed tick, at most ``misfire_cap``). Takes the options of
        ``task``; the function takes no arguments.
        """
        # Checked before the decorated function is seen, so a bad option registers nothing.
        SchedulePolicy(expression, tz, misfire, misfire_cap, grace)

        def register(fn: Callable[[], Any]) -> Task[[], Any]:
            t: Task[[], Any] = self.task(**options)(fn)
            try:
                self.schedules.append(CronSchedule(expression, t, grace, tz, misfire, misfire_cap))
            except ConfigurationError:
                del self.tasks[t.name]
                raise
            return t

        return register

    def on(self, kind: str) -> Callable[[F], F]:
        """Register a hook: ``@app.on("failed")`` calls the function with a JobEvent at each
        failed attempt. Kinds: enqueued, started, succeeded, failed, retried, dead,
        cancelled. A hook that raises is logged and never fails the job."""
        return self.hooks.on(kind)

    def use(self, middleware: Middleware) -> None:
        """Register a middleware object (a ``conveyor.hooks.Middleware`` subclass)."""
        self.hooks.use(middleware)

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

    def enqueue_many(
        self, signatures: Iterable[Signature], *, durability: Durability | None = None
    ) -> list[Job[Any]]:
        """Enqueue many jobs (any tasks), one round trip per batch of 500: a script per ready
        stream adds each batch's jobs all at once, or none of them at the memory limit.

        ``durability`` (default: the app's) waits for replicas after each batch."""
        d = active(self.durability if durability is None else durability)
        return bulk.enqueue_many(self, list(signatures), d)

    async def enqueue_many_async(
        self, signatures: Iterable[Signature], *, durability: Durability | None = None
    ) -> list[Job[Any]]:
        d = active(self.durability if durability is None else durability)
        return await bulk.enqueue_many_async(self, list(signatures), d)

    def close(self) -> None:
        self.broker.close()

    async def aclose(self) -> None:
        await self.broker.aclose()


def _check_process_task(fn: Callable[..., Any], name: str) -> None:
    """A process-pool task must be sync and importable by a subprocess (by module and name)."""
    if inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"task {name!r}: executor='process' runs sync functions only, and "
            f"{fn.__qualname__} is async; drop executor='process' (async tasks run on the "
            "worker's event loop) or make it a plain def"
        )
    from .worker.process_pool import task_ref

    task_ref(fn)


def _check_streaming_and_batches(fn: Callable[..., Any], name: str, o: TaskOptions) -> None:
    """Generator tasks stream through the worker's Redis connection and batch tasks take one
    list: refuse the combinations that cannot work, at import."""
    generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    if generator and o.executor == "process":
        raise ConfigurationError(
            f"task {name!r}: a generator task streams its chunks through the worker's Redis "
            "connection, which the process pool does not have; drop executor='process'"
        )
    if o.batch_size is None:
        return
    if generator:
        raise ConfigurationError(
            f"task {name!r}: a generator task cannot take batch_size (one call serves many "
            "jobs, so its chunks would belong to none); return one result per item instead"
        )
    if o.executor == "process":
        raise ConfigurationError(
            f"task {name!r}: batch_size runs on threads or the event loop, not "
            "executor='process'; drop one of the two"
        )
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 1 or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise ConfigurationError(
            f"task {name!r}: a batch task (batch_size={o.batch_size}) takes exactly one "
            f"positional parameter, the list of items (e.g. def {fn.__name__}(items: "
            "list[str]) -> list[...]), and each job is enqueued with one item"
        )
