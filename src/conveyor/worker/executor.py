"""Runs one job's function: a coroutine on the loop, a sync function in a thread pool.

A sync task never blocks the event loop, so fetching, acking and heartbeats keep going while
it runs. Timeouts stop waiting for a thread (Python cannot kill one); its late outcome is
discarded, since the job was already retried or dead-lettered.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Callable
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

    async def run(
        self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], job: JobContext
    ) -> Outcome:
        timeout = task.options.timeout
        try:
            if task.is_async:
                run = _run_async(task.fn, args, kwargs, job)
                return await (run if timeout is None else asyncio.wait_for(run, timeout))
            loop = asyncio.get_running_loop()
            call = functools.partial(_run_sync, task.fn, args, kwargs, job)
            future = loop.run_in_executor(self._pool, call)
            return await (future if timeout is None else asyncio.wait_for(future, timeout))
        except asyncio.TimeoutError:
            exc = TaskTimeout(f"task {task.name} ran longer than its timeout of {timeout} s")
            return Outcome(False, error=_describe(exc))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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
    token = _current.set(job)  # slots run job after job in one task: reset after the call
    try:
        return Outcome(True, await fn(*args, **kwargs))
    except Exception as exc:
        return _failure(exc)
    finally:
        _current.reset(token)
