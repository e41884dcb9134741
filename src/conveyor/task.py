"""Tasks: a registered function plus its options, and the ways to enqueue it."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from . import producer
from .arguments import Arguments
from .broker import Call
from .broker.enqueue_calls import Unique
from .errors import ConfigurationError, NotReplicated
from .expiry import expires_ms
from .hooks import Hooks
from .job import Job, JobHost
from .keys import level_of, validate_name
from .settings import Durability, TaskOptions
from .signing import Signer

if TYPE_CHECKING:
    from .workflows import Chain

P = ParamSpec("P")
R = TypeVar("R")
#: Option fields of an entry (producer.Extra)
Extra = producer.Extra


class _Unset:
    """The default of an option ``using`` leaves as it is (None has a meaning there)."""


UNSET = _Unset()


class TaskHost(JobHost, Protocol):
    """What a task needs of its app (the Conveyor app is one; task.py never imports it)."""

    @property
    def max_payload_bytes(self) -> int: ...

    @property
    def signer(self) -> Signer | None: ...

    @property
    def durability(self) -> Durability | None: ...

    @property
    def hooks(self) -> Hooks: ...

    def enqueue_many(
        self, signatures: Iterable[Signature], *, durability: Durability | None = None
    ) -> list[Job[Any]]: ...

    async def enqueue_many_async(
        self, signatures: Iterable[Signature], *, durability: Durability | None = None
    ) -> list[Job[Any]]: ...


@dataclass(slots=True)
class Signature:
    """A task with its arguments, not yet enqueued: for ``enqueue_many``, and a step of a
    workflow (``extract.s(doc) | analyze.s()`` is ``chain(extract.s(doc), analyze.s())``).

    Not frozen: bulk enqueues build one per job, and a frozen dataclass costs three times as
    much to make (its ``__init__`` goes through ``object.__setattr__``)."""

    task: Task[Any, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __or__(self, other: Signature | Chain) -> Chain:
        from .workflows import chain

        return chain(self, other)


class Task(Generic[P, R]):
    """A function registered with an app. Calling it runs it here; ``enqueue`` runs it later."""

    def __init__(
        self,
        app: TaskHost,
        fn: Callable[P, R] | Callable[P, Awaitable[R]],
        name: str,
        options: TaskOptions,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = validate_name("task", name)
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        #: the function's parameters and type hints, and how JSON arguments bind to them
        self.arguments = Arguments(fn, self.name)
        self.signature = self.arguments.signature
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._unique: Unique | None = None
        self._durability: Durability | None = None
        #: stream fields of the options (expires, unique until done); None for a plain task,
        #: whose enqueue stays one XADD of the same fields as ever
        self._extra: dict[str, str | int] | None = None
        self._set_extra()

    def _set_extra(self) -> None:
        extra = producer.option_fields(expires_ms(self.options.expires), self._unique)
        self._extra = extra or None

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | Awaitable[R]:
        return self.fn(*args, **kwargs)

    def using(
        self,
        *,
        queue: str | None = None,
        priority: str | None = None,
        unique_key: str | None = None,
        unique_for: float | None = 3600.0,
        expires: float | _Unset | None = UNSET,
        wait_replicas: int | None = None,
        wait_timeout: float = 1.0,
        wait_aof: bool = False,
    ) -> Task[P, R]:
        """The same task with options for the next enqueues, kept apart from task arguments.

        ``unique_key``: at most one job per key is added within ``unique_for`` seconds; an
        enqueue with a taken key returns the first job (``job.created`` is False). Use it to
        retry an enqueue safely after a timeout, or to collapse duplicate requests.
        ``unique_for=None`` holds the key until the job ends (done, dead, cancelled or
        expired), freed by the same step that ends it: one job per key at a time.

        ``expires``: seconds the job may wait to start (from when it becomes ready); a job
        not started by then is not run and ends ``expired`` (``None`` turns the task's
        option off for these enqueues).

        ``wait_replicas``: after adding, wait up to ``wait_timeout`` seconds until that many
        replicas have the job (``WAIT``; with ``wait_aof``, fsynced to AOF: ``WAITAOF``,
        Redis 7.2+), else raise NotReplicated. Overrides the app's ``durability``;
        ``wait_replicas=0`` turns it off for these enqueues.
        """
        changes: dict[str, Any] = {}
        if queue is not None:
            changes["queue"] = queue
        if priority is not None:
            changes["priority"] = level_of(priority)
        if not isinstance(expires, _Unset):
            expires_ms(expires)  # ConfigurationError naming the option
            changes["expires"] = expires
        clone: Task[P, R] = Task(self.app, self.fn, self.name, replace(self.options, **changes))
        clone._unique = self._unique
        clone._durability = self._durability
        if wait_replicas is not None:
            clone._durability = Durability(wait_replicas, wait_timeout, wait_aof)
        if unique_key is not None:
            clone._unique = Unique(validate_unique_key(unique_key), unique_window_ms(unique_for))
        clone._set_extra()
        return clone

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A call of this task to enqueue later: in ``enqueue_many``, or as a workflow step.

        Not typed with the task's parameters on purpose: a chain step (or a chord callback)
        gets its first argument from the step before it, so its signature is partial, which
        a ParamSpec cannot express. ``chain``/``chord`` check steps against the function's
        signature when they are built, and the worker checks every job before it runs.
        """
        return Signature(self, args, kwargs)  # both fresh: *args and **kwargs are copies

    # -- arguments (arguments.py) -----------------------------------------------------------
    def bind(self, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Check a job's arguments against the function and convert them (Arguments.bind)."""
        return self.arguments.bind(args, kwargs)

    def convert_result(self, value: Any) -> R:
        """The JSON result as the task's declared return type, when that can be built."""
        return self.arguments.convert_result(value)  # type: ignore[no-any-return]

    @property
    def result_type(self) -> Any:
        return self.arguments.result_type

    def hint_for(self, key: int | str) -> tuple[str, Any]:
        return self.arguments.hint_for(key)

    # -- enqueueing ---------------------------------------------------------------------------
    def _wanted(self) -> Durability | None:
        return self._durability if self._durability is not None else self.app.durability

    @property
    def durability(self) -> Durability | None:
        """What enqueues wait for: this task's ``using(wait_replicas=...)``, else the app's."""
        return active(self._wanted())

    def _job(self, added: tuple[bool, str]) -> Job[R]:
        created, job_id = added
        return Job(self.app, job_id, self.convert_result, created=created)

    def _immediate(
        self, args: Sequence[Any], kwargs: dict[str, Any], extra: Extra | _Unset | None = UNSET
    ) -> Call[tuple[bool, str]]:
        o = self.options
        return producer.immediate(
            self.app.keys(o.queue),
            o.priority,
            self.name,
            args,
            kwargs,
            self.app.max_payload_bytes,
            self._unique,
            self.app.signer,
            self.hint_for,
            self._extra if isinstance(extra, _Unset) else extra,
        )

    def _scheduled(
        self,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        delay_ms: int = 0,
        at_ms: int | None = None,
        extra: Extra | _Unset | None = UNSET,
    ) -> Call[tuple[bool, str]]:
        o = self.options
        return producer.scheduled(
            self.app.keys(o.queue),
            o.priority,
            self.name,
            args,
            kwargs,
            self.app.max_payload_bytes,
            delay_ms=delay_ms,
            at_ms=at_ms,
            unique=self._unique,
            signer=self.app.signer,
            hints=self.hint_for,
            extra=self._extra if isinstance(extra, _Unset) else extra,
        )

    def _add(self, call: Call[tuple[bool, str]]) -> tuple[bool, str]:
        try:
            return self.app.broker.call(call, self.durability)
        except NotReplicated as exc:
            exc.added = [self._job(a) for a in exc.added if a is not None]
            raise

    async def _aadd(self, call: Call[tuple[bool, str]]) -> tuple[bool, str]:
        try:
            return await self.app.broker.acall(call, self.durability)
        except NotReplicated as exc:
            exc.added = [self._job(a) for a in exc.added if a is not None]
            raise

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Add a job and return its handle at once (one XADD)."""
        if self.app.hooks.active:
            return self._observed(lambda x: self._add(self._immediate(args, kwargs, x)))
        return self._job(self._add(self._immediate(args, kwargs)))

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        if self.app.hooks.active:
            return await self._aobserved(lambda x: self._aadd(self._immediate(args, kwargs, x)))
        return self._job(await self._aadd(self._immediate(args, kwargs)))

    def enqueue_in(self, delay: float | timedelta, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Run after ``delay`` seconds, counted on Redis' clock."""
        if self.app.hooks.active:
            return self._observed(
                lambda x: self._add(self._scheduled(args, kwargs, delay_ms=_ms(delay), extra=x))
            )
        call = self._scheduled(args, kwargs, delay_ms=_ms(delay))
        return self._job(self._add(call))

    async def enqueue_in_async(
        self, delay: float | timedelta, *args: P.args, **kwargs: P.kwargs
    ) -> Job[R]:
        if self.app.hooks.active:
            return await self._aobserved(
                lambda x: self._aadd(self._scheduled(args, kwargs, delay_ms=_ms(delay), extra=x))
            )
        call = self._scheduled(args, kwargs, delay_ms=_ms(delay))
        return self._job(await self._aadd(call))

    def enqueue_at(self, when: datetime | float, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Run at a datetime (naive means UTC) or a UNIX timestamp."""
        at_ms = producer.epoch_ms(when)
        if self.app.hooks.active:
            return self._observed(
                lambda x: self._add(self._scheduled(args, kwargs, at_ms=at_ms, extra=x))
            )
        return self._job(self._add(self._scheduled(args, kwargs, at_ms=at_ms)))

    async def enqueue_at_async(
        self, when: datetime | float, *args: P.args, **kwargs: P.kwargs
    ) -> Job[R]:
        at_ms = producer.epoch_ms(when)
        if self.app.hooks.active:
            return await self._aobserved(
                lambda x: self._aadd(self._scheduled(args, kwargs, at_ms=at_ms, extra=x))
            )
        return self._job(await self._aadd(self._scheduled(args, kwargs, at_ms=at_ms)))

    def _observed(self, add: Callable[[Extra | None], tuple[bool, str]]) -> Job[R]:
        """An enqueue the app's hooks see: middleware fields in the entry (trace context),
        then ``enqueued`` once it is added (not for a unique key's earlier job)."""
        seen = self.app.hooks.enqueuing(self.name, self.options.queue)
        try:
            added = add(seen.extra(self._extra))
        except BaseException as exc:
            seen.added([], exc)
            raise
        seen.added([(added[1], self.name, self.options.queue)] if added[0] else [], None)
        return self._job(added)

    async def _aobserved(
        self, add: Callable[[Extra | None], Awaitable[tuple[bool, str]]]
    ) -> Job[R]:
        seen = self.app.hooks.enqueuing(self.name, self.options.queue)
        try:
            added = await add(seen.extra(self._extra))
        except BaseException as exc:
            seen.added([], exc)
            raise
        seen.added([(added[1], self.name, self.options.queue)] if added[0] else [], None)
        return self._job(added)

    def enqueue_many(self, calls: Iterable[Sequence[Any] | Signature]) -> list[Job[R]]:
        """Add many jobs in one pipeline per batch: each item is an args tuple or ``task.s()``."""
        return self.app.enqueue_many(self._signatures(calls), durability=self._wanted())

    async def enqueue_many_async(self, calls: Iterable[Sequence[Any] | Signature]) -> list[Job[R]]:
        return await self.app.enqueue_many_async(self._signatures(calls), durability=self._wanted())

    def _signatures(self, calls: Iterable[Sequence[Any] | Signature]) -> list[Signature]:
        return [c if isinstance(c, Signature) else Signature(self, tuple(c), {}) for c in calls]


def active(d: Durability | None) -> Durability | None:
    """``d`` unless it asks for nothing (``wait_replicas=0`` turns an app default off)."""
    return d if d is not None and (d.replicas > 0 or d.aof) else None


def _ms(delay: float | timedelta) -> int:
    return producer.delay_ms(delay)


def unique_window_ms(unique_for: float | None) -> int:
    """``unique_for`` in ms; 0 means until the job ends (``None``)."""
    if unique_for is None:
        return 0
    if isinstance(unique_for, bool) or not isinstance(unique_for, (int, float)):
        raise ConfigurationError(
            f"unique_for must be a number of seconds, or None (until the job ends), "
            f"not {unique_for!r}"
        )
    if not math.isfinite(unique_for) or unique_for < 0.001:
        raise ConfigurationError(
            f"unique_for must be at least 0.001 seconds, or None (until the job ends), "
            f"not {unique_for!r}"
        )
    return int(unique_for * 1000)


def validate_unique_key(key: str) -> str:
    if not key or len(key) > 256 or any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigurationError(
            f"unique_key must be 1-256 printable characters without spaces, not {key!r}"
        )
    return key
