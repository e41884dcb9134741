"""Runs one job's function: a coroutine on the loop, a sync function in a thread pool.

A sync task never blocks the event loop, so fetching, acking and heartbeats keep going while
it runs. Timeouts stop waiting for a thread (Python cannot kill one); its late outcome is
discarded, since the job was already retried or dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import traceback
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..context import JobContext, _current
from ..errors import TaskTimeout
from ..task import Task


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    value: Any = None
    error: str | None = None
    traceback: str | None = None


class Executor:
    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="conveyor-task")
        #: set by the worker before it cancels jobs still running at shutdown; until then a
        #: CancelledError out of a task is the task's own failure, not the worker's stop
        self.stopping = False

    async def run(
        self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], job: JobContext
    ) -> Outcome:
        timeout = task.options.timeout
        try:
            if task.is_async:
                run = _run_async(task.fn, args, kwargs, job)
                if timeout is None:
                    return await OwnContext(run)
                return await asyncio.wait_for(run, timeout)  # a task, with a context copy
            loop = asyncio.get_running_loop()
            call = functools.partial(_run_sync, task.fn, args, kwargs, job)
            future = loop.run_in_executor(self._pool, call)
            return await (future if timeout is None else asyncio.wait_for(future, timeout))
        except asyncio.TimeoutError:
            exc = TaskTimeout(f"task {task.name} ran longer than its timeout of {timeout} s")
            return Outcome(False, error=_describe(exc))
        except asyncio.CancelledError as exc:
            if self.stopping:
                raise
            return _failure(exc)  # e.g. it awaited something another task cancelled

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class OwnContext:
    """Awaits a coroutine with each of its steps run in a copy of the current context.

    Slots run job after job in one asyncio task; this gives every job the context a task of
    its own would have, so a ContextVar one job sets (a trace span, a tenant id) is not seen
    by the next. Cancellation and errors thrown into the waiting job reach it as in a task.
    """

    __slots__ = ("_context", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, Outcome]) -> None:
        self._coro = coro
        self._context = contextvars.copy_context()

    def __await__(self) -> Generator[Any, Any, Outcome]:
        coro, run = self._coro, self._context.run
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                waiting = run(coro.send, value) if error is None else run(coro.throw, error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                value, error = (yield waiting), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                value, error = None, exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _failure(exc: BaseException) -> Outcome:
    # Drop our own wrapper frame so the traceback starts in the user's code.
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return Outcome(False, error=_describe(exc), traceback=text)


def _run_sync(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], job: JobContext
) -> Outcome:
    token = _current.set(job)  # pool threads are reused: reset after the call
    try:
        return Outcome(True, fn(*args, **kwargs))
    except Exception as exc:  # a task's failure is data, not a crash of the worker
        return _failure(exc)
    finally:
        _current.reset(token)


async def _run_async(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], job: JobContext
) -> Outcome:
    _current.set(job)  # in the job's own context (OwnContext, or wait_for's task)
    try:
        return Outcome(True, await fn(*args, **kwargs))
    except Exception as exc:
        return _failure(exc)
