"""ConveyorBackend: Django's task framework with Conveyor underneath.

A Django ``@task`` function becomes a Conveyor task named by its module path
(``notes.tasks.summarize``), so jobs are ordinary Conveyor jobs: `conveyor stats`, `conveyor
status`, dead letters and the dashboard see them. A worker runs only the tasks it has
imported (``manage.py conveyor_worker`` imports each installed app's ``tasks`` module), never
a function named by a payload.

Mapping: ``queue_name`` is the Conveyor queue; ``priority`` (-100..100) picks the ready
stream: above 0 high, 0 normal, below 0 low; ``run_after`` is ``enqueue_at``. A result's id
is the Conveyor job id. Status: scheduled, queued and retrying are READY; running is
RUNNING; done is SUCCESSFUL; dead, cancelled and expired are FAILED. A result read back
carries args, kwargs and enqueued_at from the job's stream entry (or delayed payload) while
Redis keeps it. Django's signals are sent as its own backends send them: ``task_enqueued``
on enqueue, ``task_started``/``task_finished`` by the worker around each attempt.

Enqueue happens when ``enqueue()`` is called. Inside a transaction, enqueue after the commit
as Django documents, so a worker never looks for rows it cannot see yet:
``transaction.on_commit(partial(my_task.enqueue, obj.pk))``.

``TASKS[alias]`` keys: ``BACKEND``, ``QUEUES`` (default ``["default"]``; what the worker
serves) and ``OPTIONS``: ``URL`` (default: CONVEYOR_REDIS_URL, REDIS_URL, localhost),
``NAMESPACE`` (default ``"conveyor"``), ``RETRIES`` (default 0: a task that raises ends
FAILED, as with Django's own backends), ``TIMEOUT`` (seconds, default none) and
``RESULT_TTL`` (seconds a result is kept, default a day). Any other key is refused with
the list of valid ones.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import traceback as tb
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec
from asgiref.sync import sync_to_async
from django.db import close_old_connections

from ..app import Conveyor
from ..context import current_job
from ..errors import ConfigurationError
from ..job import Job, JobInfo, JobState
from ..keys import parse_job_id, validate_name
from ..task import Task as ConveyorTask
from ..wire import JobRecord, decode_json
from .compat import (
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
    task_finished,
    task_started,
)

log = logging.getLogger("conveyor.django")

SETTINGS_KEYS = frozenset({"BACKEND", "QUEUES", "OPTIONS"})
OPTION_KEYS = frozenset({"URL", "NAMESPACE", "RETRIES", "TIMEOUT", "RESULT_TTL"})
DEFAULT_NAMESPACE = "conveyor"
DEFAULT_RESULT_TTL = 24 * 3600.0

STATUS = {
    JobState.SCHEDULED: TaskResultStatus.READY,
    JobState.QUEUED: TaskResultStatus.READY,
    JobState.RETRYING: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.DONE: TaskResultStatus.SUCCESSFUL,
    JobState.DEAD: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
    JobState.EXPIRED: TaskResultStatus.FAILED,
}

#: Every Django task validated in this process, by module path: what a worker can run.
_known: dict[str, Any] = {}
#: One Conveyor app per backend configuration, shared by the threads of a process (Django
#: makes a backend object per thread).
_apps: dict[tuple[Any, ...], Conveyor] = {}
_lock = threading.Lock()


def level_for(priority: int) -> str:
    """Django's priority (-100..100) as one of Conveyor's three ready streams."""
    return "high" if priority > 0 else "low" if priority < 0 else "normal"


def _check_settings(alias: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The OPTIONS, checked: a misspelled key must not be silently ignored."""
    unknown = set(params) - SETTINGS_KEYS
    if unknown:
        raise InvalidTaskBackend(
            f"TASKS[{alias!r}] has unknown key(s) {', '.join(sorted(unknown))}; "
            f"ConveyorBackend takes {', '.join(sorted(SETTINGS_KEYS))}"
        )
    options = params.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        raise InvalidTaskBackend(f"TASKS[{alias!r}]['OPTIONS'] must be a dict")
    unknown = set(options) - OPTION_KEYS
    if unknown:
        raise InvalidTaskBackend(
            f"TASKS[{alias!r}]['OPTIONS'] has unknown option(s) {', '.join(sorted(unknown))}; "
            f"ConveyorBackend's options are {', '.join(sorted(OPTION_KEYS))}"
        )
    retries = options.get("RETRIES", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidTaskBackend(
            f"TASKS[{alias!r}]['OPTIONS']['RETRIES'] must be a whole number >= 0, not {retries!r}"
        )
    return dict(options)


def _app_for(alias: str, options: Mapping[str, Any]) -> Conveyor:
    key = (alias, *(repr(options.get(k)) for k in sorted(OPTION_KEYS)))
    with _lock:
        app = _apps.get(key)
        if app is None:
            try:
                app = Conveyor(
                    options.get("URL"), namespace=options.get("NAMESPACE") or DEFAULT_NAMESPACE
                )
            except ConfigurationError as exc:
                raise InvalidTaskBackend(f"TASKS[{alias!r}]: {exc}") from None
            _apps[key] = app
    return app


class ConveyorBackend(BaseTaskBackend):
    """Enqueues Django tasks as Conveyor jobs; ``manage.py conveyor_worker`` runs them."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        options = _check_settings(alias, params)
        super().__init__(alias, params)
        self.conveyor = _app_for(alias, options)
        self._task_options: dict[str, Any] = {
            "retries": options.get("RETRIES", 0),
            "timeout": options.get("TIMEOUT"),
            "result_ttl": options.get("RESULT_TTL", DEFAULT_RESULT_TTL),
        }
        try:  # a bad TIMEOUT or RESULT_TTL is refused here, not at the first enqueue
            from ..settings import TaskOptions

            TaskOptions(**self._task_options)
        except ConfigurationError as exc:
            raise InvalidTaskBackend(f"TASKS[{alias!r}]['OPTIONS']: {exc}") from None

    # -- Django's side ------------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        try:
            validate_name("task", task.module_path)
            validate_name("queue", task.queue_name)
        except ConfigurationError as exc:
            raise InvalidTask(str(exc)) from None
        _known[task.module_path] = task

    def enqueue(self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        self.validate_task(task)
        routed = self._routed(task)
        if task.run_after is not None:
            job = routed.enqueue_at(task.run_after, *args, **kwargs)
        else:
            job = routed.enqueue(*args, **kwargs)
        result = self._queued(task, job, args, kwargs)
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        self.validate_task(task)
        routed = self._routed(task)
        if task.run_after is not None:
            job = await routed.enqueue_at_async(task.run_after, *args, **kwargs)
        else:
            job = await routed.enqueue_async(*args, **kwargs)
        result = self._queued(task, job, args, kwargs)
        await sync_to_async(task_enqueued.send)(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        try:
            job = self.conveyor.job(result_id)
        except ConfigurationError as exc:
            raise TaskResultDoesNotExist(str(exc)) from None
        return self._result(job, job.info())

    async def aget_result(self, result_id: str) -> Any:
        try:
            job = self.conveyor.job(result_id)
        except ConfigurationError as exc:
            raise TaskResultDoesNotExist(str(exc)) from None
        info = await job.info_async()
        return await sync_to_async(self._result)(job, info)

    # -- Conveyor's side ----------------------------------------------------------------------
    def conveyor_task(self, task: Any) -> ConveyorTask[Any, Any]:
        """The Conveyor task that runs ``task`` (registered on first use)."""
        name = task.module_path
        with _lock:
            registered = self.conveyor.tasks.get(name)
            if registered is None:
                registered = self.conveyor.task(name=name, **self._task_options)(runner(task))
        return registered

    def worker_app(self) -> Conveyor:
        """The Conveyor app with every Django task of this backend known in this process
        registered: what ``manage.py conveyor_worker`` runs."""
        for task in list(_known.values()):
            if task.backend == self.alias:
                self.conveyor_task(task)
        return self.conveyor

    def _routed(self, task: Any) -> ConveyorTask[Any, Any]:
        return self.conveyor_task(task).using(
            queue=task.queue_name, priority=level_for(task.priority)
        )

    def _queued(
        self, task: Any, job: Job[Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        return TaskResult(
            task=task,
            id=job.id,
            status=TaskResultStatus.READY,
            enqueued_at=datetime.now(timezone.utc),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    def _result(self, job: Job[Any], info: JobInfo) -> Any:
        status = STATUS.get(info.state)
        if status is None or (info.state is JobState.EXPIRED and not info.expired_by_option):
            raise TaskResultDoesNotExist(
                f"no task result {job.id!r} (unknown, or its record's RESULT_TTL has passed)"
            )
        record = info.record
        envelope = self._envelope(job, record)
        name = record.task if record is not None and record.task else envelope.get("task")
        task = _known.get(name) if name else None
        if task is None:
            raise TaskResultDoesNotExist(
                f"task result {job.id!r} is for task {name or '(unknown)'}, which is not "
                "imported in this process: import its module (or run autodiscovery) first"
            )
        finished = (
            datetime.fromtimestamp(record.finished_at / 1000, timezone.utc)
            if record is not None and record.finished_at
            else None
        )
        attempts = record.attempt if record is not None and record.attempt else 0
        if info.state is JobState.RUNNING:
            attempts = max(attempts, 1)
        worker = record.worker if record is not None and record.worker else ""
        errors = []
        if record is not None and record.error and status is TaskResultStatus.FAILED:
            errors.append(
                TaskError(
                    exception_class_path=_exception_path(record.error, record.traceback),
                    traceback=record.traceback or record.error,
                )
            )
        result = TaskResult(
            task=task,
            id=job.id,
            status=status,
            enqueued_at=_envelope_time(envelope) or _enqueued_at(job.id),
            started_at=None,
            finished_at=finished,
            last_attempted_at=finished,
            args=_decoded(envelope, "args", list) or [],
            kwargs=_decoded(envelope, "kwargs", dict) or {},
            backend=self.alias,
            errors=errors,
            worker_ids=[worker] * attempts,  # Django counts attempts as worker ids
        )
        if status is TaskResultStatus.SUCCESSFUL and record is not None:
            object.__setattr__(result, "_return_value", record.result)
        return result

    def _envelope(self, job: Job[Any], record: JobRecord | None) -> dict[str, str]:
        """The job's envelope as text fields (task, args, kwargs, enqueued_at...), read from
        its stream entry (queued, running, done until trimmed) or its delayed payload
        (scheduled); empty once it is gone from both."""
        loc = parse_job_id(job.id)
        level, entry = loc.level, loc.entry_id
        if record is not None and record.level and record.entry:  # moved: where it is now
            level, entry = record.level, record.entry
        keys = self.conveyor.keys(loc.queue)
        client = self.conveyor.broker.client
        if level is not None and entry is not None:
            found = client.xrange(keys.stream(level), entry, entry)
            if not found:
                return {}
            return {
                k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in found[0][1].items()
            }
        payload = client.hget(keys.payloads, job.id)
        fields = decode_json(payload) if payload else None
        if not isinstance(fields, dict):
            return {}
        return {str(k): v for k, v in fields.items() if isinstance(v, str)}


def _decoded(envelope: Mapping[str, str], name: str, kind: type) -> Any:
    """A JSON field of the envelope, if it is there and of the expected kind."""
    try:
        value = decode_json(envelope[name])
    except (KeyError, msgspec.DecodeError):
        return None
    return value if isinstance(value, kind) else None


def _envelope_time(envelope: Mapping[str, str]) -> datetime | None:
    raw = envelope.get("enqueued_at", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    return datetime.fromtimestamp(int(raw) / 1000, timezone.utc)


def _enqueued_at(job_id: str) -> datetime | None:
    """When a job first entered a stream: its id is that stream entry's (milliseconds). A
    job enqueued delayed has an id of its own, which carries no time."""
    entry = parse_job_id(job_id).entry_id
    return datetime.fromtimestamp(int(entry.split("-")[0]) / 1000, timezone.utc) if entry else None


def _exception_path(error: str, traceback: str | None) -> str:
    """The dotted class of a failure, from the traceback's last line (``pkg.mod.Error: ...``),
    else from the error (``ValueError: ...``); builtins get their module named."""
    last = traceback.strip().splitlines()[-1] if traceback and traceback.strip() else error
    name = last.split(":", 1)[0].strip() or "Exception"
    return name if "." in name else f"builtins.{name}"


def runner(task: Any) -> Callable[..., Any]:
    """The function a Conveyor worker runs for a Django task: the task's function (with its
    context when it takes one), with database connections closed before and after it, as
    Django's request cycle does (``close_old_connections``), so a worker thread never keeps
    a broken connection or one past CONN_MAX_AGE. Each attempt sends Django's
    ``task_started`` and ``task_finished`` signals, as Django's own backends do."""
    fn = task.func
    signature = inspect.signature(fn)
    if task.takes_context:
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    def started(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        job = current_job()
        now = datetime.now(timezone.utc)
        result = TaskResult(
            task=task,
            id=job.id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=_enqueued_at(job.id),
            started_at=now,
            finished_at=None,
            last_attempted_at=now,
            args=list(args),
            kwargs=dict(kwargs),
            backend=task.backend,
            errors=[],
            worker_ids=[job.worker] * job.attempt,
        )
        _signal(task_started, result)
        return result

    def finished(result: Any, value: Any = None, error: BaseException | None = None) -> None:
        object.__setattr__(result, "finished_at", datetime.now(timezone.utc))
        if error is None:
            object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
            object.__setattr__(result, "_return_value", value)
        else:
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            kind = type(error)
            result.errors.append(
                TaskError(
                    exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                    traceback="".join(tb.format_exception(error)),
                )
            )
        _signal(task_finished, result)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            await sync_to_async(close_old_connections)()
            try:
                result = started(args, kwargs)
                try:
                    if task.takes_context:
                        value = await fn(TaskContext(task_result=result), *args, **kwargs)
                    else:
                        value = await fn(*args, **kwargs)
                except Exception as exc:
                    finished(result, error=exc)
                    raise
                finished(result, value)
                return value
            finally:
                await sync_to_async(close_old_connections)()

        run_async.__signature__ = signature  # type: ignore[attr-defined]
        return run_async

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            result = started(args, kwargs)
            try:
                if task.takes_context:
                    value = fn(TaskContext(task_result=result), *args, **kwargs)
                else:
                    value = fn(*args, **kwargs)
            except Exception as exc:
                finished(result, error=exc)
                raise
            finished(result, value)
            return value
        finally:
            close_old_connections()

    run.__signature__ = signature  # type: ignore[attr-defined]
    return run


def _signal(signal: Any, result: Any) -> None:
    """Send a task signal from the worker. A receiver that raises is logged, not allowed to
    turn a task that ran into a failed (and retried) one."""
    for receiver, response in signal.send_robust(ConveyorBackend, task_result=result):
        if isinstance(response, Exception):
            log.error(
                "%s receiver %r raised for task %s",
                "task_started" if signal is task_started else "task_finished",
                receiver,
                result.id,
                exc_info=response,
            )


def known_tasks() -> dict[str, Any]:
    """Django tasks validated in this process, by module path."""
    return dict(_known)


__all__ = ["ConveyorBackend", "Task", "known_tasks", "level_for", "runner"]
